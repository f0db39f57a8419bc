"""The CLIP configs run end to end through train.py with their `test` argument: ViT-B/32 on
COCO captions under `tfds.testing.mock_data` (images decoded without TensorFlow, a BPE
learned from the captions), and the offline spoken-words demonstration on the 'small'
spoken_words build (audio against written words, zero-shot over the 20 words)."""

import json
import math
import os
import sys

import pytest
import tensorflow_datasets as tfds

from bigjax.train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _final_eval(workdir, steps: int = 6) -> dict:
  records = _records(workdir)
  assert all(math.isfinite(r['loss']) for r in records if 'loss' in r)
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == steps
  return evals[-1]


@pytest.mark.slow
def test_clip_vit_b32_coco_captions_under_mock_data(tmp_path):
  config = os.path.join(ROOT, 'configs', 'clip_vit_b32_coco_captions.py')
  with tfds.testing.mock_data(num_examples=32):
    rc = cli.main(['--config', f'{config}:test', '--workdir', str(tmp_path)])
  assert rc == 0
  final = _final_eval(tmp_path)
  for name in ('i2t_accuracy', 't2i_accuracy', 'i2t_recall@1', 't2i_recall@10', 'logit_scale'):
    assert name in final
  assert 'zero_shot_accuracy' not in final  # captions only: no labels, no prompts
  assert 0 <= final['i2t_recall@1'] <= final['i2t_recall@5'] <= final['i2t_recall@10'] <= 1
  assert os.path.isfile(tmp_path / 'tokenizer.json')  # learned from the mock captions
  assert 'tensorflow' not in sys.modules


@pytest.mark.slow
def test_clip_spoken_words_demonstration(tmp_path, data_dir):
  pytest.importorskip('espeakng_loader', reason='spoken_words needs the audio extra')
  config = os.path.join(ROOT, 'configs', 'clip_spoken_words.py')
  args = ['--config', f'{config}:test', '--workdir', str(tmp_path)]
  assert cli.main([*args, f'--config.data.data_dir={data_dir}']) == 0
  final = _final_eval(tmp_path)
  assert 0 <= final['zero_shot_accuracy'] <= 1  # the 20 written words as prompts
  assert 0 <= final['i2t_recall@1'] <= final['i2t_recall@10'] <= 1
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['task']['match_key'] == 'label'
