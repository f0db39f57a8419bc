"""Grain pipelines for the trainer: sharded by process, shuffled, batched, padded at eval.

Built on `grain.MapDataset` (random access, index-based shuffling), whose iterator state is
a single index: it is saved with each checkpoint, so a resumed run sees the same batches.

Each process yields host-local batches of global_batch / process_count examples;
`bigjax.train.sharding` assembles global arrays. Training: one shuffled stream of the whole
split, cut into local batches that the processes take in turn, so the global batches (and
the trained parameters) do not depend on the process count. Evaluation: process p reads the
records p, p + P, ..., padded (`mask == False`), so every eval example is scored exactly
once on any number of processes.

Read-ahead: a training iterator prepares up to `data.prefetch` batches (default 16) on
Grain's thread pool while the model trains.

Example index (`data.with_index`): each record is paired with its index in its split's
source before anything else (before `.seed()`, so shuffling and augmentation draw exactly
what they draw without it), every transform sees the record alone and the pair is kept
around it, and the final example gains `index` (int32; eval padding rows 0), always the
record's index in the whole split. The iterator state
is still one position in the shuffled stream: a resumed run sees the same indices.

Few labelled examples (`data.labelled_examples = N`, 0 = all): a fixed subset of N train
records, `default_rng(data.labelled_seed).permutation(len(train))[:N]`, independent of the
run's seed, marked by `labelled` (bool) in every train example; the tasks' hard-label
losses count only those. It uses the index internally; `index` itself appears in the
batch only with `data.with_index`. Eval batches carry no `labelled`.
"""

import functools
import math
import os
import threading
import time
from typing import Callable, Iterator

import grain
import jax
import ml_collections
import numpy as np

from bigjax.data.datasets import dataset_spec
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import Tokenizer
from bigjax.typing import Batch


def _apply(ds: grain.MapDataset, transforms, carried: bool = False) -> grain.MapDataset:
  """Applies per-record transforms; with `carried`, elements are (index, record) pairs and
  each transform sees the record alone, the index kept around it."""
  for t in transforms:
    if isinstance(t, grain.transforms.RandomMap):
      ds = ds.random_map(_CarryRandomMap(t) if carried else t)
    elif isinstance(t, grain.transforms.Filter):
      ds = ds.filter(_CarryFilter(t) if carried else t)
    else:
      ds = ds.map(_CarryMap(t) if carried else t)
  return ds


def _call_map(t, element):
  return t.map(element) if isinstance(t, grain.transforms.Map) else t(element)


class _CarryMap(grain.transforms.Map):
  """(index, record) -> (index, t(record)), for a `Map` or a plain callable."""

  def __init__(self, t):
    self.t = t

  def map(self, element):
    index, record = element
    return index, _call_map(self.t, record)


class _CarryRandomMap(grain.transforms.RandomMap):
  """(index, record) -> (index, t(record, rng)); Grain seeds it as it seeds `t`."""

  def __init__(self, t: grain.transforms.RandomMap):
    self.t = t

  def random_map(self, element, rng: np.random.Generator):
    index, record = element
    return index, self.t.random_map(record, rng)


class _CarryFilter(grain.transforms.Filter):
  def __init__(self, t: grain.transforms.Filter):
    self.t = t

  def filter(self, element) -> bool:
    return self.t.filter(element[1])


class _Expose(grain.transforms.Map):
  """(index, example dict) -> the example plus `index` (int32, if `with_index`) and
  `labelled` (bool, if a mask over the split's records is given)."""

  def __init__(self, with_index: bool, labelled: np.ndarray | None = None):
    self.with_index = with_index
    self.labelled = labelled

  def map(self, element):
    index, example = element
    extra = {}
    if self.with_index:
      extra['index'] = np.int32(index)
    if self.labelled is not None:
      extra['labelled'] = np.bool_(self.labelled[index])
    return {**example, **extra}


class _Pair:
  """(index, record) -> (index in the source, record). Grain passes a repeated dataset's
  running index down to the source, which wraps it: wrap it the same way."""

  def __init__(self, size: int):
    self.size = size

  def __call__(self, index: int, record):
    return index % self.size, record


