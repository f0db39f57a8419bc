"""Tokenizers: text <-> token ids behind one protocol that every text data set exposes.

  ByteTokenizer         UTF-8 bytes, one token per byte (vocabulary 256, no BOS/EOS)
  AlgorithmicTokenizer  the digits and '+' of the `algorithmic` tasks, with BOS/EOS; the
                        `algorithmic_reversed` variant zero-pads operands and reads answers
                        backwards, as that data set was trained
  SubwordTokenizer      a Hugging Face `tokenizers` model: byte-level BPE (`train_bpe`) or
                        WordPiece (`train_wordpiece`, or BERT's `vocab.txt` read by
                        `wordpiece_from_vocab`), shared by translation, BERT, GPT, CLIP

Every tokenizer pads with `bigjax.vocab.PAD_ID` (0) and saves to one JSON file that
`load_tokenizer` reads back (a subword tokenizer's file is the `tokenizers` library's own
`tokenizer.json`). `encode` returns the ids of the text alone: data sets and
`bigjax.generate` add BOS/EOS where their format has them. `decode` stops at the first EOS
and drops the reserved ids.
"""

import json
import os
import tempfile
from typing import Iterable, Protocol, runtime_checkable

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from bigjax.data.builders import algorithmic as alg
from bigjax.vocab import PAD_ID

# The special tokens each trainer puts first, so the pad token gets id PAD_ID = 0.
BPE_SPECIAL_TOKENS = ('<pad>', '<s>', '</s>')
WORDPIECE_SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
_BOS_TOKENS = ('<s>', '[CLS]')
_EOS_TOKENS = ('</s>', '[SEP]')
_KIND = 'bigjax_tokenizer'  # the JSON key naming bigjax's own (non-subword) tokenizers


@runtime_checkable
class Tokenizer(Protocol):
  """Text <-> int32 ids. `reserved_ids` (pad, BOS, ...) are never generated; `byte_level`
  means one token per byte (LM metrics then report bits per byte)."""

  vocab_size: int
  pad_id: int
  bos_id: int | None
  eos_id: int | None
  byte_level: bool
  reserved_ids: tuple[int, ...]

  def encode(self, text: str) -> np.ndarray: ...

  def decode(self, ids) -> str: ...

  def save(self, path: str) -> None: ...


def _write(path: str, write) -> None:
  """Writes through a temporary file then renames: readers never see half a file."""
  folder = os.path.dirname(os.fspath(path)) or '.'
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, suffix='.json')
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _save_json(path: str, value: dict) -> None:
  def write(tmp):
    with open(tmp, 'w') as f:
      json.dump(value, f)

  _write(path, write)


def _until_eos(ids, eos_id: int | None) -> list[int]:
  ids = [int(i) for i in np.asarray(ids).reshape(-1)]
  if eos_id is not None and eos_id in ids:
    ids = ids[: ids.index(eos_id)]
  return ids


class ByteTokenizer:
  """UTF-8 bytes: id = byte value. No BOS/EOS, so a language model always produces N tokens."""

  vocab_size = 256
  pad_id = PAD_ID
  bos_id = None
  eos_id = None
  byte_level = True
  reserved_ids = (PAD_ID,)  # the NUL byte doubles as padding

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    data = bytes(i for i in _until_eos(ids, None) if i != self.pad_id)
    return data.decode('utf-8', errors='replace')

  def save(self, path: str) -> None:
    _save_json(path, {_KIND: 'bytes'})

  def __repr__(self) -> str:
    return 'ByteTokenizer()'


def pad_operands(ids: np.ndarray, width: int) -> np.ndarray:
  """'a+b' ids -> both operands left-padded with the digit 0 to `width` digits."""
  ids = np.asarray(ids, np.int32)
  (plus,) = np.flatnonzero(ids == alg.PLUS)
  a, b = ids[:plus], ids[plus + 1 :]
  zeros = lambda x: np.full((max(width - len(x), 0),), alg.DIGIT0, np.int32)  # noqa: E731
  return np.concatenate([zeros(a), a, [alg.PLUS], zeros(b), b]).astype(np.int32)


