"""The speech classifier configs run end to end with their `test` argument: on the offline
spoken words (the session's `speech_run`) and on Speech Commands under `mock_data`."""

import ast
import json
import math
import os

import pytest
import tensorflow_datasets as tfds

from bigjax.train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = [
  'speech_cnn_spoken_words',
  'speech_transformer_spoken_words',
  'speech_cnn_speech_commands',
]


def _load(name, arg=None):
  path = os.path.join(ROOT, 'configs', f'{name}.py') + (f':{arg}' if arg else '')
  return cli.load_config(path)[0]


def _check_run(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == 6  # the test configs train 6 steps
  assert all(math.isfinite(r['loss']) for r in records)
  assert 0.0 <= evals[-1]['accuracy'] <= 1.0
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']


@pytest.mark.slow
def test_speech_cnn_spoken_words(speech_run):
  _check_run(speech_run)
  with open(os.path.join(speech_run, 'config.json')) as f:
    config = json.load(f)
  assert config['data']['input_key'] == 'audio' and config['model']['name'] == 'speech_cnn_test'


@pytest.mark.slow
def test_speech_transformer_spoken_words(tmp_path, data_dir):
  pytest.importorskip('espeakng_loader')
  config = os.path.join(ROOT, 'configs', 'speech_transformer_spoken_words.py')
  argv = ['--config', f'{config}:test', '--workdir', str(tmp_path)]
  assert cli.main(argv + [f'--config.data.data_dir={data_dir}']) == 0
  _check_run(tmp_path)


@pytest.mark.slow
def test_speech_cnn_speech_commands_under_mock_data(tmp_path):
  config = os.path.join(ROOT, 'configs', 'speech_cnn_speech_commands.py')
  with tfds.testing.mock_data(num_examples=64):
    assert cli.main(['--config', f'{config}:test', '--workdir', str(tmp_path)]) == 0
  _check_run(tmp_path)


@pytest.mark.parametrize('name', CONFIGS)
def test_configs_are_complete(name):
  full, small = _load(name), _load(name, 'test')
  for c in (full, small):
    for section in ('seed', 'model', 'data', 'optim', 'schedule', 'train', 'mesh'):
      assert section in c
    assert c.data.input_key == 'audio' and c.model.name.startswith('speech_')
  assert small.train.steps < full.train.steps and small.model.name.endswith('_test')
  with open(os.path.join(ROOT, 'configs', f'{name}.py')) as f:
    doc = ast.get_docstring(ast.parse(f.read()))
  assert 'Command: python train.py --config configs/' in doc and 'Expected' in doc
  with pytest.raises(ValueError, match='test'):
    _load(name, 'tset')