def _records(source, carried: bool) -> grain.MapDataset:
  """The source as a MapDataset; with `carried`, of (index in the source, record) pairs."""
  ds = grain.MapDataset.source(source)
  return ds.map_with_index(_Pair(len(source))) if carried else ds


def _process_batches(batches: grain.MapDataset) -> grain.MapDataset:
  """This process's batches of an endless stream of host-local batches: with P processes,
  process p takes batches p, p + P, ... Together they form global batches whose rows are
  those of one process's stream cut into local batches, in process order (as
  `jax.make_array_from_process_local_data` lays them out), so a run sees the same global
  batches, and ends with the same parameters, on any number of processes."""
  count = jax.process_count()
  return batches[jax.process_index() :: count] if count > 1 else batches


def _absl_flags_parsed() -> None:
  """Marks absl's flags parsed (keeping their defaults) unless a program parsed them:
  Grain's multiprocess prefetch reads its own flags, and `train.py` uses argparse."""
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
  """In each Grain worker process: exits within a second of the process that started it
  dying. A SIGKILL (an out-of-memory kill, say) of train.py alone otherwise leaves its
  workers blocked on a full queue forever, holding their memory."""
  del worker_index, worker_count
  parent = os.getppid()

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(0)

  threading.Thread(target=watch, name='bigjax-exit-with-parent', daemon=True).start()


