"""Registers every dataset bigjax knows: the project's own builders and public TFDS ones."""

import jax
from jax.experimental import multihost_utils

from bigjax.data import algorithmic, algorithmic_reversed, imagenet, images, text, wmt  # noqa: F401
from bigjax.data.builders.digits import Digits
from bigjax.data.builders.pystdlib import Pystdlib
from bigjax.data.datasets import DatasetSpec, open_public, register_dataset


def prepare_builder(builder_cls, data_dir: str | None, **kwargs):
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


def own_split(builder_cls):
  """open_split for one of the project's own builders."""

  def open_split(split, data_dir, data):
    del data
    return prepare_builder(builder_cls, data_dir).as_data_source(split)

  return open_split


def public_split(name: str):
  """open_split for a public TFDS dataset, which must already be prepared."""

  def open_split(split, data_dir, data):
    del data
    return open_public(name, split, data_dir)

  return open_split


def _pystdlib_split(split, data_dir, data):
  source = prepare_builder(Pystdlib, data_dir).as_data_source(split)
  return text.WindowSource(text.corpus_from_source(source), data.seq_len)


register_dataset(
  'digits', DatasetSpec('classification', own_split(Digits), images.image_transforms)
)
register_dataset(
  'pystdlib', DatasetSpec('lm', _pystdlib_split, text.lm_transforms, eval_split='validation')
)
for _name in ('mnist', 'cifar10', 'cifar100', 'fashion_mnist'):
  register_dataset(
    _name, DatasetSpec('classification', public_split(_name), images.image_transforms)
  )
