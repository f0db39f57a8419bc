"""A teacher's outputs over the train split, computed once and read by example index.

A teacher too large to run at every distillation step is run once over the train split
(`write_store`), in index order and with the eval transforms (no augmentation), and its
outputs are kept on disk as numpy `.npy` files; the student's pipeline reads each batch's
rows by `index` (`data.with_index`) from memory-mapped arrays (`open_store`, attached with
`Data.train_iter(..., attach=...)`), so the iterator state and resume are unchanged.

A store is a folder:
  meta.json           {'num_examples': N, 'top_k', 'temperature', 'shape': the logits'
                      per-example shape, 'dataset', 'split', ...caller's meta}; written last.
  logits.npy          float32 [N, ...]: the full logits (top_k == 0), or
  topk_logprobs.npy   float32 [N, ..., k]: log_softmax(logits / temperature) of the
  topk_indices.npy    int32 [N, ..., k]:   teacher's k most likely classes, best first.
It is written into a temporary sibling folder and renamed into place, so a killed run
leaves at most a stray `.<name>.tmp-*` folder, never a half store that looks complete.
Arrays are plain .npy, loaded with allow_pickle=False.

With several processes, process 0 alone should write the store (it reads every record);
every process then opens it.
"""

import functools
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from bigjax.outputs import as_output
from bigjax.typing import Batch

META = 'meta.json'
_RESERVED = ('num_examples', 'top_k', 'temperature', 'shape', 'dataset', 'split')


def _arrays(top_k: int) -> tuple[str, ...]:
  return ('topk_logprobs', 'topk_indices') if top_k else ('logits',)


def ordered_batches(data, global_batch: int) -> Iterator[Batch]:
  """The train split once, in index order, eval transforms, padded batches with `index`
  and `mask` (`Data.ordered_train_batches`)."""
  return data.ordered_train_batches(global_batch)


@functools.partial(jax.jit, static_argnums=1)
def _top_k(logits: jax.Array, k: int, temperature: jax.Array):
  """The k largest log-probabilities at `temperature` over the last axis, and their classes."""
  logprobs = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  values, indices = jax.lax.top_k(logprobs, k)
  return values, indices.astype(jnp.int32)


