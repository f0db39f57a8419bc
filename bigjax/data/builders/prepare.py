"""Preparing the project's own builders: offline, to ArrayRecord, once per machine."""

import jax
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils


def prepare_builder(builder_cls: type[tfds.core.DatasetBuilder], data_dir: str | None, **kwargs):
  """Returns the builder, preparing it (offline, ArrayRecord) on first use.

  With several processes, process 0 prepares while the others wait, so they never race
  on the same folder; a host that does not share that folder then prepares its own copy.
  """
  builder = builder_cls(data_dir=data_dir, file_format='array_record', **kwargs)
  if jax.process_count() > 1:
    if jax.process_index() == 0 and not builder.is_prepared():
      builder.download_and_prepare()
    multihost_utils.sync_global_devices(f'prepare {builder.name}')
    builder = builder_cls(data_dir=data_dir, file_format='array_record', **kwargs)
  if not builder.is_prepared():
    builder.download_and_prepare()
  return builder


def open_prepared(builder_cls, split: str, data_dir: str | None, **kwargs):
  """A random-access source over `split` of one of the project's builders."""
  return prepare_builder(builder_cls, data_dir, **kwargs).as_data_source(split)
