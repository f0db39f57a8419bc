"""Example indices in batches (`data.with_index`) and a fixed subset of labelled examples
(`data.labelled_examples`), with the classification objective that counts only those."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bigjax import losses
from bigjax.data.pipeline import Data
from bigjax.outputs import ModelOutput
from bigjax.train.tasks import get_task
from configs import common

NUM_TRAIN, NUM_TEST = 1438, 359  # the digits splits
EPOCH = NUM_TRAIN // 2  # a global batch of half the split: one epoch is two batches


def _config(data_dir, **kw):
  return ml_collections.ConfigDict(
    {
      'name': 'digits',
      'data_dir': data_dir,
      'image_size': 0,
      'mean': (0.0,),
      'std': (1.0,),
      **kw,
    }
  )


def _record_image(data, source, index):
  """The record at `index` through the eval transforms (digits: no augmentation)."""
  element = source[int(index)]
  for t in data.spec.transforms(data.config, False):
    element = t.map(element)
  return element['image']


def test_train_batches_carry_the_record_index(data_dir):
  data = Data(_config(data_dir, with_index=True))
  plain = Data(_config(data_dir))
  it, ref = data.train_iter(8, seed=1), plain.train_iter(8, seed=1)
  for _ in range(3):
    batch, other = next(it), next(ref)
    assert batch['index'].dtype == np.int32 and batch['index'].shape == (8,)
    assert 'index' not in other and 'labelled' not in batch
    # The index changes nothing else: same order, same examples as without it.
    np.testing.assert_array_equal(batch['image'], other['image'])
    np.testing.assert_array_equal(batch['label'], other['label'])
    for row, index in enumerate(batch['index']):
      np.testing.assert_array_equal(
        batch['image'][row], _record_image(data, data.train_source, index)
      )
      assert batch['label'][row] == data.train_source[int(index)]['label']


def test_index_survives_augmentation(data_dir):
  """A RandomMap between the pair and the example: the index still names the record."""
  data = Data(_config(data_dir, with_index=True, augment='crop_flip', crop_padding=0))
  plain = Data(_config(data_dir, augment='crop_flip', crop_padding=2))
  batch = next(data.train_iter(16, seed=0))
  labels = np.array([data.train_source[int(i)]['label'] for i in batch['index']])
  np.testing.assert_array_equal(batch['label'], labels)
  # crop_padding=0, flip on: each image is its record, mirrored or not.
  for row, index in enumerate(batch['index']):
    image = _record_image(data, data.train_source, index)
    assert np.array_equal(batch['image'][row], image) or np.array_equal(
      batch['image'][row], image[:, ::-1]
    )
  # With real augmentation the draws match the pipeline without the index.
  indexed = Data(_config(data_dir, with_index=True, augment='crop_flip', crop_padding=2))
  np.testing.assert_array_equal(
    next(indexed.train_iter(16, seed=5))['image'], next(plain.train_iter(16, seed=5))['image']
  )


def test_resume_continues_with_the_same_indices(data_dir):
  data = Data(_config(data_dir, with_index=True))
  a = data.train_iter(16, seed=2)
  for _ in range(3):
    next(a)
  state = a.get_state()
  rest = [next(a)['index'] for _ in range(3)]
  b = data.train_iter(16, seed=2)
  b.set_state(state)
  np.testing.assert_array_equal([next(b)['index'] for _ in range(3)], rest)


@pytest.mark.parametrize('count', [1, 3])
def test_train_batches_do_not_depend_on_the_process_count(data_dir, monkeypatch, count):
  """P processes take turns at the one stream of local batches: process p's batches, laid
  side by side in process order, are the global batches of a single process, and `index`
  is the global record index."""
  data = Data(_config(data_dir, with_index=True))
  single = data.train_iter(4 * count, seed=0)
  expected = [next(single) for _ in range(3)]
  monkeypatch.setattr(jax, 'process_count', lambda: count)
  local = []
  for process in range(count):
    monkeypatch.setattr(jax, 'process_index', lambda process=process: process)
    it = data.train_iter(4 * count, seed=0)
    local.append([next(it) for _ in range(3)])
  for step, batch in enumerate(expected):
    for key in ('index', 'image'):
      joined = np.concatenate([local[p][step][key] for p in range(count)])
      np.testing.assert_array_equal(joined, batch[key])
    for row in (0, len(batch['index']) - 1):  # the record is the one at that index
      image = _record_image(data, data.train_source, batch['index'][row])
      np.testing.assert_array_equal(batch['image'][row], image)


def test_eval_batches_carry_the_index(data_dir, monkeypatch):
  data = Data(_config(data_dir, with_index=True))
  # Two processes of 179 rows: process 1 (records 1, 3, ..., 357) ends on padding only.
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  first, padding = list(data.eval_batches(358))
  np.testing.assert_array_equal(first['index'], np.arange(1, NUM_TEST, 2))
  assert padding['index'].shape == (179,) and not padding['index'].any()
  assert not padding['mask'].any()
  monkeypatch.undo()
  batches = list(data.eval_batches(100))
  index = np.concatenate([b['index'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(index[mask], np.arange(NUM_TEST))
  assert not index[~mask].any() and index.dtype == np.int32
  assert all('labelled' not in b for b in batches)
  last = batches[-1]
  row = int(last['mask'].sum()) - 1
  np.testing.assert_array_equal(
    last['image'][row], _record_image(data, data.eval_source, last['index'][row])
  )
  assert 'index' not in next(Data(_config(data_dir)).eval_batches(100))


def test_a_fixed_subset_is_labelled_whatever_the_seed(data_dir):
  n = 50
  data = Data(_config(data_dir, labelled_examples=n, with_index=True))
  expected = set(np.random.default_rng(0).permutation(NUM_TRAIN)[:n].tolist())
  for seed in (0, 7):
    it = data.train_iter(EPOCH, seed=seed)
    epoch = [next(it) for _ in range(2)]
    index = np.concatenate([b['index'] for b in epoch])
    labelled = np.concatenate([b['labelled'] for b in epoch])
    assert labelled.dtype == bool and len(set(index.tolist())) == 2 * EPOCH
    assert set(index[labelled].tolist()) == expected  # exactly N distinct, the same set
  # Without with_index the subset is the same, and the batch has no `index`.
  hidden = Data(_config(data_dir, labelled_examples=n))
  batch, same = next(hidden.train_iter(32, seed=3)), next(data.train_iter(32, seed=3))
  assert 'index' not in batch
  np.testing.assert_array_equal(batch['labelled'], same['labelled'])
  np.testing.assert_array_equal(batch['image'], same['image'])
  # Another labelled_seed picks another subset; eval batches carry no `labelled`.
  other = Data(_config(data_dir, labelled_examples=n, labelled_seed=1))
  assert not np.array_equal(other.labelled_mask, data.labelled_mask)
  assert 'labelled' not in next(data.eval_batches(100))
  with pytest.raises(ValueError, match=f'has {NUM_TRAIN} examples'):
    next(Data(_config(data_dir, labelled_examples=NUM_TRAIN + 1)).train_iter(8, seed=0))


@pytest.mark.parametrize('task_name', ['classification', 'text_classification'])
def test_unlabelled_examples_have_no_label_loss(task_name):
  config = common.base_config()
  config.train.aux_loss_weight = 0.3
  config.train.label_smoothing = 0.1
  task = get_task(task_name, config)
  rng = np.random.default_rng(0)
  logits, aux = (jnp.asarray(rng.normal(size=(5, 4)), jnp.float32) for _ in range(2))
  outputs = ModelOutput(logits, aux_logits={'aux': aux}, aux_losses={'balance': jnp.float32(0.25)})
  batch = {
    'image': np.zeros((5, 2, 2, 1), np.float32),
    'input_ids': np.ones((5, 3), np.int32),
    'segment_ids': np.zeros((5, 3), np.int32),
    'label': np.array([0, 1, 2, 3, 1], np.int32),
    'mask': np.array([1, 1, 1, 1, 0], bool),
  }
  labelled = np.array([1, 0, 1, 0, 1], bool)
  full = np.asarray(task.loss(outputs, batch))
  few = np.asarray(task.loss(outputs, {**batch, 'labelled': labelled}))
  np.testing.assert_allclose(few[labelled], full[labelled], rtol=1e-6)
  np.testing.assert_allclose(few[~labelled], 0.25, rtol=1e-6)  # the model's aux loss only
  ce = np.asarray(losses.softmax_cross_entropy(logits, batch['label'], label_smoothing=0.1))
  aux_ce = np.asarray(losses.softmax_cross_entropy(aux, batch['label'], label_smoothing=0.1))
  np.testing.assert_allclose(full, ce + 0.3 * aux_ce + 0.25, rtol=1e-5)
  # The weights (the objective's denominator) still count unlabelled examples.
  w = task.weights({**batch, 'labelled': labelled})
  np.testing.assert_array_equal(w, batch['mask'].astype(np.float32))


def test_indices_stay_in_the_split_after_the_first_epoch(data_dir):
  """Grain hands a repeated dataset's running index to the source (which wraps it): the
  index in the batch is the record's, in every epoch, and each epoch covers every record."""
  data = Data(_config(data_dir, with_index=True, labelled_examples=5))
  it = data.train_iter(EPOCH, seed=3)
  for _ in range(3):  # one and a half epochs
    seen = np.concatenate([next(it)['index'] for _ in range(2)])
    assert seen.min() >= 0 and seen.max() < NUM_TRAIN
    assert len(set(seen.tolist())) == len(seen)
