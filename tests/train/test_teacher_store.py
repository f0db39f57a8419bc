"""The teacher store: a toy teacher's outputs over the digits train split, written
atomically, read back by example index in the training pipeline, exact on resume."""

import os

import cloudpickle
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bigjax.data.pipeline import Data
from bigjax.train import teacher_store

NUM_TRAIN, CLASSES = 1438, 10


def _data(data_dir, **kw):
  return Data(
    ml_collections.ConfigDict(
      {
        'name': 'digits',
        'data_dir': data_dir,
        'image_size': 0,
        'mean': (0.0,),
        'std': (1.0,),
        'with_index': True,
        'augment': 'crop_flip',  # training draws random crops; the store must not
        **kw,
      }
    )
  )


W = np.random.default_rng(0).normal(size=(64, CLASSES)).astype(np.float32)


@jax.jit
def _forward(batch):
  """A fixed linear teacher of the flattened image."""
  return batch['image'].reshape(batch['image'].shape[0], -1) @ W  # [B, C]


def _expected_logits(data) -> np.ndarray:
  """The teacher recomputed record by record, through the eval transforms: [N, C]."""
  transforms = data.spec.transforms(data.config, False)
  images = []
  for i in range(len(data.train_source)):
    element = data.train_source[i]
    for t in transforms:
      element = t.map(element)
    images.append(element['image'].reshape(-1))
  return np.stack(images).astype(np.float64) @ W


@pytest.fixture(scope='module')
def stores(data_dir, tmp_path_factory):
  """One full-logits and one top-3 store of the toy teacher, and the expected logits."""
  root = tmp_path_factory.mktemp('stores')
  data = _data(data_dir)
  full, topk = str(root / 'full'), str(root / 'top3')
  teacher_store.write_store(full, _forward, data, 256, meta={'teacher': 'linear'})
  teacher_store.write_store(topk, _forward, data, 256, top_k=3, temperature=2.0)
  return full, topk, _expected_logits(data)