def write_store(
  path: str,
  forward: Callable[[Batch], Any],
  data,
  batch_size: int,
  *,
  top_k: int = 0,
  temperature: float = 1.0,
  meta: dict | None = None,
) -> None:
  """Runs `forward(batch) -> logits` [B, ...] over the train split of `data` (a
  `bigjax.data.pipeline.Data`) and writes a store at `path`, replacing any there.

  top_k == 0 keeps the full logits; top_k > 0 keeps the k most likely classes and their
  log-probabilities at `temperature`. `meta` (JSON-serialisable) joins meta.json.
  """
  if top_k < 0:
    raise ValueError(f'top_k={top_k}: use 0 (full logits) or a positive number of classes')
  if temperature <= 0:
    raise ValueError(f'temperature={temperature} must be positive')
  meta = dict(meta or {})
  clash = sorted(set(meta) & set(_RESERVED))
  if clash:
    raise ValueError(f'meta keys {clash} belong to the store itself: rename them')
  path = os.path.abspath(path)
  parent, name = os.path.split(path)
  os.makedirs(parent, exist_ok=True)
  num_examples = len(data.train_source)
  tmp = tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=parent)
  try:
    arrays, shape = None, None
    for batch in ordered_batches(data, batch_size):
      logits = as_output(forward(batch)).logits
      if logits.shape[0] != batch_size:
        raise ValueError(f'forward returned {logits.shape[0]} rows for a batch of {batch_size}')
      if top_k:
        values, indices = _top_k(logits, top_k, jnp.float32(temperature))
        out = {'topk_logprobs': values, 'topk_indices': indices}
      else:
        out = {'logits': logits}
      out = {k: np.asarray(jax.device_get(v)) for k, v in out.items()}
      if arrays is None:
        shape = list(logits.shape[1:])
        arrays = {
          k: np.lib.format.open_memmap(
            os.path.join(tmp, f'{k}.npy'),
            mode='w+',
            dtype=np.int32 if k == 'topk_indices' else np.float32,
            shape=(num_examples, *v.shape[1:]),
          )
          for k, v in out.items()
        }
      mask = np.asarray(batch['mask'])
      rows = np.asarray(batch['index'])[mask]
      for k, v in out.items():
        arrays[k][rows] = v[mask]
    if arrays is None:
      raise ValueError(f'the {data.train_split!r} split is empty: nothing to store')
    for array in arrays.values():
      array.flush()
    del arrays
    info = {
      'num_examples': num_examples,
      'top_k': top_k,
      'temperature': float(temperature),
      'shape': shape,
      'dataset': data.config.name,
      'split': data.train_split,
      **meta,
    }
    with open(os.path.join(tmp, META), 'w') as f:  # last: its presence marks a whole store
      json.dump(info, f, indent=2)
    _install(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _install(tmp: str, path: str) -> None:
  """Renames the finished folder `tmp` to `path`; an older store there is moved aside
  first and deleted after (a reader in between finds no store, never a mixed one)."""
  if not os.path.exists(path):
    os.replace(tmp, path)
    return
  if not os.path.isdir(path):
    raise FileExistsError(f'{path} exists and is not a folder: remove it or pick another path')
  old = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.old-', dir=os.path.dirname(path))
  os.replace(path, os.path.join(old, 'store'))
  os.replace(tmp, path)
  shutil.rmtree(old, ignore_errors=True)


class Store:
  """A written teacher store, its arrays memory-mapped: `meta` and `lookup(index)`."""

  def __init__(self, path: str, meta: dict, arrays: dict[str, np.ndarray]):
    self.path = path
    self.meta = meta
    self.arrays = arrays

  def __len__(self) -> int:
    return self.meta['num_examples']

  def lookup(self, index) -> dict[str, np.ndarray]:
    """{'teacher_logits': [B, ...]} or {'teacher_topk_logprobs', 'teacher_topk_indices':
    [B, ..., k]}: the rows of the records `index` [B] (their indices in the train split)."""
    index = np.asarray(index)
    if index.size and (index.min() < 0 or index.max() >= len(self)):
      raise IndexError(
        f'example index out of range [0, {len(self)}): is data.with_index on, and was the '
        f'store written from the same train split ({self.meta.get("split")!r})?'
      )
    return {f'teacher_{k}': np.asarray(v[index]) for k, v in self.arrays.items()}

  def __reduce__(self):
    # Grain's worker processes receive the pipeline pickled (cloudpickle): send the path and
    # reopen there, rather than copying the memory-mapped arrays.
    return open_store, (self.path,)

  def __repr__(self) -> str:
    return f'Store({self.path!r}, {self.meta})'


def open_store(path: str) -> Store:
  """The store at `path`; FileNotFoundError if there is none or it is incomplete."""
  path = os.path.abspath(path)
  meta_path = os.path.join(path, META)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f'no teacher store at {path} ({META} missing): write it first')
  with open(meta_path) as f:
    meta = json.load(f)
  arrays = {}
  for name in _arrays(meta.get('top_k', 0)):
    file = os.path.join(path, f'{name}.npy')
    if not os.path.isfile(file):
      raise FileNotFoundError(f'teacher store {path} is incomplete ({name}.npy missing)')
    arrays[name] = np.load(file, mmap_mode='r', allow_pickle=False)
    if arrays[name].shape[0] != meta['num_examples']:
      raise FileNotFoundError(
        f'teacher store {path} is incomplete ({name}.npy has {arrays[name].shape[0]} rows, '
        f'meta.json says {meta["num_examples"]})'
      )
  return Store(path, meta, arrays)
