"""Tokenizers: text <-> token ids behind one protocol that every text data set exposes.

  ByteTokenizer         UTF-8 bytes, one token per byte (vocabulary 256, no BOS/EOS)
  AlgorithmicTokenizer  the digits and '+' of the `algorithmic` tasks, with BOS/EOS; the
                        `algorithmic_reversed` variant zero-pads operands and reads answers
                        backwards, as that data set was trained
  SubwordTokenizer      a Hugging Face `tokenizers` model: byte-level BPE (`train_bpe`) or
                        WordPiece (`train_wordpiece`, or BERT's `vocab.txt` read by
                        `wordpiece_from_vocab`), shared by translation, BERT, GPT, CLIP
  HFTokenizer           a pretrained decoder's tokenizer from a Hugging Face folder (GPT-2,
                        Llama, ...): `tokenizer.json`, or GPT-2's `vocab.json` + `merges.txt`;
                        its special ids come from the folder, and its vocabulary may have no
                        pad token (`pad_id` None)

Every tokenizer pads with `bigjax.vocab.PAD_ID` (0) and saves to one JSON file that
`load_tokenizer` reads back (a subword tokenizer's file is the `tokenizers` library's own
`tokenizer.json`). `encode` returns the ids of the text alone: data sets and
`bigjax.generate` add BOS/EOS where their format has them (HFTokenizer's exception: a
tokenizer whose own post-processor starts every text with BOS, as Llama's does, keeps it,
so the ids equal what `transformers` feeds the model). `decode` stops at the first EOS
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
# config.json model types whose folders load as HFTokenizer even with a pad token at id 0.
HF_DECODER_TYPES = ('gpt2', 'llama', 'mixtral')


@runtime_checkable
class Tokenizer(Protocol):
  """Text <-> int32 ids. `reserved_ids` (pad, BOS, ...) are never generated; `byte_level`
  means one token per byte (LM metrics then report bits per byte)."""

  vocab_size: int
  pad_id: int | None
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
    special = _special_tokens(backend)
    if not _pad_first(backend):
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


def _special_tokens(backend: tokenizers.Tokenizer) -> dict[int, str]:
  """id -> content of the tokenizer's special tokens."""
  return {i: t.content for i, t in backend.get_added_tokens_decoder().items() if t.special}


def _pad_first(backend: tokenizers.Tokenizer) -> bool:
  """Whether id PAD_ID is a special pad token (what SubwordTokenizer needs)."""
  return 'pad' in _special_tokens(backend).get(PAD_ID, '').lower()


def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    return {}
  value = load_json(path)
  return value if isinstance(value, dict) else {}


def load_json(path: str):
  """The JSON in `path`; a ValueError naming the file if it is not valid JSON."""
  with open(path, encoding='utf-8') as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(
        f'{path} is not valid JSON ({e.msg} at line {e.lineno}): fix it or save it again'
      ) from None


def _token_content(token) -> str | None:
  """A tokenizer_config.json special token: a string or {'content': ...}."""
  if isinstance(token, dict):
    token = token.get('content')
  return token if isinstance(token, str) else None


