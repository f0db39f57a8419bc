"""Per-record Grain transforms for token sequences.

Legend: T window length (`data.seq_len`); S = T = `data.max_len` for sequence pairs and
for BERT-style text examples. Every padded sequence is padded with `bigjax.vocab.PAD_ID`.
"""

import zlib

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


def renumber_segments(doc_ids) -> np.ndarray:
  """Document indices [T] (non-decreasing) -> segment ids 1, 2, ... in order of appearance."""
  doc_ids = np.asarray(doc_ids)
  changes = np.concatenate([[0], (doc_ids[1:] != doc_ids[:-1]).astype(np.int32)])
  return (1 + np.cumsum(changes)).astype(np.int32)


class ShiftTokens(grain.transforms.Map):
  """[T + 1] window -> {'inputs': [T], 'targets': [T]} int32.

  A window {'tokens': [T + 1], 'doc_ids': [T + 1]} (`WindowSource` with document starts)
  also gets 'segment_ids' [T]: the document of each input, 1 for the window's first, 2 for
  the next, ... Targets are unchanged, so every byte is still a target exactly once: an
  input that ends a document predicts the first byte of the next one from its own document.
  """

  def map(self, window):
    if isinstance(window, dict):
      tokens = np.asarray(window['tokens'], np.int32)
      segment_ids = renumber_segments(window['doc_ids'][:-1])
      return {'inputs': tokens[:-1], 'targets': tokens[1:], 'segment_ids': segment_ids}
    window = np.asarray(window, np.int32)
    return {'inputs': window[:-1], 'targets': window[1:]}


def document_cost(num_tokens, max_len: int):
  """Positions a document of `num_tokens` (an int or an array of counts) takes in a packed
  row of `max_len` (`PackDocuments`): its tokens, cut to max_len - 1, and one EOS."""
  return np.minimum(num_tokens, max_len - 1) + 1


class PackDocuments(grain.transforms.Map):
  """{'texts': documents} -> {'inputs', 'targets', 'segment_ids'} int32 [T], T = `max_len`.

  GPT-2's format with document boundaries: document k (ids d, cut to T - 1 tokens) gives
  inputs EOS + d and targets d + EOS, with segment id k; the documents follow each other
  and the row is padded at the end (segment id 0, scored nowhere). So every token and the
  EOS ending each document is predicted from its own document only, the first token from
  the EOS that opens it. The group of documents comes from `bigjax.data.sources.pack_rows`
  over `document_cost`, so the documents fit; tokens past T would be cut (never silently
  wrong). `tokenizer` is a `bigjax.data.run_tokenizer.TokenizerFile`; the padding id is
  the tokenizer's pad id, or 0 when it has none (padding is never attended to or scored).
  """

  def __init__(self, tokenizer, max_len: int):
    if max_len < 2:
      raise ValueError(f'data.max_len must be at least 2 to pack documents, got {max_len}')
    self.tokenizer, self.max_len = tokenizer, int(max_len)

  def map(self, record):
    tok = self.tokenizer.tokenizer
    if tok.eos_id is None:
      raise ValueError(
        f'{self.tokenizer.path} has no EOS token to end documents with: use a tokenizer '
        'that has one (a learned BPE has </s>, GPT-2 <|endoftext|>)'
      )
    t, eos = self.max_len, int(tok.eos_id)
    pad = getattr(tok, 'pad_id', None)
    inputs = np.full((t,), PAD_ID if pad is None else pad, np.int32)
    targets, segment_ids = inputs.copy(), np.zeros((t,), np.int32)
    used = 0
    for k, text in enumerate(record['texts'], start=1):
      ids = np.asarray(tok.encode(as_text(text)), np.int32)[: t - 1]
      n = min(len(ids) + 1, t - used)
      if n <= 0:
        break
      inputs[used : used + n] = np.concatenate([[eos], ids])[:n]
      targets[used : used + n] = np.concatenate([ids, [eos]])[:n]
      segment_ids[used : used + n] = k
      used += n
    return {'inputs': inputs, 'targets': targets, 'segment_ids': segment_ids}


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


# Text encoders (BERT): [CLS] A [SEP] (B [SEP]) with segment ids, and dynamic masking.
# Legend: T = data.max_len tokens per example (both sentences, specials included).

# Python layout as words a WordPiece tokenizer keeps (its pre-tokenizer drops whitespace,
# yet indentation is syntax): one INDENT per 4 columns, one ALIGN per remaining column,
# NEWLINE between lines. All three are punctuation to BERT's pre-tokenizer: one token each.
INDENT, ALIGN, NEWLINE = '»', '›', '¶'
MASK_PROB = 0.15  # BERT (Devlin et al., 2019, section 3.1): 15% of tokens are predicted
MASK_TOKEN = '[MASK]'


