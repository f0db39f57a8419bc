"""The decoder-only LM configs train end to end through the command line (`test` argument):
the three nano pystdlib configs offline, gpt2_124m_lm1b under `tfds.testing.mock_data`; the
final evaluation reports finite bits per byte (or token), the perplexity and, for the
mixture of experts, each expert's load."""

import json
import math
import os

import pytest
import tensorflow_datasets as tfds

from bigjax.train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# config -> (the bits metric, model options the run must have had)
CONFIGS = {
  'gpt_nano_pystdlib': ('bits_per_byte', {'position': 'learned', 'tie_embeddings': True}),
  'llama_nano_pystdlib': ('bits_per_byte', {'position': 'rotary', 'num_kv_heads': 2}),
  'moe_nano_pystdlib': ('bits_per_byte', {'num_experts': 4, 'experts_per_token': 2}),
  'gpt2_124m_lm1b': ('bits_per_token', {'vocab_size': 300}),
}


def _train(name, workdir, data_dir):
  config = os.path.join(ROOT, 'configs', f'{name}.py')
  flags = ['--config', f'{config}:test', '--workdir', str(workdir)]
  assert cli.main([*flags, f'--config.data.data_dir={data_dir}']) == 0
  with open(workdir / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  with open(workdir / 'config.json') as f:
    return records, json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_gpt_config_trains_and_reports_lm_metrics(name, tmp_path, data_dir):
  bits, options = CONFIGS[name]
  workdir = tmp_path / 'run'
  if name.endswith('lm1b'):
    with tfds.testing.mock_data(num_examples=64):
      records, config = _train(name, workdir, data_dir)
    assert os.path.isfile(workdir / 'tokenizer.json')  # a BPE learned from the mock split
    assert any(n.startswith('lm1b_tokens-train-') for n in os.listdir(workdir))
  else:
    records, config = _train(name, workdir, data_dir)
    assert config['data']['doc_boundaries'] is True  # segment_ids reach the model
  assert config['model']['name'] == 'gpt2_small'
  assert options.items() <= config['model'].items()
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == 6  # the test configs train 6 steps
  assert all(math.isfinite(r['loss']) for r in records)
  final = evals[-1]
  for key in ('loss', 'accuracy', bits, 'perplexity'):
    assert key in final and math.isfinite(final[key]), (key, final)
  assert final['perplexity'] == pytest.approx(math.exp(final['loss']), rel=1e-4)
  assert final[bits] == pytest.approx(final['loss'] / math.log(2), rel=1e-4)
  train = [r for r in records if r['split'] == 'train']
  assert train and 'perplexity' not in train[-1]  # an eval metric
  if 'num_experts' in options:
    for record in (final, train[-1]):
      load = [record[f'expert_load/{i}'] for i in range(4)]
      assert all(0 <= x <= 1 for x in load) and sum(load) == pytest.approx(1, abs=1e-4)
      assert record['aux_losses/moe_balance'] > 0 and record['aux_losses/moe_z'] > 0
  else:
    assert not any(k.startswith(('expert_load', 'aux_losses/')) for k in final)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '6']
