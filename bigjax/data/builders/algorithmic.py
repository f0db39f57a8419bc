"""TFDS builder for classic algorithmic sequence-to-sequence tasks, generated offline.

Tasks (Graves et al., 2014; Zaremba & Sutskever, 2014): `copy`, `reverse` and `sort` a
sequence of digits, and multi-digit `addition` ("12+345" -> "357"). Examples are drawn
from a fixed seed, so every machine prepares the same data. The test split is held out by
content: a problem belongs to the test side when a hash of its source tokens lands in one
bucket out of `TEST_BUCKETS`, so no source appears in both splits whatever the order of
generation. Addition's test split has only operands of exactly `max_length` digits (the
hardest problems; train has 1..max_length digits, minus the held-out pairs).

Token ids: 0 pad, 1 BOS, 2 EOS, 3..12 the digits 0..9, 13 '+' (`VOCAB_SIZE` = 14).
Records store the bare token ids, {'src': int32 [S], 'tgt': int32 [T]}; BOS, EOS and
padding are added by the data set (`bigjax.data.sets.algorithmic`).
"""

import dataclasses
import hashlib

import numpy as np
import tensorflow_datasets as tfds

from bigjax.vocab import PAD_ID

PAD, BOS, EOS = PAD_ID, 1, 2
DIGIT0 = 3  # token id of the digit 0
PLUS = 13
VOCAB_SIZE = 14
TASKS = ('copy', 'reverse', 'sort', 'addition')
TEST_BUCKETS = 10  # one source in ten (by hash) is held out for the test split


@dataclasses.dataclass(eq=False)
class AlgorithmicConfig(tfds.core.BuilderConfig):
  """task; lengths in symbols (addition: digits per operand); split sizes; seed."""

  task: str = 'reverse'
  min_length: int = 1
  max_length: int = 16
  num_train: int = 20_000
  num_test: int = 1_000
  seed: int = 0


def _config(task: str, **kw) -> AlgorithmicConfig:
  return AlgorithmicConfig(name=task, task=task, description=f'{task}, {kw}', **kw)


def custom_config(
  task: str, min_length: int, max_length: int, num_train: int, num_test: int, seed: int = 0
) -> AlgorithmicConfig:
  """A config for other lengths or sizes, with a name that encodes them (its own folder)."""
  name = f'{task}_len{min_length}to{max_length}_n{num_train}x{num_test}_seed{seed}'
  return AlgorithmicConfig(
    name=name,
    task=task,
    min_length=min_length,
    max_length=max_length,
    num_train=num_train,
    num_test=num_test,
    seed=seed,
  )


def digits_to_ids(number: int) -> list[int]:
  return [DIGIT0 + int(d) for d in str(number)]


def ids_to_text(ids) -> str:
  """Token ids -> readable text ('<s>' BOS, '</s>' EOS, pads dropped), for inspection."""
  names = {BOS: '<s>', EOS: '</s>', PLUS: '+'}
  names.update({DIGIT0 + d: str(d) for d in range(10)})
  return ''.join(names.get(int(i), '?') for i in ids if int(i) != PAD)


def is_test(src: list[int]) -> bool:
  """The held-out rule: a stable hash of the source tokens, independent of the stream."""
  digest = hashlib.blake2b(np.asarray(src, np.int32).tobytes(), digest_size=8).digest()
  return int.from_bytes(digest, 'little') % TEST_BUCKETS == 0


def _number(rng: np.random.Generator, num_digits: int) -> int:
  low = 0 if num_digits == 1 else 10 ** (num_digits - 1)
  return int(rng.integers(low, 10**num_digits))


def sample_problem(
  config: AlgorithmicConfig, rng: np.random.Generator, test: bool
) -> tuple[list[int], list[int]]:
  """One (src, tgt) pair of token ids, before the split rule is applied."""
  lo, hi = config.min_length, config.max_length
  if config.task == 'addition':
    da, db = (hi, hi) if test else rng.integers(lo, hi + 1, size=2)
    a, b = _number(rng, int(da)), _number(rng, int(db))
    return digits_to_ids(a) + [PLUS] + digits_to_ids(b), digits_to_ids(a + b)
  length = int(rng.integers(lo, hi + 1))
  src = [DIGIT0 + int(d) for d in rng.integers(0, 10, size=length)]
  tgt = {'copy': src, 'reverse': src[::-1], 'sort': sorted(src)}[config.task]
  return src, list(tgt)


def generate_split(config: AlgorithmicConfig, split: str) -> list[tuple[list[int], list[int]]]:
  """The `split` ('train' | 'test') problems of `config`: distinct, deterministic."""
  if config.task not in TASKS:
    raise ValueError(f'unknown algorithmic task {config.task!r}; choose one of {TASKS}')
  if not 1 <= config.min_length <= config.max_length:
    raise ValueError(
      f'need 1 <= min_length <= max_length, got {config.min_length}, {config.max_length}'
    )
  test = split == 'test'
  wanted = config.num_test if test else config.num_train
  # Each split has its own stream, so preparing one never depends on the other.
  rng = np.random.default_rng([config.seed, int(test)])
  seen: set[tuple[int, ...]] = set()
  problems = []
  for _ in range(100 * wanted + 1000):
    if len(problems) == wanted:
      return problems
    src, tgt = sample_problem(config, rng, test)
    key = tuple(src)
    if is_test(src) == test and key not in seen:
      seen.add(key)
      problems.append((src, tgt))
  raise ValueError(
    f'could not draw {wanted} distinct {split} problems for {config.name!r}: lengths '
    f'{config.min_length}..{config.max_length} allow too few; raise max_length or lower '
    f'num_{split}'
  )


class Algorithmic(tfds.core.GeneratorBasedBuilder):
  """copy / reverse / sort / addition problems as token-id sequences."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Hash-held-out test split, seed 0.'}
  BUILDER_CONFIGS = [
    _config('copy'),
    _config('reverse'),
    _config('sort'),
    _config('addition', max_length=8, num_train=50_000, num_test=1_000),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=('Algorithmic seq2seq tasks. Ids: 0 pad, 1 BOS, 2 EOS, 3..12 digits, 13 "+".'),
      features=tfds.features.FeaturesDict(
        {
          'src': tfds.features.Tensor(shape=(None,), dtype=np.int32),
          'tgt': tfds.features.Tensor(shape=(None,), dtype=np.int32),
        }
      ),
      supervised_keys=('src', 'tgt'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # generated, nothing to download
    return {split: self._generate_examples(split) for split in ('train', 'test')}

  def _generate_examples(self, split):
    for i, (src, tgt) in enumerate(generate_split(self.builder_config, split)):
      yield i, {'src': np.asarray(src, np.int32), 'tgt': np.asarray(tgt, np.int32)}
