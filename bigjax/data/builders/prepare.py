"""Preparing the project's own builders: offline, to ArrayRecord, once per machine.

The build prints one line of its own (what, where, how long) instead of TFDS's progress bars
and absl notes, which a user cannot act on.
"""

import contextlib
import logging
import os
import time

import jax
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils


@contextlib.contextmanager
def _quiet():
  """TFDS's chatter (progress bars, absl INFO / WARNING notes such as a new builder folder
  having no dataset_info.json yet) kept off the console."""
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(True)
    logger.setLevel(level)


def _build(builder) -> None:
  """Prepares `builder` with one line of ours before and after."""
  where = os.path.dirname(os.path.dirname(builder.data_dir))
  if jax.process_index() == 0:
    print(f'preparing the {builder.name!r} data set in {where} (first use)...', flush=True)
  start = time.perf_counter()
  builder.download_and_prepare()
  if jax.process_index() == 0:
    print(f'prepared {builder.name!r} in {time.perf_counter() - start:.1f}s', flush=True)


def prepare_builder(builder_cls: type[tfds.core.DatasetBuilder], data_dir: str | None, **kwargs):
  """Returns the builder, preparing it (offline, ArrayRecord) on first use.

  With several processes, process 0 prepares while the others wait, so they never race
  on the same folder; a host that does not share that folder then prepares its own copy.
  """
  with _quiet():
    builder = builder_cls(data_dir=data_dir, file_format='array_record', **kwargs)
    if jax.process_count() > 1:
      if jax.process_index() == 0 and not builder.is_prepared():
        _build(builder)
      multihost_utils.sync_global_devices(f'prepare {builder.name}')
      builder = builder_cls(data_dir=data_dir, file_format='array_record', **kwargs)
    if not builder.is_prepared():
      _build(builder)
  return builder


def open_prepared(builder_cls, split: str, data_dir: str | None, **kwargs):
  """A random-access source over `split` of one of the project's builders."""
  return prepare_builder(builder_cls, data_dir, **kwargs).as_data_source(split)
