"""Random-access record sources: prepared public TFDS splits, fixed windows over a byte
corpus, groups of short documents packed into rows, and sentence pairs for next-sentence
prediction (segments of documents, or chunks of articles read lazily).

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
    KeyError,  # a data_dir holding other data sets: tfds finds no splits of this one
    NotImplementedError,  # nothing prepared: tfds falls back to TFRecord, which has no source
    tfds.core.registered.DatasetNotFoundError,
  ) as e:
    where = (
      data_dir or os.environ.get('TFDS_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets')
    )
    raise not_prepared_error(name, where, manual, e) from None


def not_prepared_error(name: str, where: str, manual: str, e: Exception) -> FileNotFoundError:
  """The one-line error for a public data set that is not prepared in `where`."""
  first = (
    f'put {manual} in {where}/downloads/manual/, then ' if manual else 'on a machine with network '
  )
  return FileNotFoundError(
    f'dataset {name!r} is not prepared in {where}: {first}run '
    f'`tfds build {name} --data_dir={where} --file_format=array_record` (or copy a '
    f'prepared copy there), then pass --config.data.data_dir={where} ({type(e).__name__})'
  )


class WindowSource:
  """Random-access windows of T + 1 bytes over the concatenation of all documents.

  Window i covers bytes [i*T, i*T + T + 1): consecutive windows overlap by one byte so
  every byte is a target exactly once. With `doc_starts` (each document's first byte in the
  corpus, increasing, from 0) a window is {'tokens': [T + 1] bytes, 'doc_ids': [T + 1]
  int32}, each byte's document index in the corpus, so `ShiftTokens` can mark documents.
  """

  def __init__(self, corpus: np.ndarray, seq_len: int, doc_starts=None):
    if len(corpus) < seq_len + 1:
      raise ValueError(f'corpus of {len(corpus)} bytes is shorter than seq_len + 1')
    self.corpus = corpus
    self.seq_len = seq_len
    self.doc_starts = None if doc_starts is None else np.asarray(doc_starts, np.int64)

  def __len__(self) -> int:
    return (len(self.corpus) - 1) // self.seq_len

  def __getitem__(self, i: int):
    start = int(i) * self.seq_len
    window = self.corpus[start : start + self.seq_len + 1]
    if self.doc_starts is None:
      return window
    positions = np.arange(start, start + len(window))
    doc_ids = np.searchsorted(self.doc_starts, positions, side='right') - 1
    return {'tokens': window, 'doc_ids': doc_ids.astype(np.int32)}

  def __repr__(self) -> str:  # grain logs sources by repr
    docs = '' if self.doc_starts is None else f', documents={len(self.doc_starts)}'
    return f'WindowSource(bytes={len(self.corpus)}, seq_len={self.seq_len}{docs})'


def corpus_from_source(source, field: str = 'bytes', with_starts: bool = False):
  """Concatenates every document's bytes (uint8) of a TFDS data source; with `with_starts`,
  also returns each document's first byte in the corpus (int64 [N])."""
  docs = [np.asarray(source[i][field], np.uint8) for i in range(len(source))]
  corpus = np.concatenate(docs)
  if not with_starts:
    return corpus
  starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])[:-1]]).astype(np.int64)
  return corpus, starts


# Packed documents (causal LM over a corpus of short documents, lm1b): consecutive
# documents fill rows of T tokens. Row i holds documents [starts[i], starts[i + 1]), a group
# fixed by the documents' token counts alone, so rows are random access and the same on every
# run (`pack_rows`); the tokens themselves are produced per record (`PackDocuments`).


def pack_rows(costs, max_len: int) -> np.ndarray:
  """Greedy packing of consecutive items of `costs` (each <= max_len) into rows of at most
  `max_len`: int64 [R + 1], row i holding items [starts[i], starts[i + 1])."""
  costs = np.asarray(costs, np.int64)
  if len(costs) == 0:
    raise ValueError('there are no documents to pack')
  if costs.min() < 1 or costs.max() > max_len:
    raise ValueError(f'document costs must be in [1, {max_len}], got {costs.min()}..{costs.max()}')
  cumulative = np.concatenate([[0], np.cumsum(costs)])  # [N + 1]
  starts = [0]
  while starts[-1] < len(costs):
    s = starts[-1]
    # The last end e with cumulative[e] - cumulative[s] <= max_len (e > s: costs <= max_len).
    starts.append(int(np.searchsorted(cumulative, cumulative[s] + max_len, side='right')) - 1)
  return np.asarray(starts, np.int64)


