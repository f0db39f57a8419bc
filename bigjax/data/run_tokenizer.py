"""A run's tokenizer: the file named by `data.tokenizer`, or one learned from the training
split on first use and saved as `<data.workdir>/tokenizer.json`.

Every data set whose vocabulary is learned from its own data (translation, BERT
pre-training, GLUE without a pretrained vocabulary) goes through these functions, so a run
trains its tokenizer once, later runs and `bigjax.generate` read it back, and a fine-tuning
run can point `data.tokenizer` at the pre-training run's workdir.

Data config fields:
  data.tokenizer         '' (learn one, saved in the workdir), or an existing tokenizer.json,
                         a BERT vocab.txt, or a folder holding one (a bigjax workdir, a
                         Hugging Face folder)
  data.workdir           set by the trainer: where a learned tokenizer.json lives
  data.tokenizer_sample  how many training records (documents) are read to learn it
  data.vocab_size        the learned vocabulary's size, special tokens included
  data.lowercase         lower-case text (BERT's uncased vocabularies); default True
"""

import os
from typing import Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from bigjax.data.tokenizers import Tokenizer, load_tokenizer

TOKENIZER_FILE = 'tokenizer.json'


def tokenizer_path(data: ml_collections.ConfigDict, dataset: str) -> str:
  """data.tokenizer when set, else <data.workdir>/tokenizer.json."""
  explicit = data.get('tokenizer', None)
  if explicit:
    return os.fspath(explicit)
  workdir = data.get('workdir', None)
  if not workdir:
    raise ValueError(
      f'the {dataset} data needs a place for its tokenizer: set data.workdir (the trainer '
      'does) or data.tokenizer to a tokenizer.json, a vocab.txt or a folder holding one'
    )
  return os.path.join(os.fspath(workdir), TOKENIZER_FILE)


def lowercase(data: ml_collections.ConfigDict) -> bool:
  return bool(data.get('lowercase', True))


def load(data: ml_collections.ConfigDict, dataset: str) -> Tokenizer:
  """The run's tokenizer (a `DatasetSpec.tokenizer`); an error says how to get one."""
  path = tokenizer_path(data, dataset)
  if not os.path.exists(path):
    if data.get('tokenizer', None):
      raise FileNotFoundError(_missing_explicit(path))
    raise FileNotFoundError(
      f'no tokenizer at {path}: it is written there when a {dataset} run first opens its '
      'data; point data.tokenizer (or --workdir) at a run that has one'
    )
  return load_tokenizer(path, lowercase=lowercase(data))


def _missing_explicit(path: str) -> str:
  return (
    f'data.tokenizer={path!r} does not exist: point it at a tokenizer.json, a vocab.txt or '
    "a folder holding one (the pre-training run's workdir, a Hugging Face folder), or set "
    "it to '' to learn one from the training split"
  )


def ensure(data: ml_collections.ConfigDict, dataset: str, learn: Callable[[], Tokenizer]) -> str:
  """Learns (`learn()`) and saves the workdir tokenizer on first use; returns its path.

  An explicit data.tokenizer is never written: it must exist. With several processes,
  process 0 learns while the others wait (as `prepare_builder` does); a process that does
  not share that workdir then learns its own copy.
  """
  path = tokenizer_path(data, dataset)
  if data.get('tokenizer', None) and not os.path.exists(path):
    raise FileNotFoundError(_missing_explicit(path))
  if jax.process_count() > 1:
    if jax.process_index() == 0 and not os.path.exists(path):
      learn().save(path)
    multihost_utils.sync_global_devices(f'tokenizer {path}')
  if not os.path.exists(path):
    learn().save(path)
  return path


def sample_indices(num_records: int, data: ml_collections.ConfigDict, default: int) -> np.ndarray:
  """Evenly spaced record indices, at most data.tokenizer_sample of them (deterministic)."""
  count = min(num_records, int(data.get('tokenizer_sample', default)))
  return np.linspace(0, num_records - 1, count).astype(np.int64)


class TokenizerFile:
  """A tokenizer read from `path` on first use: transforms hold this rather than the
  tokenizer, so each Grain worker process reads its own copy once."""

  def __init__(self, path: str, lowercase: bool = True):
    self.path, self.lowercase = os.fspath(path), lowercase
    self._tok: Tokenizer | None = None

  @property
  def tokenizer(self) -> Tokenizer:
    if self._tok is None:
      self._tok = load_tokenizer(self.path, lowercase=self.lowercase)
    return self._tok

  def __getstate__(self):  # workers load their own copy
    return {'path': self.path, 'lowercase': self.lowercase, '_tok': None}

  @classmethod
  def of(cls, data: ml_collections.ConfigDict, dataset: str) -> 'TokenizerFile':
    return cls(tokenizer_path(data, dataset), lowercase(data))
