"""GLUE and Wikipedia under tfds.testing.mock_data: keys, dtypes and shapes of the batches,
the learned tokenizer, NSP pairs of article chunks."""

import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigjax.data.datasets import dataset_spec
from bigjax.data.pipeline import Data
from bigjax.data.sets import glue
from bigjax.data.sources import IS_NEXT, ArticlePairs, chunk_words

T = 24


def _data(name, workdir, **kw):
  return ml_collections.ConfigDict(
    {
      'name': name,
      'data_dir': '',
      'max_len': T,
      'vocab_size': 200,
      'tokenizer_sample': 30,
      'workdir': str(workdir),
      'tokenizer': '',
      **kw,
    }
  )


@pytest.mark.parametrize('task', sorted(glue.TASKS))
def test_glue_batches(task, tmp_path):
  name = f'glue/{task}'
  spec = dataset_spec(name)
  regression = task == 'stsb'
  assert spec.task == ('regression' if regression else 'text_classification')
  assert spec.eval_split == ('validation_matched' if task == 'mnli' else 'validation')
  with tfds.testing.mock_data(num_examples=20):
    data = Data(_data(name, tmp_path))
    batch = next(data.train_iter(8, seed=0))
    evals = next(data.eval_batches(16))
  assert os.path.exists(tmp_path / 'tokenizer.json')  # learned from the training split
  assert set(batch) == {'input_ids', 'segment_ids', 'label'}
  for key in ('input_ids', 'segment_ids'):
    assert batch[key].shape == (8, T) and batch[key].dtype == np.int32
  assert batch['label'].shape == (8,)
  assert batch['label'].dtype == (np.float32 if regression else np.int32)
  cls, sep = data.tokenizer.bos_id, data.tokenizer.eos_id
  assert (batch['input_ids'][:, 0] == cls).all()
  seps = (batch['input_ids'] == sep).sum(1)
  pair = len(glue.TASKS[task].text_keys) == 2
  assert (seps == (2 if pair else 1)).all()
  assert (batch['segment_ids'] == 1).any() == pair
  assert evals['input_ids'].shape == (16, T) and evals['mask'].sum() == 16


def test_wikipedia_mlm_batches_and_pairs(tmp_path):
  spec = dataset_spec('wikipedia')
  assert spec.task == 'mlm' and spec.train_split == 'train[:99%]'
  data_config = _data('wikipedia', tmp_path, chunk_words=3)
  with tfds.testing.mock_data(num_examples=40):
    data = Data(data_config)
    batch = next(data.train_iter(8, seed=0))
    evals = next(data.eval_batches(8))
    pairs = data.train_source
    assert isinstance(pairs, ArticlePairs)
    records = [pairs[i] for i in range(len(pairs))]
    chunks = [pairs.chunks(i) for i in range(len(pairs))]
  assert set(batch) == {'input_ids', 'segment_ids', 'nsp_label', 'mlm_labels'}
  for key in ('input_ids', 'segment_ids', 'mlm_labels'):
    assert batch[key].shape == (8, T) and batch[key].dtype == np.int32, key
  assert batch['nsp_label'].shape == (8,) and batch['nsp_label'].dtype == np.int32
  assert ((batch['mlm_labels'] != -1).sum(1) >= 1).all()
  assert set(evals) == set(batch) | {'mask'}
  for i, r in enumerate(records):
    if r['nsp_label'] == IS_NEXT:  # B is the chunk after A in the same article
      j = chunks[i].index(r['text_a'])
      assert chunks[i][j + 1] == r['text_b']
  assert {int(r['nsp_label']) for r in records} == {0, 1}


def test_chunk_words():
  assert chunk_words('a b  c\nd e', 2) == ['a b', 'c d', 'e']
  assert chunk_words('', 3) == ['']