class HFTokenizer:
  """The tokenizer of a pretrained Hugging Face decoder (GPT-2, Llama, Mixtral, ...).

  `backend` is the `tokenizers.Tokenizer`. The special ids: `bos_id`, `eos_id` (the first of
  `eos_ids`, all of which end generation) and `pad_id` (None when the vocabulary has no pad
  token, as GPT-2's and Llama's have none); `from_folder` reads them from the folder's
  generation_config.json, then config.json, then the tokenizer's own special tokens
  (tokenizer_config.json, special_tokens_map.json), and drops ids outside the vocabulary.
  `reserved_ids`: the special tokens (and BOS and pad), which a model must never generate;
  the EOS ids are not reserved, so generation can stop.

  `encode(text)` returns the ids `transformers`' tokenizer gives for `text` as far as the
  start goes: BOS first when the tokenizer adds it (`add_bos_token` in
  tokenizer_config.json when it is set, else its post-processor, e.g. Llama's template),
  never an EOS at the end (a
  prompt continues). `decode(ids)` stops at the first EOS and skips special tokens.
  """

  byte_level = False  # subwords: several bytes per token

  def __init__(
    self,
    backend: tokenizers.Tokenizer,
    *,
    bos_id: int | None = None,
    eos_ids: tuple[int, ...] = (),
    pad_id: int | None = None,
    add_bos: bool | None = None,
  ):
    backend.no_truncation()  # a pretrained tokenizer.json may carry its own
    backend.no_padding()
    self.backend = backend
    self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
    self.bos_id, self.pad_id = bos_id, pad_id
    self.eos_ids = tuple(int(i) for i in eos_ids)
    self.eos_id = self.eos_ids[0] if self.eos_ids else None
    if add_bos is None:  # what the tokenizer's post-processor does
      plain = backend.encode('a', add_special_tokens=False).ids
      full = backend.encode('a', add_special_tokens=True).ids
      add_bos = bos_id is not None and full[:1] == [bos_id] and plain[:1] != [bos_id]
    self.add_bos = bool(add_bos and bos_id is not None)
    special = set(_special_tokens(backend)) | {i for i in (bos_id, pad_id) if i is not None}
    self.reserved_ids = tuple(sorted(special - set(self.eos_ids)))

  @classmethod
  def from_folder(cls, folder: str) -> 'HFTokenizer':
    """Reads `tokenizer.json`, or `vocab.json` + `merges.txt` (GPT-2's byte-level BPE), and
    the special ids of a Hugging Face model folder."""
    folder = os.fspath(folder)
    tok_config = _read_json(os.path.join(folder, 'tokenizer_config.json'))
    special_map = _read_json(os.path.join(folder, 'special_tokens_map.json'))
    if os.path.isfile(os.path.join(folder, 'tokenizer.json')):
      backend = tokenizers.Tokenizer.from_file(os.path.join(folder, 'tokenizer.json'))
    elif all(os.path.isfile(os.path.join(folder, n)) for n in ('vocab.json', 'merges.txt')):
      backend = _byte_level_bpe(folder, tok_config, special_map)
    else:
      raise FileNotFoundError(
        f'no tokenizer.json, or vocab.json + merges.txt, in {folder}: point at a Hugging Face '
        'model folder that has its tokenizer'
      )
    vocab = backend.get_vocab_size(with_added_tokens=True)
    by_token = {}
    for source in (special_map, tok_config):  # tokenizer_config.json wins
      for what in ('bos', 'eos', 'pad'):
        token = _token_content(source.get(f'{what}_token'))
        if token is not None and backend.token_to_id(token) is not None:
          by_token[what] = backend.token_to_id(token)
    ids = {}
    for name in ('config.json', 'generation_config.json'):  # the generation config wins
      config = _read_json(os.path.join(folder, name))
      for what in ('bos', 'eos', 'pad'):
        value = config.get(f'{what}_token_id')
        values = [int(v) for v in (value if isinstance(value, list) else [value]) if v is not None]
        values = [v for v in values if 0 <= v < vocab]  # a default outside a tiny vocabulary
        if values:
          ids[what] = values
    bos = (ids.get('bos') or [by_token.get('bos')])[0]
    eos = ids.get('eos') or ([by_token['eos']] if 'eos' in by_token else [])
    pad = (ids.get('pad') or [by_token.get('pad')])[0]
    # An explicit add_bos_token overrides the post-processor, as in transformers 5.
    add_bos = tok_config.get('add_bos_token')
    add_bos = add_bos if isinstance(add_bos, bool) else None
    return cls(backend, bos_id=bos, eos_ids=tuple(eos), pad_id=pad, add_bos=add_bos)

  def encode(self, text: str) -> np.ndarray:
    ids = self.backend.encode(text, add_special_tokens=False).ids
    if self.add_bos:
      ids = [self.bos_id, *ids]
    return np.asarray(ids, np.int32)

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    ends = [ids.index(e) for e in self.eos_ids if e in ids]
    ids = ids[: min(ends)] if ends else ids
    reserved = set(self.reserved_ids)
    return self.backend.decode([i for i in ids if i not in reserved], skip_special_tokens=True)

  def save(self, path: str) -> None:
    """Writes the `tokenizers` library's tokenizer.json (the special ids are not in it:
    keep the model folder's config files beside it)."""
    _write(path, self.backend.save)

  def __repr__(self) -> str:
    return (
      f'HFTokenizer({type(self.backend.model).__name__}, vocab_size={self.vocab_size}, '
      f'bos_id={self.bos_id}, eos_ids={self.eos_ids}, pad_id={self.pad_id})'
    )


