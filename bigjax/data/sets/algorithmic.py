"""`algorithmic` and `algorithmic_reversed` (task `seq2seq`): copy / reverse / sort / addition.

`algorithmic_reversed` has the same problems and prepared files with each answer written
backwards. For `addition` this puts the least significant digit first, the order in which
carries are computed, so every answer digit depends only on two aligned operand digits and
the previous answer digit. With `data.pad_operands=True` the addition operands are also
left-padded with zeros to the task's maximum width ('12+345' -> '00000012+00000345' for 8
digits), so aligned digits sit at fixed positions whatever the lengths. Both are the
standard formatting tricks for teaching arithmetic to small Transformers (Lee et al., 2023,
"Teaching Arithmetic to Small Transformers"); the held-out addition problems have
full-width operands, so padding does not change them. The data set's tokenizer formats
prompts the same way and reads answers in the normal order.

Data config fields:
  data.task          'copy' | 'reverse' | 'sort' | 'addition' (a builder config)
  data.max_len       every src / tgt_in / tgt_out is padded to this many tokens
  data.pad_operands  (`algorithmic_reversed`, addition) zero-pad the operands
  optional: data.min_length, data.max_length (problem lengths), data.num_train,
  data.num_test, data.seed; any that differ from the named config's defaults select a
  custom config, prepared in its own folder.
Legend: S = T = data.max_len.
"""

import ml_collections

from bigjax.data.builders.algorithmic import Algorithmic, custom_config
from bigjax.data.builders.prepare import open_prepared
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import AlgorithmicTokenizer
from bigjax.data.transforms.text import ReverseTarget, Seq2SeqExample

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
  return open_prepared(Algorithmic, split, data_dir, config=builder_config(data))


def operand_width(data: ml_collections.ConfigDict) -> int:
  """The zero-padding width (0 = none): the addition task's maximum operand length."""
  if not data.get('pad_operands', False):
    return 0
  config = builder_config(data)
  if config.task != 'addition':
    raise ValueError(f'data.pad_operands applies to the addition task, not {config.task!r}')
  return config.max_length


def tokenizer(data: ml_collections.ConfigDict) -> AlgorithmicTokenizer:
  del data
  return AlgorithmicTokenizer()


def reversed_tokenizer(data: ml_collections.ConfigDict) -> AlgorithmicTokenizer:
  return AlgorithmicTokenizer(reversed_answer=True, pad_width=operand_width(data))


def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  del train
  if data.get('max_len', None) is None:
    raise ValueError('the algorithmic dataset needs data.max_len (padded sequence length)')
  tok = AlgorithmicTokenizer()
  return [Seq2SeqExample(int(data.max_len), tok.bos_id, tok.eos_id)]


def reversed_transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  return [ReverseTarget(operand_width(data)), *transforms(data, train)]


ALGORITHMIC = DatasetSpec('seq2seq', open_split, transforms, tokenizer)
ALGORITHMIC_REVERSED = DatasetSpec('seq2seq', open_split, reversed_transforms, reversed_tokenizer)
