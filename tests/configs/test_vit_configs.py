"""The ViT configs run end to end (their `test` argument) on mocked TFDS data."""

import json
import math
import os

import pytest
import tensorflow_datasets as tfds

from bigjax.train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['vit_s16_cifar10', 'vit_b16_imagenet2012'])
def test_config_trains_and_evaluates(name, tmp_path):
  config = os.path.join(ROOT, 'configs', f'{name}.py')
  with tfds.testing.mock_data(num_examples=64):
    rc = cli.main(['--config', f'{config}:test', '--workdir', str(tmp_path)])
  assert rc == 0
  with open(tmp_path / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == 6  # the test config trains 6 steps
  assert all(math.isfinite(r['loss']) for r in records)
  assert os.listdir(tmp_path / 'checkpoints')
