"""Random-access record sources: prepared public TFDS splits, and fixed windows over a
byte corpus.

Legend: T window length (`data.seq_len`).
"""

import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

Source = Any  # a grain RandomAccessDataSource: __len__ and __getitem__


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


class WindowSource:
  """Random-access windows of T + 1 bytes over the concatenation of all documents.

  Window i covers bytes [i*T, i*T + T + 1): consecutive windows overlap by one byte so
  every byte is a target exactly once.
  """

  def __init__(self, corpus: np.ndarray, seq_len: int):
    if len(corpus) < seq_len + 1:
      raise ValueError(f'corpus of {len(corpus)} bytes is shorter than seq_len + 1')
    self.corpus = corpus
    self.seq_len = seq_len

  def __len__(self) -> int:
    return (len(self.corpus) - 1) // self.seq_len

  def __getitem__(self, i: int) -> np.ndarray:
    start = int(i) * self.seq_len
    return self.corpus[start : start + self.seq_len + 1]

  def __repr__(self) -> str:  # grain logs sources by repr
    return f'WindowSource(bytes={len(self.corpus)}, seq_len={self.seq_len})'


def corpus_from_source(source, field: str = 'bytes') -> np.ndarray:
  """Concatenates every document's bytes (uint8) of a TFDS data source."""
  return np.concatenate([np.asarray(source[i][field], np.uint8) for i in range(len(source))])