class AlgorithmicTokenizer:
  """The `algorithmic` vocabulary: 0 pad, 1 BOS, 2 EOS, 3..12 the digits, 13 '+'.

  `encode` formats a problem ('12+345'; whitespace ignored) and `decode` reads an answer.
  For `algorithmic_reversed`: `pad_width` left-pads addition operands with zeros to that
  many digits, and `reversed_answer` turns answers, generated least significant digit
  first, back round.
  """

  vocab_size = alg.VOCAB_SIZE
  pad_id = PAD_ID
  bos_id = alg.BOS
  eos_id = alg.EOS
  byte_level = False
  reserved_ids = (PAD_ID, alg.BOS, alg.EOS)

  def __init__(self, reversed_answer: bool = False, pad_width: int = 0):
    self.reversed_answer = bool(reversed_answer)
    self.pad_width = int(pad_width)
    self._ids = {str(d): alg.DIGIT0 + d for d in range(10)}
    self._ids['+'] = alg.PLUS
    self._chars = {i: c for c, i in self._ids.items()}

  def encode(self, text: str) -> np.ndarray:
    text = ''.join(text.split())
    if not text or any(c not in self._ids for c in text):
      raise ValueError(f'an algorithmic prompt is digits and "+", like 12+345; got {text!r}')
    ids = np.array([self._ids[c] for c in text], np.int32)
    if self.pad_width:
      if text.count('+') != 1:
        raise ValueError(f'an addition prompt has one "+", like 12+345; got {text!r}')
      ids = pad_operands(ids, self.pad_width)
    return ids

  def decode(self, ids) -> str:
    ids = [i for i in _until_eos(ids, self.eos_id) if i not in self.reserved_ids]
    text = ''.join(self._chars.get(i, '?') for i in ids)
    return text[::-1] if self.reversed_answer else text

  def save(self, path: str) -> None:
    config = {'reversed_answer': self.reversed_answer, 'pad_width': self.pad_width}
    _save_json(path, {_KIND: 'algorithmic', **config})

  def __repr__(self) -> str:
    return (
      f'AlgorithmicTokenizer(reversed_answer={self.reversed_answer}, pad_width={self.pad_width})'
    )


class SubwordTokenizer:
  """A `tokenizers.Tokenizer` (BPE or WordPiece) whose id 0 is its pad token.

  BOS / EOS are '<s>' / '</s>' (BPE) or '[CLS]' / '[SEP]' (WordPiece) when present; every
  special token is reserved, and `decode` drops them ('[UNK]' included). `backend` is the
  underlying `tokenizers.Tokenizer`.
  """

  byte_level = False  # subwords: several bytes per token
  pad_id = PAD_ID

  def __init__(self, backend: tokenizers.Tokenizer):
    backend.no_truncation()  # a pretrained tokenizer.json may carry its own; data sets cut
    backend.no_padding()
    self.backend = backend
    special = {i: t.content for i, t in backend.get_added_tokens_decoder().items() if t.special}
    if 'pad' not in special.get(PAD_ID, '').lower():
      raise ValueError(
        f'a subword tokenizer needs a special pad token at id {PAD_ID}, got '
        f'{backend.id_to_token(PAD_ID)!r}: train it with the pad token first in special_tokens'
      )
    ids = {name: i for i, name in special.items()}
    self.bos_id = next((ids[t] for t in _BOS_TOKENS if t in ids), None)
    self.eos_id = next((ids[t] for t in _EOS_TOKENS if t in ids), None)
    self.reserved_ids = tuple(sorted(special))
    self.vocab_size = backend.get_vocab_size()
    # A byte-level pre-tokenizer adds a space before the first word; decoding removes it.
    self._prefix_space = isinstance(backend.decoder, decoders.ByteLevel)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self.backend.encode(text, add_special_tokens=False).ids, np.int32)

  def decode(self, ids) -> str:
    reserved = set(self.reserved_ids)
    text = self.backend.decode([i for i in _until_eos(ids, self.eos_id) if i not in reserved])
    return text[1:] if self._prefix_space and text.startswith(' ') else text

  def save(self, path: str) -> None:
    _write(path, self.backend.save)

  def __repr__(self) -> str:
    return f'SubwordTokenizer({type(self.backend.model).__name__}, vocab_size={self.vocab_size})'


