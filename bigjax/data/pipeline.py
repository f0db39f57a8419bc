"""Grain pipelines for the trainer: sharded by process, shuffled, batched, padded at eval.

Built on `grain.MapDataset` (random access, index-based shuffling), whose iterator state is
a single index: it is saved with each checkpoint, so a resumed run sees the same batches.

Each process reads its own shard of the records and yields host-local batches of
global_batch / process_count examples; `bigjax.train.sharding` assembles global arrays.
"""

from typing import Iterator

import grain
import jax
import ml_collections
import numpy as np

from bigjax.data.datasets import DatasetSpec, dataset_spec
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


def _process_shard(source) -> grain.MapDataset:
  """This process's records: every process_count-th, equal counts on every process."""
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

  def train_iter(self, global_batch: int, seed: int) -> grain.DatasetIterator:
    """An endless, shuffled, checkpointable iterator of host-local batches."""
    local = global_batch // jax.process_count()
    if len(self.train_source) < local:
      raise ValueError(
        f'the {self.train_split!r} split has {len(self.train_source)} examples, fewer than '
        f'one batch per process ({local}): lower --config.train.batch_size'
      )
    ds = _process_shard(self.train_source).seed(seed).shuffle().repeat(None)
    ds = _apply(ds, self.spec.transforms(self.config, True)).batch(local, drop_remainder=True)
    it = ds.to_iter_dataset()
    workers = self.config.get('workers', 0)
    if workers:
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(it)

  def eval_batches(self, global_batch: int, max_batches: int = -1) -> Iterator[Batch]:
    """One pass over the eval split in host-local batches, each padded to full size.

    Padded examples carry `mask == False`; every process yields the same number of
    batches so collective evaluation steps stay in lock-step.
    """
    local = global_batch // jax.process_count()
    ds = _apply(_process_shard(self.eval_source), self.spec.transforms(self.config, False))
    loader = ds.batch(local, drop_remainder=False)
    for i, batch in enumerate(loader):
      if 0 <= max_batches <= i:
        break
      yield pad_batch(batch, local)


def pad_batch(batch: Batch, size: int) -> Batch:
  """Pads every array's leading dimension to `size` and adds a boolean `mask`."""
  n = len(next(iter(jax.tree.leaves(batch))))
  padded = jax.tree.map(
    lambda x: np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)]), batch
  )
  padded['mask'] = np.arange(size) < n
  return padded