def code_as_text(code: str) -> str:
  """Python source -> one line of text that keeps its layout (blank lines dropped).

  'if x:\\n    y = 1' -> 'if x: ¶ » y = 1'. Tabs count as 8 columns.
  """
  lines = []
  for line in code.splitlines():
    body = line.strip()
    if body:
      line = line.expandtabs(8)
      width = len(line) - len(line.lstrip())
      lines.append(f'{INDENT * (width // 4)}{ALIGN * (width % 4)} {body}'.lstrip())
  return f' {NEWLINE} '.join(lines)


def truncate_pair(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
  """Lengths after removing tokens from the end of the longer side, one at a time (ties:
  the first), until len_a + len_b <= budget: BERT's `_truncate_seq_pair`."""
  excess = len_a + len_b - budget
  if excess <= 0:
    return len_a, len_b
  cut = min(excess, abs(len_a - len_b))  # first the longer side down to the other's length
  if len_a >= len_b:
    len_a -= cut
  else:
    len_b -= cut
  excess -= cut
  return len_a - (excess + 1) // 2, len_b - excess // 2


def encode_pair(a, b, max_len: int, cls_id: int, sep_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Token ids of A (and B, or None) -> (input_ids, segment_ids), int32 [T].

  input_ids = [CLS] A [SEP] (B [SEP]), truncated (`truncate_pair`) and padded with PAD_ID;
  segment_ids are 0 over [CLS] A [SEP], 1 over B [SEP], 0 on padding.
  """
  specials = 2 if b is None else 3
  if max_len <= specials:
    raise ValueError(f'data.max_len={max_len} leaves no room for text: raise it')
  a = np.asarray(a, np.int32)
  b = np.zeros((0,), np.int32) if b is None else np.asarray(b, np.int32)
  len_a, len_b = truncate_pair(len(a), len(b), max_len - specials)
  ids = [[cls_id], a[:len_a], [sep_id]]
  if specials == 3:
    ids += [b[:len_b], [sep_id]]
  ids = np.concatenate(ids).astype(np.int32)
  segments = np.zeros((max_len,), np.int32)
  segments[len_a + 2 : len(ids)] = 1
  return fit_to(ids, max_len), segments


class EncodeText(grain.transforms.Map):
  """{text_keys: text, label keys} -> {'input_ids', 'segment_ids': int32 [T], labels}.

  One text key encodes a sentence, two a sentence pair (`encode_pair`); `labels` maps
  the record keys copied through to their dtype. `tokenizer` is a
  `bigjax.data.run_tokenizer.TokenizerFile` (read once per worker process); with
  `as_code`, texts are Python source (`code_as_text`).
  """

  def __init__(self, tokenizer, max_len: int, text_keys, labels=None, as_code: bool = False):
    if len(text_keys) not in (1, 2):
      raise ValueError(f'a text example has one or two sentences, got keys {text_keys}')
    self.tokenizer, self.max_len, self.text_keys = tokenizer, int(max_len), tuple(text_keys)
    self.labels, self.as_code = dict(labels or {}), as_code

  def map(self, record):
    tok = self.tokenizer.tokenizer
    if tok.bos_id is None or tok.eos_id is None:
      raise ValueError(f'{self.tokenizer.path} has no [CLS] / [SEP] tokens: use a WordPiece one')
    texts = [as_text(record[k]) for k in self.text_keys]
    ids = [tok.encode(code_as_text(t) if self.as_code else t) for t in texts]
    b = ids[1] if len(ids) == 2 else None
    input_ids, segment_ids = encode_pair(ids[0], b, self.max_len, tok.bos_id, tok.eos_id)
    out = {'input_ids': input_ids, 'segment_ids': segment_ids}
    for key, dtype in self.labels.items():
      out[key] = np.asarray(record[key], dtype)
    return out


class MaskTokens(grain.transforms.RandomMap):
  """Dynamic masking for masked-LM pre-training (BERT, section 3.1 and appendix A.1).

  Of the tokens that are not special ([CLS], [SEP], [PAD], [UNK], [MASK]), round(15%) are
  selected (at least one when there are any); of those 80% become [MASK], 10% a random
  non-special token and 10% stay. 'mlm_labels' (int32 [T]) holds the original id at the
  selected positions and -1 elsewhere. As a Grain RandomMap after `.seed().shuffle()
  .repeat()` its generator is seeded from the pipeline seed and the element's index in the
  repeated stream (grain's `RngPool.acquire_rng(index)`), so the mask is drawn anew every
  epoch and is a function of (seed, step): a resumed iterator yields the same masks.

  `max_predictions` P > 0 gives the selected positions instead of a dense label row, as
  BERT's own pre-training data does (`max_predictions_per_seq`): 'mlm_positions' (int32
  [P], sorted, 0 after the last) and 'mlm_labels' (int32 [P], -1 after the last). The model
  then computes its vocabulary-sized MLM logits at those P positions only, not at all T
  (at T = 128 and 15%, a seventh of the work). P must hold round(15%) of T tokens.
  """

  def __init__(self, tokenizer, mask_prob: float = MASK_PROB, max_predictions: int = 0):
    if not 0 < mask_prob < 1:
      raise ValueError(f'data.mask_prob must be in (0, 1), got {mask_prob}')
    if max_predictions < 0:
      raise ValueError(
        f'data.max_predictions must be >= 0 (0: dense labels), got {max_predictions}'
      )
    self.tokenizer, self.mask_prob = tokenizer, float(mask_prob)
    self.max_predictions = int(max_predictions)
    self._ids = None

  def _vocab(self) -> tuple[np.ndarray, int, np.ndarray]:
    """(special ids, the [MASK] id, the ids random replacements draw from)."""
    if self._ids is None:
      tok = self.tokenizer.tokenizer
      mask_id = tok.backend.token_to_id(MASK_TOKEN) if hasattr(tok, 'backend') else None
      if mask_id is None:
        raise ValueError(f'{self.tokenizer.path} has no {MASK_TOKEN} token: use a WordPiece one')
      special = np.asarray(sorted(set(tok.reserved_ids) | {mask_id}), np.int32)
      normal = np.setdiff1d(np.arange(tok.vocab_size, dtype=np.int32), special)
      self._ids = (special, mask_id, normal)
    return self._ids

  def __getstate__(self):  # workers read their own tokenizer
    return {**self.__dict__, '_ids': None}

  def random_map(self, example, rng: np.random.Generator):
    special, mask_id, normal = self._vocab()
    ids = np.asarray(example['input_ids'], np.int32)
    labels = np.full(ids.shape, -1, np.int32)
    masked = ids.copy()
    candidates = np.flatnonzero(~np.isin(ids, special))
    if len(candidates):
      k = max(1, int(np.floor(self.mask_prob * len(candidates) + 0.5)))
      chosen = rng.choice(candidates, k, replace=False)
      labels[chosen] = ids[chosen]
      u = rng.random(k)
      masked[chosen[u < 0.8]] = mask_id
      swap = chosen[(u >= 0.8) & (u < 0.9)]
      masked[swap] = rng.choice(normal, len(swap))
    if not self.max_predictions:
      return {**example, 'input_ids': masked, 'mlm_labels': labels}
    chosen = np.flatnonzero(labels >= 0)  # sorted
    p = self.max_predictions
    if len(chosen) > p:
      raise ValueError(
        f'{len(chosen)} tokens were selected for prediction but data.max_predictions is {p}: '
        f'raise it to at least ceil(mask_prob * max_len)'
      )
    positions = np.zeros((p,), np.int32)
    positions[: len(chosen)] = chosen
    sparse = np.full((p,), -1, np.int32)
    sparse[: len(chosen)] = labels[chosen]
    return {**example, 'input_ids': masked, 'mlm_positions': positions, 'mlm_labels': sparse}


class FixedMaskTokens(grain.transforms.Map):
  """`MaskTokens` with one mask per example for evaluation: the generator is seeded from
  the example's token ids, so the same example gets the same mask on any number of
  processes, in any order."""

  def __init__(self, masker: MaskTokens, seed: int = 0):
    self.masker, self.seed = masker, int(seed)

  def map(self, example):
    key = zlib.crc32(np.asarray(example['input_ids'], np.int32).tobytes())
    return self.masker.random_map(example, np.random.default_rng([self.seed, key]))


def mlm_transforms(
  tokenizer,
  max_len: int,
  train: bool,
  *,
  pairs: bool,
  as_code=False,
  mask_prob: float = MASK_PROB,
  max_predictions: int = 0,
) -> list:
  """Encode {'text_a'(, 'text_b', 'nsp_label')} records, then mask: dynamic masking when
  training, a fixed mask per example otherwise. `pairs`: sentence pairs with NSP labels;
  `max_predictions` > 0: the selected positions and their labels, P of each (`MaskTokens`)."""
  keys, labels = (('text_a', 'text_b'), {'nsp_label': np.int32}) if pairs else (('text_a',), {})
  masker = MaskTokens(tokenizer, mask_prob, max_predictions)
  return [
    EncodeText(tokenizer, max_len, keys, labels, as_code=as_code),
    masker if train else FixedMaskTokens(masker),
  ]
