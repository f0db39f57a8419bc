"""One Billion Word (public TFDS `lm1b`, Chelba et al., 2013) for causal language modelling
(task `lm`): 30 M English news sentences for training, 306 K for evaluation (`test`).

Packing: each sentence is a document; consecutive documents fill rows of T = data.max_len
tokens in GPT-2's format, document k giving inputs EOS + tokens and targets tokens + EOS
with segment id k, and padding at the end of a row (segment id 0) scored nowhere
(`bigjax.data.transforms.text.PackDocuments`). Row i holds a fixed group of consecutive
documents chosen greedily from every document's token count (`bigjax.data.sources.pack_rows`),
so rows are random access and identical on every run: a resumed run sees the same batches.
The token counts of a split are counted once with the run's tokenizer (one pass over the
split, the cost of reading every record once: tens of minutes for the 30 M training
sentences, a second for a mock split) and cached as
`<data.index_dir or workdir>/lm1b_tokens-<split>-<tokenizer hash>.npy` (point
data.index_dir at a shared folder and later runs with the same tokenizer skip the pass);
the tokens of a row are encoded again when it is read. A sentence longer than T - 1 tokens
is cut. Chosen over a fixed number of sentences per row, which needs no pass but cuts or
pads rows as sentence lengths vary (about 15% padding at T = 1024).

Tokenizer: data.tokenizer (a tokenizer.json or a folder holding one, e.g. GPT-2's Hugging
Face folder), else a byte-level BPE of data.vocab_size learned from data.tokenizer_sample
training sentences and saved as `<workdir>/tokenizer.json` (`bigjax.data.run_tokenizer`).
It must have an EOS token.

Data config fields: data.max_len (T), data.tokenizer, data.vocab_size, data.tokenizer_sample,
data.index_dir ('' = the workdir).
Prepare with `tfds build lm1b --file_format=array_record` (needs network).
"""

import hashlib
import os
import re

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from bigjax.data import run_tokenizer
from bigjax.data.sources import PackedRows, open_public, pack_rows
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import SubwordTokenizer, Tokenizer, train_bpe
from bigjax.data.transforms.text import PackDocuments, as_text, document_cost

NAME = 'lm1b'
INDEX_PREFIX = 'lm1b_tokens'  # <folder>/lm1b_tokens-<split>-<tokenizer hash>.npy
_BLOCK = 8192  # documents encoded at a time when counting tokens


def _max_len(data: ml_collections.ConfigDict) -> int:
  if not data.get('max_len', None):
    raise ValueError('the lm1b dataset needs data.max_len (tokens per packed row)')
  return int(data.max_len)


def _ensure_tokenizer(data: ml_collections.ConfigDict, split: str, data_dir, sentences) -> str:
  train_split = data.get('train_split', '') or 'train'

  def learn():
    train = sentences if split == train_split else open_public(NAME, train_split, data_dir)
    index = run_tokenizer.sample_indices(len(train), data, 200_000)
    texts = (as_text(train[int(i)]['text']) for i in index)
    return train_bpe(texts, int(data.get('vocab_size', 32_000)))

  return run_tokenizer.ensure(data, NAME, learn)


def _fingerprint(path: str) -> str:
  """A hash of the tokenizer's files: a cached index belongs to one tokenizer."""
  files = [path]
  if os.path.isdir(path):
    names = ('tokenizer.json', 'vocab.json', 'merges.txt', 'vocab.txt', 'tokenizer_config.json')
    files = [os.path.join(path, n) for n in names if os.path.exists(os.path.join(path, n))]
  digest = hashlib.sha256()
  for name in files:
    with open(name, 'rb') as f:
      digest.update(f.read())
  return digest.hexdigest()[:16]


def token_counts(sentences, tokenizer: Tokenizer) -> np.ndarray:
  """Every document's token count (int32 [N]), in blocks (a batch encode for subwords)."""
  counts = np.zeros((len(sentences),), np.int32)
  for start in range(0, len(sentences), _BLOCK):
    keys = range(start, min(start + _BLOCK, len(sentences)))
    texts = [as_text(sentences[k]['text']) for k in keys]
    if isinstance(tokenizer, SubwordTokenizer):  # its encode, many at a time
      lengths = [
        len(e.ids) for e in tokenizer.backend.encode_batch(texts, add_special_tokens=False)
      ]
    else:
      lengths = [len(tokenizer.encode(t)) for t in texts]
    counts[start : start + len(keys)] = lengths
  return counts


def _index_path(data: ml_collections.ConfigDict, split: str, tokenizer_path: str) -> str | None:
  folder = data.get('index_dir', '') or data.get('workdir', '')
  if not folder:
    return None
  safe = re.sub(r'[^A-Za-z0-9_.-]+', '_', split)
  name = f'{INDEX_PREFIX}-{safe}-{_fingerprint(tokenizer_path)}.npy'
  return os.path.join(os.fspath(folder), name)  # a file, not a folder: a failed start removes it


def _save(path: str, counts: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}.npy'
  np.save(tmp, counts, allow_pickle=False)
  os.replace(tmp, path)


def cached_counts(data, split: str, sentences, tokenizer_path: str) -> np.ndarray:
  """The split's token counts: read from the workdir's index, else counted and saved there
  (process 0 counts while the others wait, as the tokenizer is learned)."""
  path = _index_path(data, split, tokenizer_path)

  def count():
    return token_counts(sentences, run_tokenizer.load(data, NAME))

  if path is None:
    return count()
  if jax.process_count() > 1:
    if jax.process_index() == 0 and not os.path.exists(path):
      _save(path, count())
    multihost_utils.sync_global_devices(f'lm1b index {path}')
  if not os.path.exists(path):
    _save(path, count())
  counts = np.load(path, allow_pickle=False)
  if len(counts) != len(sentences):  # another split spec or data set version: count again
    counts = count()
    _save(path, counts)
  return counts


def open_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  import tensorflow_datasets.text.lm1b  # noqa: F401  (registers the TFDS builder)

  t = _max_len(data)
  sentences = open_public(NAME, split, data_dir)
  tokenizer_path = _ensure_tokenizer(data, split, data_dir, sentences)
  counts = cached_counts(data, split, sentences, tokenizer_path)
  return PackedRows(sentences, pack_rows(document_cost(counts, t), t), 'text')


def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  del train
  return [PackDocuments(run_tokenizer.TokenizerFile.of(data, NAME), _max_len(data))]


def tokenizer(data: ml_collections.ConfigDict):
  return run_tokenizer.load(data, NAME)


LM1B = DatasetSpec('lm', open_split, transforms, tokenizer, eval_split='test')
