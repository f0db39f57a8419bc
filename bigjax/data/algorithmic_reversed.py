"""`algorithmic_reversed`: the `algorithmic` tasks with each answer written backwards.

For `addition` this puts the least significant digit first, the order in which carries
are computed, so every answer digit depends only on two aligned operand digits and the
previous answer digit. With `data.pad_operands=True` the addition operands are also
left-padded with zeros to the task's maximum width ('12+345' -> '00000012+00000345' for
8 digits), so aligned digits sit at fixed positions whatever the lengths. Both are the
standard formatting tricks for teaching arithmetic to small Transformers (Lee et al.,
2023, "Teaching Arithmetic to Small Transformers"). The problems and splits are exactly
those of `algorithmic` (same data config fields, same prepared files); the held-out
addition problems have full-width operands, so padding does not change them.
`bigjax.generate` formats prompts the same way and prints answers in the normal order.
"""

import grain
import ml_collections
import numpy as np

from bigjax.data import algorithmic
from bigjax.data.builders.algorithmic import DIGIT0, PLUS
from bigjax.data.datasets import DatasetSpec, register_dataset


def pad_operands(src: np.ndarray, width: int) -> np.ndarray:
  """'a+b' ids -> both operands left-padded with the digit 0 to `width` digits."""
  src = np.asarray(src, np.int32)
  (plus,) = np.flatnonzero(src == PLUS)
  a, b = src[:plus], src[plus + 1 :]
  zeros = lambda x: np.full((max(width - len(x), 0),), DIGIT0, np.int32)  # noqa: E731
  return np.concatenate([zeros(a), a, [PLUS], zeros(b), b]).astype(np.int32)


class Reformat(grain.transforms.Map):
  """{'src', 'tgt'} bare ids -> tgt reversed, and (optionally) operands zero-padded."""

  def __init__(self, pad_width: int = 0):
    self.pad_width = pad_width

  def map(self, record):
    src = np.asarray(record['src'], np.int32)
    if self.pad_width:
      src = pad_operands(src, self.pad_width)
    return {'src': src, 'tgt': np.asarray(record['tgt'], np.int32)[::-1].copy()}


def operand_width(data: ml_collections.ConfigDict) -> int:
  """The zero-padding width (0 = none): the addition task's maximum operand length."""
  if not data.get('pad_operands', False):
    return 0
  config = algorithmic.builder_config(data)
  if config.task != 'addition':
    raise ValueError(f'data.pad_operands applies to the addition task, not {config.task!r}')
  return config.max_length


def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  return [Reformat(operand_width(data)), *algorithmic.transforms(data, train)]


register_dataset('algorithmic_reversed', DatasetSpec('seq2seq', algorithmic.open_split, transforms))