def _byte_level_bpe(folder: str, tok_config: dict, special_map: dict) -> tokenizers.Tokenizer:
  """GPT-2's tokenizer from `vocab.json` + `merges.txt`: byte-level BPE, no prefix space,
  '<|endoftext|>' (or the folder's named tokens) special."""
  bpe = models.BPE.from_file(
    os.path.join(folder, 'vocab.json'), os.path.join(folder, 'merges.txt'), fuse_unk=False
  )
  backend = tokenizers.Tokenizer(bpe)
  prefix = bool(tok_config.get('add_prefix_space', False))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
  backend.decoder = decoders.ByteLevel()
  names = {'<|endoftext|>'}
  for source in (special_map, tok_config):
    for what in ('bos', 'eos', 'unk', 'pad'):
      names.add(_token_content(source.get(f'{what}_token')))
  for token in (tok_config.get('added_tokens_decoder') or {}).values():
    if isinstance(token, dict) and token.get('special'):
      names.add(token.get('content'))
  specials = sorted(n for n in names if n and backend.token_to_id(n) is not None)
  backend.add_special_tokens(specials)
  return backend


def _hf_decoder_folder(folder: str) -> bool:
  """A Hugging Face folder of a decoder-only model (its config.json says so)."""
  return _read_json(os.path.join(folder, 'config.json')).get('model_type') in HF_DECODER_TYPES


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
  holding either (a run's workdir, a Hugging Face folder; tokenizer.json first), or GPT-2's
  `vocab.json` + `merges.txt`.

  A `tokenizers` tokenizer.json loads as a SubwordTokenizer (as bigjax saves them: a special
  pad token at id 0) unless it has no pad token there, or sits in a Hugging Face folder of a
  decoder-only model (config.json's model_type is one of HF_DECODER_TYPES): those load as
  an HFTokenizer with the folder's special ids.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    found = [os.path.join(path, n) for n in ('tokenizer.json', 'vocab.txt')]
    found = [p for p in found if os.path.exists(p)]
    gpt2 = all(os.path.isfile(os.path.join(path, n)) for n in ('vocab.json', 'merges.txt'))
    if not found and gpt2:
      return HFTokenizer.from_folder(path)
    if not found:
      raise FileNotFoundError(
        f'no tokenizer.json, vocab.txt or vocab.json + merges.txt in {path}: point at a '
        'folder (or file) that has one'
      )
    path = found[0]
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'no tokenizer at {path}: save one there (Tokenizer.save), or point at the '
      'tokenizer.json of a run that has one'
    )
  if path.endswith('.txt'):
    return wordpiece_from_vocab(path, lowercase=lowercase)
  value = load_json(path)
  kind = value.get(_KIND) if isinstance(value, dict) else None
  if kind is None:
    backend = tokenizers.Tokenizer.from_file(path)
    folder = os.path.dirname(path) or '.'
    if os.path.basename(path) == 'tokenizer.json' and (
      _hf_decoder_folder(folder) or not _pad_first(backend)
    ):
      return HFTokenizer.from_folder(folder)
    if not _pad_first(backend):
      return HFTokenizer(backend)  # a renamed tokenizer file: no folder to read ids from
    return SubwordTokenizer(backend)
  if kind == 'bytes':
    return ByteTokenizer()
  if kind == 'algorithmic':
    return AlgorithmicTokenizer(value['reversed_answer'], value['pad_width'])
  raise ValueError(f'{path} holds an unknown tokenizer kind {kind!r}')