class Data:
  """The train and eval sources of one dataset, opened once."""

  def __init__(self, data: ml_collections.ConfigDict):
    self.config = data
    self.spec: DatasetSpec = dataset_spec(data.name)
    self.train_split = data.get('train_split') or self.spec.train_split
    self.eval_split = data.get('eval_split') or self.spec.eval_split
    data_dir = data.get('data_dir') or None
    self.train_source = self._open(self.train_split, 'train_split', data_dir)
    self.eval_source = self._open(self.eval_split, 'eval_split', data_dir)

  def _open(self, split: str, key: str, data_dir: str | None):
    """The split's source; a one-line error for an empty one (`train[:0]`, a slice past
    the end) instead of the reader's own."""
    empty = ValueError(
      f'the {split!r} split of {self.config.name} is empty: set --config.data.{key} to a '
      f'split with examples (default {getattr(self.spec, key)!r})'
    )
    try:
      source = self.spec.open_split(split, data_dir, self.config)
    except ValueError as e:
      if 'of 0 length' in str(e):  # ArrayRecord's reader, given no files
        raise empty from None
      raise
    if len(source) == 0:
      raise empty
    return source

  @property
  def task(self) -> str:
    return self.spec.task

  @functools.cached_property
  def tokenizer(self) -> Tokenizer | None:
    """The data set's tokenizer; None for data without one (images)."""
    return self.spec.tokenizer(self.config) if self.spec.tokenizer else None

  @property
  def class_names(self) -> list[str] | None:
    """The label classes' names (`DatasetSpec.class_names`); None when not known."""
    return list(self.spec.class_names(self.config)) if self.spec.class_names else None

  @property
  def with_index(self) -> bool:
    return bool(self.config.get('with_index', False))

  @functools.cached_property
  def labelled_mask(self) -> np.ndarray | None:
    """bool [N] over the train records: the fixed labelled subset; None = all labelled."""
    n = self.config.get('labelled_examples', 0) or 0
    if not n:
      return None
    size = len(self.train_source)
    if not 0 < n <= size:
      raise ValueError(
        f'data.labelled_examples={n}, but the {self.train_split!r} split has {size} examples'
      )
    chosen = np.random.default_rng(self.config.get('labelled_seed', 0)).permutation(size)[:n]
    mask = np.zeros(size, bool)
    mask[chosen] = True
    return mask

  def train_iter(
    self,
    global_batch: int,
    seed: int,
    *,
    attach: Callable[[Batch], Batch] | None = None,
  ) -> grain.DatasetIterator:
    """An endless, shuffled, checkpointable iterator of host-local batches.

    `attach(batch) -> batch` runs on every host batch after batching (a teacher store's
    lookup by `index`); it is a map on the batched dataset, so the iterator state, and
    with it resume, is unchanged.
    """
    local = global_batch // jax.process_count()
    if len(self.train_source) < local:
      raise ValueError(
        f'the {self.train_split!r} split has {len(self.train_source)} examples, fewer than '
        f'one batch per process ({local}): lower --config.train.batch_size'
      )
    labelled = self.labelled_mask
    carried = self.with_index or labelled is not None
    # Pairs are made before `.seed()`: Grain derives each random step's seed from its
    # depth below the seed, so shuffling and augmentation are the same with or without.
    # One shuffled stream of the whole split (indices are lazy: each process reads only the
    # records of its own batches), so the order does not depend on the process count.
    ds = _records(self.train_source, carried).seed(seed).shuffle().repeat(None)
    ds = _apply(ds, self.spec.transforms(self.config, True), carried)
    if carried:
      ds = ds.map(_Expose(self.with_index, labelled))
    ds = _process_batches(ds.batch(local, drop_remainder=True))
    if attach is not None:
      ds = ds.map(attach)
    # Grain's default read-ahead is 500 elements, here batches, on 16 threads: on a 2-core
    # machine that preparation competes with compilation and training for batches a short
    # run never uses (the coco_captions test config spent 16 s of its 38 s of CPU on them;
    # 1 s audio batches of 128 would hold 2 GB). data.prefetch batches ahead are plenty.
    read = grain.ReadOptions(prefetch_buffer_size=int(self.config.get('prefetch', 16)))
    it = ds.to_iter_dataset(read)
    workers = self.config.get('workers', 0)
    if workers:
      _absl_flags_parsed()  # Grain's worker processes read absl flags (their defaults here)
      it = it.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers), worker_init_fn=_exit_with_parent
      )
    return iter(it)

  def eval_batches(self, global_batch: int, max_batches: int = -1) -> Iterator[Batch]:
    """One pass over the eval split in host-local batches, each padded to full size.

    Process p reads records p, p + P, p + 2P, ... of all N (P processes), nothing dropped.
    Padded examples carry `mask == False`, and every process yields the same number of
    batches, ceil(ceil(N / P) / local), so collective evaluation steps stay in lock-step:
    a process with fewer records ends with padding (an all-padding batch if need be).
    With `data.with_index`, each batch carries `index` (0 on padding).
    """
    count, index = jax.process_count(), jax.process_index()
    local = global_batch // count
    carried = self.with_index
    transforms = self.spec.transforms(self.config, False)

    def prepare(records):
      ds = _apply(records, transforms, carried)
      return ds.map(_Expose(True)) if carried else ds

    records = _records(self.eval_source, carried)
    num_batches = math.ceil(math.ceil(len(records) / count) / local)
    if max_batches >= 0:
      num_batches = min(num_batches, max_batches)
    batches = iter(prepare(records[index::count]).batch(local, drop_remainder=False))
    for _ in range(num_batches):
      batch = next(batches, None)
      if batch is None:  # this process ran out first: a batch of padding only
        example = prepare(records[:1])[0]
        batch = jax.tree.map(lambda x: np.asarray(x)[None, ...][:0], example)
      yield pad_batch(batch, local)

  def ordered_train_batches(self, global_batch: int) -> Iterator[Batch]:
    """One pass over the whole train split in index order with the eval transforms (no
    augmentation), in batches of `global_batch` padded to full size (`mask`), each
    carrying `index`: what a teacher store is computed from. It ignores the process
    count (every process would read every record): with several processes, let process
    0 alone run it.
    """
    transforms = self.spec.transforms(self.config, False)
    ds = _apply(_records(self.train_source, True), transforms, True).map(_Expose(True))
    for batch in ds.batch(global_batch, drop_remainder=False):
      yield pad_batch(batch, global_batch)


def pad_batch(batch: Batch, size: int) -> Batch:
  """Pads every array's leading dimension to `size` and adds a boolean `mask`."""
  n = len(next(iter(jax.tree.leaves(batch))))
  padded = jax.tree.map(
    lambda x: np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)]), batch
  )
  padded['mask'] = np.arange(size) < n
  return padded
