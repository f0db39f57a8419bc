"""The Python standard library's sources (`bigjax.data.builders.pystdlib`, split by file):

  pystdlib         (task `lm`) one byte corpus cut into windows of `data.seq_len` bytes;
                   with `data.doc_boundaries` (default False) each window also carries
                   `segment_ids` [T], the file of each input byte (1 for the window's
                   first file, 2 for the next, ...), so attention stays within a file;
                   every byte is still a target exactly once (bits per byte compare)
  pystdlib_mlm     (task `mlm`) BERT pre-training: pairs of segments of `data.segment_lines`
                   consecutive non-blank lines, the second the next segment of the same file
                   (nsp_label 0) or, half the time, a segment of another file (nsp_label 1),
                   chosen from (data.nsp_seed, record index); dynamic masking
  pystdlib_syntax  (task `text_classification`, 2 classes) snippets labelled by `compile()`
                   (`bigjax.data.builders.pystdlib_syntax`): the fine-tuning task

Code reaches a WordPiece tokenizer as `code_as_text` (indentation and line breaks as
tokens: BERT's pre-tokenizer would drop them). The text data sets learn a WordPiece
vocabulary of `data.vocab_size` from their training split on first use (at most
`data.tokenizer_sample` files or snippets) and save it as `<workdir>/tokenizer.json`, or read
`data.tokenizer` (e.g. the pre-training run's workdir) (`bigjax.data.run_tokenizer`).

Data config fields (text sets): data.max_len (T, tokens per example), data.vocab_size,
data.tokenizer, data.tokenizer_sample, data.lowercase; pystdlib_mlm also data.segment_lines
(4), data.nsp (True; False: one sentence, the two segments of an IsNext pair, and no
nsp_label), data.nsp_seed (0), data.mask_prob (0.15),
data.max_predictions (0: dense [T] labels; P: P positions and labels, `MaskTokens`).
"""

import ml_collections
import numpy as np

from bigjax.data import run_tokenizer
from bigjax.data.builders.prepare import open_prepared
from bigjax.data.builders.pystdlib import Pystdlib
from bigjax.data.builders.pystdlib_syntax import PystdlibSyntax
from bigjax.data.sources import SegmentPairs, WindowSource, corpus_from_source, segment_lines
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import ByteTokenizer, train_wordpiece
from bigjax.data.transforms.text import (
  MASK_PROB,
  EncodeText,
  ShiftTokens,
  as_text,
  code_as_text,
  mlm_transforms,
)

SEGMENT_LINES = 4  # about 50 WordPiece tokens: a pair fits T = 128


def open_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  source = open_prepared(Pystdlib, split, data_dir)
  if data.get('doc_boundaries', False):  # windows also give each byte's file
    corpus, starts = corpus_from_source(source, with_starts=True)
    return WindowSource(corpus, data.seq_len, starts)
  return WindowSource(corpus_from_source(source), data.seq_len)


def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  del data, train
  return [ShiftTokens()]


def tokenizer(data: ml_collections.ConfigDict) -> ByteTokenizer:
  del data
  return ByteTokenizer()


PYSTDLIB = DatasetSpec('lm', open_split, transforms, tokenizer, eval_split='validation')


# BERT on the stdlib: pre-training (pystdlib_mlm) and fine-tuning (pystdlib_syntax).


def _max_len(data: ml_collections.ConfigDict, name: str) -> int:
  if not data.get('max_len', None):
    raise ValueError(f'the {name} dataset needs data.max_len (tokens per example)')
  return int(data.max_len)


def _ensure_tokenizer(data, name: str, train_source, field: str, default_sample: int) -> None:
  """The run's WordPiece, learned from `field` of sampled training records on first use."""

  def learn():
    index = run_tokenizer.sample_indices(len(train_source), data, default_sample)
    texts = (code_as_text(as_text(train_source[int(i)][field])) for i in index)
    return train_wordpiece(
      texts, int(data.get('vocab_size', 8000)), lowercase=run_tokenizer.lowercase(data)
    )

  run_tokenizer.ensure(data, name, learn)


def file_text(record) -> str:
  return np.asarray(record['bytes'], np.uint8).tobytes().decode('utf-8', errors='replace')


def open_mlm_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  files = open_prepared(Pystdlib, split, data_dir)
  train = files if split == 'train' else open_prepared(Pystdlib, 'train', data_dir)
  _ensure_tokenizer(data, 'pystdlib_mlm', _Files(train), 'text', 1000)
  lines = int(data.get('segment_lines', SEGMENT_LINES))
  segments, doc_ids = [], []
  for i in range(len(files)):
    parts = segment_lines(file_text(files[i]), lines)
    segments += parts
    doc_ids += [i] * len(parts)
  pairs = SegmentPairs(segments, doc_ids, int(data.get('nsp_seed', 0)))
  return pairs if data.get('nsp', True) else _Spans(pairs)


class _Files:
  """Pystdlib records as {'text': str} (the tokenizer learns from whole files)."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict:
    return {'text': file_text(self.source[int(i)])}


class _Spans:
  """For masked LM without next-sentence prediction: each pair's span of the document (a
  segment and its successor) as one text."""

  def __init__(self, pairs: SegmentPairs):
    self.pairs = pairs

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, i: int) -> dict:
    s = int(self.pairs.starts[int(i)])
    return {'text_a': '\n'.join(self.pairs.segments[s : s + 2])}

  def __repr__(self) -> str:
    return f'Spans({self.pairs!r})'


def mlm_transforms_of(data: ml_collections.ConfigDict, train: bool) -> list:
  return mlm_transforms(
    run_tokenizer.TokenizerFile.of(data, 'pystdlib_mlm'),
    _max_len(data, 'pystdlib_mlm'),
    train,
    pairs=bool(data.get('nsp', True)),
    as_code=True,
    mask_prob=float(data.get('mask_prob', MASK_PROB)),
    max_predictions=int(data.get('max_predictions', 0)),
  )


def mlm_tokenizer(data: ml_collections.ConfigDict):
  return run_tokenizer.load(data, 'pystdlib_mlm')


PYSTDLIB_MLM = DatasetSpec(
  'mlm', open_mlm_split, mlm_transforms_of, mlm_tokenizer, eval_split='validation'
)


def open_syntax_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  source = open_prepared(PystdlibSyntax, split, data_dir)
  train = source if split == 'train' else open_prepared(PystdlibSyntax, 'train', data_dir)
  _ensure_tokenizer(data, 'pystdlib_syntax', train, 'code', 20_000)
  return source


def syntax_transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  del train
  tok = run_tokenizer.TokenizerFile.of(data, 'pystdlib_syntax')
  max_len = _max_len(data, 'pystdlib_syntax')
  return [EncodeText(tok, max_len, ('code',), {'label': np.int32}, as_code=True)]


def syntax_tokenizer(data: ml_collections.ConfigDict):
  return run_tokenizer.load(data, 'pystdlib_syntax')


PYSTDLIB_SYNTAX = DatasetSpec(
  'text_classification',
  open_syntax_split,
  syntax_transforms,
  syntax_tokenizer,
  eval_split='validation',
)
