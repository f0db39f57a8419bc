"""`pystdlib` (task `lm`): the Python standard library's sources as one byte corpus, cut into
windows of `data.seq_len` bytes (`bigjax.data.builders.pystdlib`)."""

import ml_collections

from bigjax.data.builders.prepare import open_prepared
from bigjax.data.builders.pystdlib import Pystdlib
from bigjax.data.sources import WindowSource, corpus_from_source
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import ByteTokenizer
from bigjax.data.transforms.text import ShiftTokens


def open_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  source = open_prepared(Pystdlib, split, data_dir)
  return WindowSource(corpus_from_source(source), data.seq_len)


def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  del data, train
  return [ShiftTokens()]


def tokenizer(data: ml_collections.ConfigDict) -> ByteTokenizer:
  del data
  return ByteTokenizer()


PYSTDLIB = DatasetSpec('lm', open_split, transforms, tokenizer, eval_split='validation')
