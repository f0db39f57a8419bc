"""The `algorithmic` dataset (task `seq2seq`): copy / reverse / sort / addition.

Data config fields:
  data.task        'copy' | 'reverse' | 'sort' | 'addition' (a builder config)
  data.max_len     every src / tgt_in / tgt_out is padded to this many tokens
  optional: data.min_length, data.max_length (problem lengths), data.num_train,
  data.num_test, data.seed; any that differ from the named config's defaults select a
  custom config, prepared in its own folder.
Legend: S = T = data.max_len.
"""

import grain
import ml_collections
import numpy as np

from bigjax.data.builders.algorithmic import (
  BOS,
  EOS,
  PAD,
  Algorithmic,
  custom_config,
)
from bigjax.data.datasets import DatasetSpec, register_dataset

_OVERRIDES = ('min_length', 'max_length', 'num_train', 'num_test', 'seed')


def builder_config(data: ml_collections.ConfigDict):
  """The builder config named by `data.task`, with any length / size overrides."""
  task = data.get('task', 'reverse')
  named = {c.name: c for c in Algorithmic.BUILDER_CONFIGS}
  if task not in named:
    raise ValueError(f'data.task={task!r} is not an algorithmic task; choose one of {list(named)}')
  base = named[task]
  values = {k: data.get(k, None) for k in _OVERRIDES}
  values = {k: getattr(base, k) if v is None else v for k, v in values.items()}
  if all(values[k] == getattr(base, k) for k in _OVERRIDES):
    return base
  return custom_config(task, **values)


def open_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  from bigjax.data.catalog import prepare_builder  # catalog imports this module

  return prepare_builder(Algorithmic, data_dir, config=builder_config(data)).as_data_source(split)


def _pad(ids: list[int] | np.ndarray, length: int, what: str) -> np.ndarray:
  if len(ids) > length:
    raise ValueError(
      f'an algorithmic {what} needs {len(ids)} tokens (BOS/EOS included) but '
      f'data.max_len={length}: raise --config.data.max_len'
    )
  out = np.full((length,), PAD, np.int32)
  out[: len(ids)] = ids
  return out


class Seq2SeqExample(grain.transforms.Map):
  """{'src', 'tgt'} ids -> {'src': src+EOS, 'tgt_in': BOS+tgt(+EOS), 'tgt_out': tgt+EOS}, padded."""

  def __init__(self, max_len: int):
    self.max_len = max_len

  def map(self, record):
    src = np.asarray(record['src'], np.int32)
    tgt = np.asarray(record['tgt'], np.int32)
    tgt_out = _pad(np.append(tgt, EOS), self.max_len, 'target')
    return {
      'src': _pad(np.append(src, EOS), self.max_len, 'source'),
      'tgt_in': np.insert(tgt_out[:-1], 0, BOS),  # teacher forcing: BOS + tgt_out[:-1]
      'tgt_out': tgt_out,
    }


def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  del train
  if data.get('max_len', None) is None:
    raise ValueError('the algorithmic dataset needs data.max_len (padded sequence length)')
  return [Seq2SeqExample(int(data.max_len))]


register_dataset('algorithmic', DatasetSpec('seq2seq', open_split, transforms))