def _check_special(special_tokens, vocab_size: int, floor: int, what: str) -> list[str]:
  special_tokens = list(special_tokens)
  if not special_tokens:
    raise ValueError('special_tokens needs at least the pad token (it gets id 0)')
  if vocab_size <= len(special_tokens) + floor:
    raise ValueError(
      f'vocab_size must exceed {len(special_tokens) + floor} ({what} + special tokens), '
      f'got {vocab_size}: raise it (data.vocab_size)'
    )
  return special_tokens


def train_bpe(
  texts: Iterable[str],
  vocab_size: int,
  *,
  special_tokens: Iterable[str] = BPE_SPECIAL_TOKENS,
  min_frequency: int = 2,
) -> SubwordTokenizer:
  """A byte-level BPE (Sennrich et al., 2016; GPT-2's byte alphabet) learned from `texts`.

  The special tokens take ids 0, 1, ... in order (the first is the pad token); every byte
  is in the vocabulary, so any text encodes without an unknown token.
  """
  special = _check_special(special_tokens, vocab_size, 256, '256 bytes')
  tok = tokenizers.Tokenizer(models.BPE())
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    special_tokens=special,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(texts, trainer=trainer)
  return SubwordTokenizer(tok)


def train_wordpiece(
  texts: Iterable[str],
  vocab_size: int,
  *,
  special_tokens: Iterable[str] = WORDPIECE_SPECIAL_TOKENS,
  lowercase: bool = True,
  min_frequency: int = 2,
) -> SubwordTokenizer:
  """A WordPiece vocabulary (Wu et al., 2016; BERT's) learned from `texts`.

  BERT's normaliser (accents stripped and lower case when `lowercase`) and pre-tokenizer
  (whitespace and punctuation); '[UNK]' stands for characters never seen in training.
  """
  special = _check_special(special_tokens, vocab_size, 0, 'nothing')
  if '[UNK]' not in special:
    raise ValueError("WordPiece needs '[UNK]' among special_tokens")
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  trainer = trainers.WordPieceTrainer(
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    special_tokens=special,
    show_progress=False,
  )
  tok.train_from_iterator(texts, trainer=trainer)
  return SubwordTokenizer(tok)


def wordpiece_from_vocab(path: str, *, lowercase: bool = True) -> SubwordTokenizer:
  """A WordPiece tokenizer over BERT's `vocab.txt` (one token per line, id = line number).

  BERT's normaliser (lower case and accents stripped when `lowercase`: the uncased models)
  and pre-tokenizer; the bracketed special tokens the file holds ('[PAD]', '[UNK]', ...)
  are marked special, at their ids in the file.
  """
  with open(path, encoding='utf-8') as f:
    tokens = [line.rstrip('\n') for line in f]
  vocab = {}
  for i, token in enumerate(tokens):
    vocab.setdefault(token, i)
  if '[UNK]' not in vocab:
    raise ValueError(f"{path} has no '[UNK]' token: is it a BERT WordPiece vocab.txt?")
  tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token='[UNK]'))
  tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  tok.add_special_tokens([t for t in WORDPIECE_SPECIAL_TOKENS if t in vocab])
  return SubwordTokenizer(tok)


def load_tokenizer(path: str, *, lowercase: bool = True) -> Tokenizer:
  """Reads a tokenizer that `save` wrote (or any `tokenizers` library tokenizer.json), a
  BERT `vocab.txt` (`wordpiece_from_vocab`; `lowercase` applies to it only), or a folder
  holding either (a run's workdir, a Hugging Face folder; tokenizer.json first)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    found = [os.path.join(path, n) for n in ('tokenizer.json', 'vocab.txt')]
    found = [p for p in found if os.path.exists(p)]
    if not found:
      raise FileNotFoundError(
        f'no tokenizer.json or vocab.txt in {path}: point at a folder (or file) that has one'
      )
    path = found[0]
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'no tokenizer at {path}: save one there (Tokenizer.save), or point at the '
      'tokenizer.json of a run that has one'
    )
  if path.endswith('.txt'):
    return wordpiece_from_vocab(path, lowercase=lowercase)
  with open(path) as f:
    value = json.load(f)
  kind = value.get(_KIND)
  if kind is None:
    return SubwordTokenizer(tokenizers.Tokenizer.from_file(path))
  if kind == 'bytes':
    return ByteTokenizer()
  if kind == 'algorithmic':
    return AlgorithmicTokenizer(value['reversed_answer'], value['pad_width'])
  raise ValueError(f'{path} holds an unknown tokenizer kind {kind!r}')
