"""The offline TFDS builders and the Grain pipeline."""

import ml_collections
import numpy as np
import pytest

from bigjax.data import text
from bigjax.data.builders.digits import Digits
from bigjax.data.builders.pystdlib import Pystdlib, is_validation, stdlib_files
from bigjax.data.catalog import prepare_builder
from bigjax.data.pipeline import Data, pad_batch


def _digits_config(data_dir):
  return ml_collections.ConfigDict(
    {
      'name': 'digits',
      'data_dir': data_dir,
      'train_split': '',
      'eval_split': '',
      'image_size': 0,
      'mean': (0.0,),
      'std': (1.0,),
    }
  )


def test_digits_builder(data_dir):
  from sklearn.datasets import load_digits

  builder = prepare_builder(Digits, data_dir)
  train, test = builder.as_data_source('train'), builder.as_data_source('test')
  assert (len(train), len(test)) == (1438, 359)
  raw = load_digits()
  ex = test[0]
  assert ex['image'].shape == (8, 8, 1) and ex['image'].dtype == np.uint8
  # Each stored image is a scikit-learn digit scaled from 0..16 to 0..255, with its label.
  match = np.where((np.round(raw.images * 255 / 16) == ex['image'][..., 0]).all((1, 2)))[0]
  assert len(match) >= 1 and ex['label'] in raw.target[match]
  keys = lambda src: {src[i]['image'].tobytes() + bytes([src[i]['label']]) for i in range(len(src))}
  assert len(keys(train) & keys(test)) <= 2  # the corpus has a couple of exact duplicates


def test_pystdlib_builder_split_is_by_file(data_dir):
  builder = prepare_builder(Pystdlib, data_dir)
  train, val = builder.as_data_source('train'), builder.as_data_source('validation')
  files = stdlib_files()
  assert len(train) + len(val) == len(files) and len(val) > 10
  paths = lambda src: {
    src[i]['path'].decode() if isinstance(src[i]['path'], bytes) else src[i]['path']
    for i in range(len(src))
  }
  assert all(is_validation(p) for p in paths(val))
  assert not any(is_validation(p) for p in paths(train))
  assert not any('/test/' in p or p.startswith('test/') for p in paths(train))
  total = sum(len(train[i]['bytes']) for i in range(len(train)))
  assert total > 5_000_000  # megabytes of real source text


def test_windows_cover_every_byte_once():
  corpus = np.arange(23, dtype=np.uint8)
  source = text.WindowSource(corpus, 5)
  assert len(source) == 4
  ex = text.ShiftTokens().map(source[1])
  np.testing.assert_array_equal(ex['inputs'], [5, 6, 7, 8, 9])
  np.testing.assert_array_equal(ex['targets'], [6, 7, 8, 9, 10])
  targets = np.concatenate([source[i][1:] for i in range(len(source))])
  np.testing.assert_array_equal(targets, np.arange(1, 21))
  with pytest.raises(ValueError, match='shorter'):
    text.WindowSource(corpus[:3], 5)


def test_train_iterator_is_deterministic_and_resumable(data_dir):
  data = Data(_digits_config(data_dir))
  a = data.train_iter(32, seed=3)
  first = [next(a)['label'] for _ in range(3)]
  state = a.get_state()
  rest = [next(a)['label'] for _ in range(3)]
  b = data.train_iter(32, seed=3)
  np.testing.assert_array_equal([next(b)['label'] for _ in range(3)], first)
  c = data.train_iter(32, seed=3)
  c.set_state(state)
  np.testing.assert_array_equal([next(c)['label'] for _ in range(3)], rest)
  d = data.train_iter(32, seed=4)
  assert not np.array_equal(next(d)['label'], first[0])


def test_eval_batches_cover_the_split_once(data_dir):
  data = Data(_digits_config(data_dir))
  batches = list(data.eval_batches(100))
  assert all(b['image'].shape == (100, 8, 8, 1) for b in batches)
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == 359 and not mask[359:].any()
  image = batches[0]['image'][0]
  assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0


def test_pad_batch():
  batch = pad_batch({'x': np.ones((3, 2))}, 5)
  assert batch['x'].shape == (5, 2) and batch['x'][3:].sum() == 0
  np.testing.assert_array_equal(batch['mask'], [1, 1, 1, 0, 0])
