"""The distillation demos' `test` variants train end to end, distilled and from scratch,
each with a teacher that is a tiny run of its own config: a ResNet teaching an MLP from a
few labels, a GPT teaching a smaller GPT (here with attention maps across head counts), a
Llama-style student (attention maps across block designs) and an LSTM."""

import json
import os

import pytest

from bigjax.train.cli import load_config
from bigjax.train.loop import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(name, arg, data_dir, **overrides):
  config, _ = load_config(os.path.join(ROOT, 'configs', f'{name}.py:{arg}'))
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    section, field = key.split('.')
    config[section][field] = value
  return config


def _train_rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == 'train']


@pytest.fixture(scope='module')
def teachers(tmp_path_factory, data_dir):
  root = tmp_path_factory.mktemp('teachers')
  out = {}
  for name in ('resnet18_digits', 'gpt_nano_pystdlib'):
    out[name] = str(root / name)
    config = _config(name, 'test', data_dir, **{'train.steps': 2, 'train.checkpoint_every': 2})
    train_and_evaluate(config, out[name], tty=False)
  return out


@pytest.mark.parametrize(
  'demo, teacher, extra',
  [
    ('distill_resnet18_to_mlp_digits', 'resnet18_digits', {}),
    (
      'distill_gpt_to_nano_pystdlib',
      'gpt_nano_pystdlib',
      # A 1-layer, 2-head student learns the 2-layer, 4-head teacher's last attention maps.
      {'model.num_layers': 1, 'model.num_heads': 2, 'distill.attention_weight': 1.0},
    ),
    ('distill_gpt_to_llama_pystdlib', 'gpt_nano_pystdlib', {}),
    ('distill_gpt_to_lstm_pystdlib', 'gpt_nano_pystdlib', {}),
  ],
)
def test_distillation_demo_trains_both_arms(demo, teacher, extra, teachers, tmp_path, data_dir):
  distilled = str(tmp_path / 'distilled')
  config = _config(demo, 'test', data_dir, **{'distill.teacher': teachers[teacher], **extra})
  result = train_and_evaluate(config, distilled, tty=False)
  assert result  # a final evaluation
  rows = _train_rows(distilled)
  assert rows and all(r['distill'] > 0 for r in rows)
  if config.distill.attention_weight:
    assert all(r['attention'] > 0 for r in rows)

  scratch = str(tmp_path / 'scratch')
  config = _config(demo, 'scratch,test', data_dir)
  assert config.distill.teacher == ''
  assert train_and_evaluate(config, scratch, tty=False)
  assert all('distill' not in r for r in _train_rows(scratch))
