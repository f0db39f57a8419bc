"""Byte-level language-model data: a corpus of documents cut into fixed windows.

Legend: T window length (`data.seq_len`).
"""

import grain
import ml_collections
import numpy as np


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


class ShiftTokens(grain.transforms.Map):
  """[T + 1] window -> {'inputs': [T], 'targets': [T]} int32."""

  def map(self, window):
    window = np.asarray(window, np.int32)
    return {'inputs': window[:-1], 'targets': window[1:]}


def lm_transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  del data, train
  return [ShiftTokens()]
