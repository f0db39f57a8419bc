"""WMT'14 English-German (`wmt14_translate/de-en`, public TFDS) for the `seq2seq` task.

Legend: S = T = data.max_len tokens per side.

Sentences are cut into subwords by one byte-level BPE vocabulary shared by both
languages (Sennrich et al., 2016; the Transformer paper used a shared BPE of about 37000
tokens), trained with the Hugging Face `tokenizers` library on a bounded, evenly spaced
sample of the training pairs the first time a run opens the data, and saved as
`tokenizer.json` in the run's workdir; later runs (and `bigjax.generate`) reuse that file.

Data config fields:
  data.source_lang, data.target_lang   'en' and 'de' (either direction)
  data.max_len                         src / tgt_in / tgt_out are truncated or padded to it
  data.vocab_size                      BPE vocabulary size, the special tokens included
  data.tokenizer_sample                training pairs read to learn the BPE merges
  data.workdir                         set by the trainer: where tokenizer.json lives
  optional data.tokenizer              an explicit tokenizer.json path (overrides workdir)
Ids: 0 <pad>, 1 <s> (BOS), 2 </s> (EOS); the rest are subwords.
"""

import os
import tempfile

import grain
import ml_collections
import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from bigjax.data.datasets import DatasetSpec, open_public, register_dataset

NAME = 'wmt14_translate/de-en'
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL_TOKENS = ['<pad>', '<s>', '</s>']
TOKENIZER_FILE = 'tokenizer.json'
LANGS = ('de', 'en')


def tokenizer_path(data: ml_collections.ConfigDict) -> str:
  """Where this run's tokenizer lives: data.tokenizer, else <data.workdir>/tokenizer.json."""
  explicit = data.get('tokenizer', None)
  if explicit:
    return os.fspath(explicit)
  workdir = data.get('workdir', None)
  if not workdir:
    raise ValueError(
      'the wmt14 data needs a place for its tokenizer: set data.workdir (the trainer does) '
      'or data.tokenizer to a tokenizer.json path'
    )
  return os.path.join(os.fspath(workdir), TOKENIZER_FILE)


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def train_tokenizer(texts, vocab_size: int) -> tokenizers.Tokenizer:
  """A byte-level BPE over an iterable of strings; ids 0, 1, 2 are <pad>, <s>, </s>."""
  if vocab_size <= len(SPECIAL_TOKENS) + 256:
    raise ValueError(f'data.vocab_size must exceed 259 (bytes + specials), got {vocab_size}')
  tok = tokenizers.Tokenizer(models.BPE())
  tok.normalizer = tokenizers.normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    min_frequency=2,
    special_tokens=SPECIAL_TOKENS,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(texts, trainer=trainer)
  for i, name in enumerate(SPECIAL_TOKENS):
    assert tok.token_to_id(name) == i, (name, tok.token_to_id(name))
  return tok


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'no subword tokenizer at {path}: it is written there when a wmt14 run first opens '
      'its data; point data.tokenizer (or --workdir) at a run that has one'
    )
  return tokenizers.Tokenizer.from_file(path)


def ensure_tokenizer(data: ml_collections.ConfigDict, train_source) -> str:
  """Trains and saves the tokenizer on first use; returns its path."""
  path = tokenizer_path(data)
  if os.path.exists(path):
    return path
  n = len(train_source)
  count = min(n, int(data.get('tokenizer_sample', 100_000)))
  index = np.linspace(0, n - 1, count).astype(np.int64)  # evenly spaced, deterministic

  def texts():
    for i in index:
      record = train_source[int(i)]
      for lang in LANGS:
        yield _text(record[lang])

  tok = train_tokenizer(texts(), int(data.get('vocab_size', 32000)))
  folder = os.path.dirname(path) or '.'
  os.makedirs(folder, exist_ok=True)
  # Written to a temporary name then renamed, so concurrent processes never read half a file.
  fd, tmp = tempfile.mkstemp(dir=folder, suffix='.json')
  os.close(fd)
  tok.save(tmp)
  os.replace(tmp, path)
  return path


def _data_source(split: str, data_dir: str | None):
  import tensorflow_datasets.translate.wmt14  # noqa: F401  (registers the builder)

  return open_public(NAME, split, data_dir)


def _check_langs(data: ml_collections.ConfigDict) -> tuple[str, str]:
  src, tgt = data.get('source_lang', 'en'), data.get('target_lang', 'de')
  if {src, tgt} != set(LANGS):
    raise ValueError(
      f"wmt14 de-en needs source_lang/target_lang 'en'/'de' (either way), got {src!r}/{tgt!r}"
    )
  return src, tgt


def open_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  _check_langs(data)
  source = _data_source(split, data_dir)
  train = source if split == 'train' else _data_source('train', data_dir)
  ensure_tokenizer(data, train)
  return source


def _fit(ids: list[int], length: int) -> np.ndarray:
  out = np.full((length,), PAD_ID, np.int32)
  ids = ids[:length]
  out[: len(ids)] = ids
  return out


def encode_source(tok: tokenizers.Tokenizer, text: str, max_len: int) -> np.ndarray:
  """Text -> [max_len] ids: subwords + EOS, truncated (EOS kept) and padded."""
  ids = tok.encode(text).ids[: max_len - 1] + [EOS_ID]
  return _fit(ids, max_len)


def decode_target(tok: tokenizers.Tokenizer, ids) -> str:
  """Ids -> text, stopping at the first EOS, dropping BOS and pads."""
  ids = [int(i) for i in ids]
  if EOS_ID in ids:
    ids = ids[: ids.index(EOS_ID)]
  text = tok.decode([i for i in ids if i > EOS_ID])
  return text[1:] if text.startswith(' ') else text  # the pre-tokenizer's prefix space


class Tokenize(grain.transforms.Map):
  """{'de', 'en'} sentences -> {'src', 'tgt_in', 'tgt_out'} int32 [max_len] each.

  src = subwords + EOS; tgt_out = subwords + EOS; tgt_in = BOS + tgt_out[:-1]. Long
  sentences are truncated (a truncated target loses its EOS).
  """

  def __init__(self, path: str, source_lang: str, target_lang: str, max_len: int):
    self.path, self.max_len = path, max_len
    self.source_lang, self.target_lang = source_lang, target_lang
    self._tok = None  # loaded lazily: one per worker process

  def map(self, record):
    if self._tok is None:
      self._tok = load_tokenizer(self.path)
    src = self._tok.encode(_text(record[self.source_lang])).ids
    tgt = self._tok.encode(_text(record[self.target_lang])).ids + [EOS_ID]
    return {
      'src': _fit(src[: self.max_len - 1] + [EOS_ID], self.max_len),
      'tgt_in': _fit([BOS_ID] + tgt[: self.max_len - 1], self.max_len),
      'tgt_out': _fit(tgt, self.max_len),
    }


def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  del train
  src, tgt = _check_langs(data)
  if not data.get('max_len', None):
    raise ValueError('the wmt14 dataset needs data.max_len (tokens per side)')
  return [Tokenize(tokenizer_path(data), src, tgt, int(data.max_len))]


# newstest2013 ('validation') is the paper's development set; newstest2014 is 'test'.
register_dataset(NAME, DatasetSpec('seq2seq', open_split, transforms, eval_split='validation'))
