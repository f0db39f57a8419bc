"""Grain pipelines for the trainer: sharded by process, shuffled, batched, padded at eval.

Built on `grain.MapDataset` (random access, index-based shuffling), whose iterator state is
a single index: it is saved with each checkpoint, so a resumed run sees the same batches.

Each process reads its own shard of the records and yields host-local batches of
global_batch / process_count examples; `bigjax.train.sharding` assembles global arrays.
Training shards are trimmed to equal sizes (an epoch may skip up to process_count - 1
records); evaluation is padded instead (`mask == False`), so every eval example is scored
exactly once on any number of processes.
"""

import functools
import math
from typing import Iterator

import grain
import jax
import ml_collections
import numpy as np

from bigjax.data.datasets import dataset_spec
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import Tokenizer
from bigjax.typing import Batch


def _apply(ds: grain.MapDataset, transforms) -> grain.MapDataset:
  for t in transforms:
    if isinstance(t, grain.transforms.RandomMap):
      ds = ds.random_map(t)
    elif isinstance(t, grain.transforms.Filter):
      ds = ds.filter(t)
    else:
      ds = ds.map(t)
  return ds


def _train_shard(source) -> grain.MapDataset:
  """This process's training records: every process_count-th, equal counts everywhere."""
  ds = grain.MapDataset.source(source)
  count = jax.process_count()
  if count > 1:
    ds = ds[: len(ds) // count * count][jax.process_index() :: count]
  return ds


class Data:
  """The train and eval sources of one dataset, opened once."""

  def __init__(self, data: ml_collections.ConfigDict):
    self.config = data
    self.spec: DatasetSpec = dataset_spec(data.name)
    self.train_split = data.get('train_split') or self.spec.train_split
    self.eval_split = data.get('eval_split') or self.spec.eval_split
    data_dir = data.get('data_dir') or None
    self.train_source = self.spec.open_split(self.train_split, data_dir, data)
    self.eval_source = self.spec.open_split(self.eval_split, data_dir, data)

  @property
  def task(self) -> str:
    return self.spec.task

  @functools.cached_property
  def tokenizer(self) -> Tokenizer | None:
    """The data set's tokenizer; None for data without one (images)."""
    return self.spec.tokenizer(self.config) if self.spec.tokenizer else None

  def train_iter(self, global_batch: int, seed: int) -> grain.DatasetIterator:
    """An endless, shuffled, checkpointable iterator of host-local batches."""
    local = global_batch // jax.process_count()
    if len(self.train_source) < local:
      raise ValueError(
        f'the {self.train_split!r} split has {len(self.train_source)} examples, fewer than '
        f'one batch per process ({local}): lower --config.train.batch_size'
      )
    ds = _train_shard(self.train_source).seed(seed).shuffle().repeat(None)
    ds = _apply(ds, self.spec.transforms(self.config, True)).batch(local, drop_remainder=True)
    it = ds.to_iter_dataset()
    workers = self.config.get('workers', 0)
    if workers:
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(it)

  def eval_batches(self, global_batch: int, max_batches: int = -1) -> Iterator[Batch]:
    """One pass over the eval split in host-local batches, each padded to full size.

    Process p reads records p, p + P, p + 2P, ... of all N (P processes), nothing dropped.
    Padded examples carry `mask == False`, and every process yields the same number of
    batches, ceil(ceil(N / P) / local), so collective evaluation steps stay in lock-step:
    a process with fewer records ends with padding (an all-padding batch if need be).
    """
    count, index = jax.process_count(), jax.process_index()
    local = global_batch // count
    transforms = self.spec.transforms(self.config, False)
    records = grain.MapDataset.source(self.eval_source)
    num_batches = math.ceil(math.ceil(len(records) / count) / local)
    if max_batches >= 0:
      num_batches = min(num_batches, max_batches)
    batches = iter(_apply(records[index::count], transforms).batch(local, drop_remainder=False))
    for _ in range(num_batches):
      batch = next(batches, None)
      if batch is None:  # this process ran out first: a batch of padding only
        example = _apply(records[:1], transforms)[0]
        batch = jax.tree.map(lambda x: np.asarray(x)[None, ...][:0], example)
      yield pad_batch(batch, local)


def pad_batch(batch: Batch, size: int) -> Batch:
  """Pads every array's leading dimension to `size` and adds a boolean `mask`."""
  n = len(next(iter(jax.tree.leaves(batch))))
  padded = jax.tree.map(
    lambda x: np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)]), batch
  )
  padded['mask'] = np.arange(size) < n
  return padded
