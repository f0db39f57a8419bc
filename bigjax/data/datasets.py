"""Dataset registry: name -> how to open a split and how to turn records into examples.

A dataset is a random-access source of records (a TFDS `as_data_source` split, or an
in-memory source) plus per-record Grain transforms that produce the task's example dict.
The pipeline (`bigjax.data.pipeline`) adds sharding, shuffling, batching and padding.
"""

import dataclasses
import difflib
import os
from typing import Any, Callable

import grain
import ml_collections
import tensorflow_datasets as tfds

Source = Any  # a grain RandomAccessDataSource: __len__ and __getitem__


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How the trainer reads one dataset.

  task: 'classification' | 'lm' | 'seq2seq' (see `bigjax.train.tasks`).
  open_split(split, data_dir, data_config) -> Source.
  transforms(data_config, train) -> per-record grain transforms, applied before batching;
    they must return the task's example dict of numpy arrays.
  train_split, eval_split: default split names.
  """

  task: str
  open_split: Callable[[str, str | None, ml_collections.ConfigDict], Source]
  transforms: Callable[[ml_collections.ConfigDict, bool], list[grain.transforms.Transformation]]
  train_split: str = 'train'
  eval_split: str = 'test'


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, spec: DatasetSpec) -> None:
  if name in _DATASETS:
    raise ValueError(f'dataset {name!r} is registered twice')
  _DATASETS[name] = spec


def _ensure_loaded() -> None:
  import bigjax.data.catalog  # noqa: F401  (registers every dataset)


def list_datasets() -> list[str]:
  _ensure_loaded()
  return sorted(_DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
  _ensure_loaded()
  if name not in _DATASETS:
    close = difflib.get_close_matches(name, _DATASETS, n=3, cutoff=0.5)
    hint = f'did you mean {", ".join(close)}? ' if close else ''
    raise ValueError(
      f'unknown dataset {name!r}: {hint}known datasets: {", ".join(sorted(_DATASETS))}'
    )
  return _DATASETS[name]


def open_public(name: str, split: str, data_dir: str | None, manual: str = '') -> Source:
  """A random-access source over a prepared public TFDS split; a clear error otherwise.

  `manual` names files the user must fetch by hand first (ImageNet), if any.
  """
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except (
    AssertionError,  # tfds asserts on a missing dataset_info.json
    FileNotFoundError,
    NotImplementedError,  # nothing prepared: tfds falls back to TFRecord, which has no source
    tfds.core.registered.DatasetNotFoundError,
  ) as e:
    where = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
    first = (
      f'put {manual} in {where}/downloads/manual/, then '
      if manual
      else ('on a machine with network ')
    )
    raise FileNotFoundError(
      f'dataset {name!r} is not prepared in {where}: {first}run '
      f'`tfds build {name} --data_dir={where} --file_format=array_record` (or copy a '
      f'prepared copy there), then pass --config.data.data_dir={where} ({type(e).__name__})'
    ) from None
