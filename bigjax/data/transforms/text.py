"""Per-record Grain transforms for token sequences.

Legend: T window length (`data.seq_len`); S = T = `data.max_len` for sequence pairs.
Every padded sequence is padded with `bigjax.vocab.PAD_ID`.
"""

import grain
import numpy as np

from bigjax.data.tokenizers import Tokenizer, load_tokenizer, pad_operands
from bigjax.vocab import PAD_ID


def pad_to(ids, length: int, what: str) -> np.ndarray:
  """ids -> int32 [length], padded; more than `length` ids is a config error."""
  if len(ids) > length:
    raise ValueError(
      f'a {what} needs {len(ids)} tokens (BOS/EOS included) but data.max_len={length}: '
      'raise --config.data.max_len'
    )
  out = np.full((length,), PAD_ID, np.int32)
  out[: len(ids)] = ids
  return out


def fit_to(ids, length: int) -> np.ndarray:
  """ids -> int32 [length]: truncated or padded."""
  out = np.full((length,), PAD_ID, np.int32)
  ids = np.asarray(ids, np.int32)[:length]
  out[: len(ids)] = ids
  return out


class ShiftTokens(grain.transforms.Map):
  """[T + 1] window -> {'inputs': [T], 'targets': [T]} int32."""

  def map(self, window):
    window = np.asarray(window, np.int32)
    return {'inputs': window[:-1], 'targets': window[1:]}


class Seq2SeqExample(grain.transforms.Map):
  """{'src', 'tgt'} ids -> {'src': src+EOS, 'tgt_in': BOS+tgt(+EOS), 'tgt_out': tgt+EOS},
  each padded to `max_len` (too long is an error)."""

  def __init__(self, max_len: int, bos_id: int, eos_id: int):
    self.max_len, self.bos_id, self.eos_id = max_len, bos_id, eos_id

  def map(self, record):
    src = np.asarray(record['src'], np.int32)
    tgt = np.asarray(record['tgt'], np.int32)
    tgt_out = pad_to(np.append(tgt, self.eos_id), self.max_len, 'target')
    return {
      'src': pad_to(np.append(src, self.eos_id), self.max_len, 'source'),
      'tgt_in': np.insert(tgt_out[:-1], 0, self.bos_id),  # teacher forcing: BOS + tgt_out[:-1]
      'tgt_out': tgt_out,
    }


class ReverseTarget(grain.transforms.Map):
  """{'src', 'tgt'} bare ids -> tgt reversed, and (`pad_width` > 0) the 'a+b' operands of
  src left-padded with zeros to `pad_width` digits."""

  def __init__(self, pad_width: int = 0):
    self.pad_width = pad_width

  def map(self, record):
    src = np.asarray(record['src'], np.int32)
    if self.pad_width:
      src = pad_operands(src, self.pad_width)
    return {'src': src, 'tgt': np.asarray(record['tgt'], np.int32)[::-1].copy()}


def as_text(value) -> str:
  """A TFDS text feature (bytes or str) as str."""
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


class TokenizePair(grain.transforms.Map):
  """{source_key: text, target_key: text} -> {'src', 'tgt_in', 'tgt_out'} int32 [max_len].

  src = tokens + EOS; tgt_out = tokens + EOS; tgt_in = BOS + tgt_out[:-1]. Long sentences
  are truncated (the source keeps its EOS, a truncated target loses it). The tokenizer is
  read from `path` lazily, once per worker process.
  """

  def __init__(self, path: str, source_key: str, target_key: str, max_len: int):
    self.path, self.max_len = path, max_len
    self.source_key, self.target_key = source_key, target_key
    self._tok: Tokenizer | None = None

  def map(self, record):
    if self._tok is None:
      self._tok = load_tokenizer(self.path)
    bos, eos = self._tok.bos_id, self._tok.eos_id
    src = self._tok.encode(as_text(record[self.source_key]))
    tgt = np.append(self._tok.encode(as_text(record[self.target_key])), eos)
    return {
      'src': fit_to(np.append(src[: self.max_len - 1], eos), self.max_len),
      'tgt_in': fit_to(np.insert(tgt[: self.max_len - 1], 0, bos), self.max_len),
      'tgt_out': fit_to(tgt, self.max_len),
    }