class PackedRows:
  """Random-access groups of consecutive documents: record i is {'texts': the `field` of
  documents [starts[i], starts[i + 1])} (`pack_rows`)."""

  def __init__(self, source: Source, starts, field: str = 'text'):
    self.source, self.starts, self.field = source, np.asarray(starts, np.int64), field

  def __len__(self) -> int:
    return len(self.starts) - 1

  def __getitem__(self, i: int) -> dict:
    keys = range(int(self.starts[int(i)]), int(self.starts[int(i) + 1]))
    return {'texts': [self.source[k][self.field] for k in keys]}

  def __repr__(self) -> str:
    return f'PackedRows({self.source!r}, documents={self.starts[-1]}, rows={len(self)})'


# Sentence pairs for next-sentence prediction (BERT, section 3.1): B follows A in the
# same document (nsp_label 0) or comes from another document (nsp_label 1, Hugging Face's
# convention), half the time each. The choice is a function of (seed, record index).
IS_NEXT, IS_RANDOM = 0, 1


def _rng(seed: int, index: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), int(index)])


class SegmentPairs:
  """Pairs of consecutive text segments: record i is (segment s, segment s + 1) or (segment
  s, a segment of another document), where s runs over the segments that have a successor
  in their document. Records are {'text_a', 'text_b': str, 'nsp_label': int32}.

  segments: every document's segments in order; doc_ids: their document, non-decreasing.
  """

  def __init__(self, segments: list[str], doc_ids, seed: int = 0):
    doc_ids = np.asarray(doc_ids, np.int64)
    if len(segments) != len(doc_ids) or len(np.unique(doc_ids)) < 2:
      raise ValueError('sentence pairs need segments from at least two documents')
    self.segments, self.doc_ids, self.seed = segments, doc_ids, int(seed)
    self.starts = np.flatnonzero(doc_ids[:-1] == doc_ids[1:])

  def __len__(self) -> int:
    return len(self.starts)

  def __getitem__(self, i: int) -> dict:
    rng = _rng(self.seed, i)
    s = int(self.starts[int(i)])
    if rng.random() < 0.5:
      return self._pair(s, s + 1, IS_NEXT)
    while True:  # a uniformly chosen segment of another document
      j = int(rng.integers(len(self.segments)))
      if self.doc_ids[j] != self.doc_ids[s]:
        return self._pair(s, j, IS_RANDOM)

  def _pair(self, a: int, b: int, label: int) -> dict:
    return {'text_a': self.segments[a], 'text_b': self.segments[b], 'nsp_label': np.int32(label)}

  def __repr__(self) -> str:
    return f'SegmentPairs(segments={len(self.segments)}, pairs={len(self)}, seed={self.seed})'


def segment_lines(text: str, lines_per_segment: int) -> list[str]:
  """A document's non-blank lines, `lines_per_segment` at a time (newlines kept)."""
  lines = [line for line in text.splitlines() if line.strip()]
  n = lines_per_segment
  return ['\n'.join(lines[k : k + n]) for k in range(0, len(lines), n)]


def chunk_words(text: str, words_per_chunk: int) -> list[str]:
  """A document cut into consecutive chunks of `words_per_chunk` whitespace-separated words."""
  words = text.split()
  n = words_per_chunk
  return [' '.join(words[k : k + n]) for k in range(0, len(words), n)] or ['']


class ArticlePairs:
  """Sentence pairs from a source of articles, read lazily (one record per article).

  Record i cuts article i into chunks of `words_per_chunk` words and pairs a random chunk
  with the next one (nsp_label 0) or with a random chunk of another article (nsp_label 1),
  half the time each; a one-chunk article always gets a random partner.
  Records are {'text_a', 'text_b': str, 'nsp_label': int32}.
  """

  def __init__(self, source: Source, words_per_chunk: int, field: str = 'text', seed: int = 0):
    if len(source) < 2:
      raise ValueError('sentence pairs need at least two articles')
    self.source, self.words, self.field, self.seed = source, int(words_per_chunk), field, seed

  def __len__(self) -> int:
    return len(self.source)

  def chunks(self, i: int) -> list[str]:
    value = self.source[int(i)][self.field]
    text = value.decode('utf-8') if isinstance(value, bytes) else str(value)
    return chunk_words(text, self.words)

  def __getitem__(self, i: int) -> dict:
    rng = _rng(self.seed, i)
    chunks = self.chunks(i)
    if len(chunks) > 1 and rng.random() < 0.5:
      j = int(rng.integers(len(chunks) - 1))
      a, b, label = chunks[j], chunks[j + 1], IS_NEXT
    else:
      a = chunks[int(rng.integers(len(chunks)))]
      other = (int(i) + 1 + int(rng.integers(len(self) - 1))) % len(self)
      others = self.chunks(other)
      b, label = others[int(rng.integers(len(others)))], IS_RANDOM
    return {'text_a': a, 'text_b': b, 'nsp_label': np.int32(label)}

  def __repr__(self) -> str:
    return f'ArticlePairs({self.source!r}, words_per_chunk={self.words}, seed={self.seed})'