def test_ordered_batches_cover_the_split_in_order(data_dir):
  data = _data(data_dir)
  batches = list(teacher_store.ordered_batches(data, 500))
  assert [b['image'].shape[0] for b in batches] == [500, 500, 500]
  index = np.concatenate([b['index'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(index[mask], np.arange(NUM_TRAIN))
  assert mask.sum() == NUM_TRAIN and not index[~mask].any()


def test_store_holds_the_teacher_of_every_record(stores):
  full, _, expected = stores
  store = teacher_store.open_store(full)
  assert store.meta == {
    'num_examples': NUM_TRAIN,
    'top_k': 0,
    'temperature': 1.0,
    'shape': [CLASSES],
    'dataset': 'digits',
    'split': 'train',
    'teacher': 'linear',
  }
  got = store.lookup(np.arange(NUM_TRAIN))['teacher_logits']
  assert got.dtype == np.float32 and got.shape == (NUM_TRAIN, CLASSES)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(IndexError, match='with_index'):
    store.lookup(np.array([NUM_TRAIN]))


def test_train_batches_with_attach_carry_their_records_teacher(data_dir, stores):
  full, _, expected = stores
  store = teacher_store.open_store(full)
  data = _data(data_dir)
  it = data.train_iter(8, seed=3, attach=lambda b: {**b, **store.lookup(b['index'])})
  for _ in range(4):
    batch = next(it)
    assert batch['teacher_logits'].shape == (8, CLASSES)
    np.testing.assert_allclose(
      batch['teacher_logits'], expected[batch['index']], rtol=1e-5, atol=1e-5
    )


def test_top_k_store_is_the_teachers_most_likely_classes(stores):
  _, topk, expected = stores
  store = teacher_store.open_store(topk)
  assert store.meta['top_k'] == 3 and store.meta['temperature'] == 2.0
  rows = np.array([5, 0, 1437, 700])
  got = store.lookup(rows)
  assert set(got) == {'teacher_topk_logprobs', 'teacher_topk_indices'}
  values, indices = jax.lax.top_k(jax.nn.log_softmax(jnp.asarray(expected[rows] / 2.0)), 3)
  np.testing.assert_array_equal(got['teacher_topk_indices'], indices)
  assert got['teacher_topk_indices'].dtype == np.int32
  assert got['teacher_topk_logprobs'].dtype == np.float32
  np.testing.assert_allclose(got['teacher_topk_logprobs'], values, rtol=1e-5, atol=1e-5)


def test_resume_with_attach_gives_the_same_batches(data_dir, stores):
  store = teacher_store.open_store(stores[1])
  data = _data(data_dir)
  attach = lambda b: {**b, **store.lookup(b['index'])}  # noqa: E731
  a = data.train_iter(8, seed=1, attach=attach)
  for _ in range(3):
    next(a)
  state = a.get_state()
  rest = [next(a) for _ in range(2)]
  b = data.train_iter(8, seed=1, attach=attach)
  b.set_state(state)
  for want in rest:
    got = next(b)
    assert set(got) == set(want) >= {'teacher_topk_logprobs', 'teacher_topk_indices', 'index'}
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_writes_are_atomic(data_dir, tmp_path):
  data = _data(data_dir)
  path = str(tmp_path / 'teacher')
  # A killed earlier run's leftovers: a half-written temporary sibling folder.
  stale = tmp_path / '.teacher.tmp-killed'
  stale.mkdir()
  np.save(stale / 'logits.npy', np.zeros((3, CLASSES), np.float32))
  with pytest.raises(FileNotFoundError, match='no teacher store'):
    teacher_store.open_store(path)

  calls = []

  def failing(batch):
    calls.append(1)
    if len(calls) == 3:
      raise RuntimeError('killed')
    return _forward(batch)

  with pytest.raises(RuntimeError, match='killed'):
    teacher_store.write_store(path, failing, data, 256)
  assert not os.path.exists(path)
  assert sorted(os.listdir(tmp_path)) == ['.teacher.tmp-killed']  # nothing else left behind

  teacher_store.write_store(path, _forward, data, 512)
  first = teacher_store.open_store(path).lookup(np.arange(4))['teacher_logits']
  # Rewriting replaces the store whole (here a top-k one over the full one).
  teacher_store.write_store(path, _forward, data, 512, top_k=2)
  store = teacher_store.open_store(path)
  assert set(os.listdir(path)) == {'meta.json', 'topk_logprobs.npy', 'topk_indices.npy'}
  np.testing.assert_array_equal(
    store.lookup(np.arange(4))['teacher_topk_indices'][:, 0], first.argmax(-1)
  )
  assert sorted(os.listdir(tmp_path)) == ['.teacher.tmp-killed', 'teacher']
  # Arrays without meta.json are not a store; meta.json without its arrays is incomplete.
  os.remove(os.path.join(path, 'meta.json'))
  with pytest.raises(FileNotFoundError, match='meta.json missing'):
    teacher_store.open_store(path)
  with pytest.raises(FileNotFoundError, match='no teacher store'):
    teacher_store.open_store(str(stale))
  (stale / 'meta.json').write_text('{"num_examples": 3, "top_k": 2}')
  with pytest.raises(FileNotFoundError, match='incomplete'):
    teacher_store.open_store(str(stale))


def test_a_store_travels_to_worker_processes_by_path(stores):
  """Grain sends the pipeline to its worker processes with cloudpickle (`data.workers`):
  the attach function takes the store as its path, not its N x C array."""
  store = teacher_store.open_store(stores[0])
  attach = lambda b: {**b, **store.lookup(b['index'])}  # noqa: E731
  blob = cloudpickle.dumps(attach)
  assert len(blob) < 4 * NUM_TRAIN * CLASSES // 10
  batch = {'index': np.array([3, 9])}
  np.testing.assert_array_equal(
    cloudpickle.loads(blob)(batch)['teacher_logits'], attach(batch)['teacher_logits']
  )
