"""The recurrent configs run end to end through the CLI with their `test` argument."""

import json
import math
import os

import pytest

from bigjax.train.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# config -> (model, the metric its eval must report)
CONFIGS = {
  'lstm_pystdlib': ('lstm_lm', 'bits_per_byte'),
  'gru_pystdlib': ('gru_lm', 'bits_per_byte'),
  'seq2seq_reverse': ('seq2seq_lstm', 'exact_match'),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_trains_and_evaluates(name, tmp_path, data_dir):
  workdir = tmp_path / 'run'
  config = os.path.join(ROOT, 'configs', f'{name}.py')
  code = main(
    ['--config', f'{config}:test', '--workdir', str(workdir), f'--config.data.data_dir={data_dir}']
  )
  assert code == 0
  with open(workdir / 'config.json') as f:
    assert json.load(f)['model']['name'] == CONFIGS[name][0]
  rows = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  evals = [r for r in rows if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == 6  # the test configs train 6 steps
  metric = CONFIGS[name][1]
  assert 0.0 <= evals[-1][metric] and math.isfinite(evals[-1][metric])
  assert all(math.isfinite(r['loss']) for r in rows)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '6']
