"""What a data set is to the trainer: `DatasetSpec`.

A data set is a random-access source of records (a TFDS `as_data_source` split, or an
in-memory source) plus per-record Grain transforms that produce the task's example dict,
and, for text, the tokenizer that maps strings to the ids the model sees. The pipeline
(`bigjax.data.pipeline`) adds sharding, shuffling, batching and padding; the one table of
data sets is `bigjax.data.datasets`.
"""

import dataclasses
from typing import Callable

import grain
import ml_collections

from bigjax.data.sources import Source
from bigjax.data.tokenizers import Tokenizer


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How the trainer reads one data set.

  task: the default objective, 'classification' | 'lm' | 'seq2seq' | 'mlm' |
    'text_classification' | 'regression' (`bigjax.train.tasks`).
  open_split(split, data_dir, data_config) -> Source (prepares the data on first use).
  transforms(data_config, train) -> per-record grain transforms, applied before batching;
    they must return the task's example dict of numpy arrays.
  tokenizer(data_config) -> Tokenizer, for text data; built from the config alone (a
    saved file at most), without opening or preparing the data. None for images.
  train_split, eval_split: default split names.
  class_names(data_config) -> the names of the label classes, in label order, for data that
    has a `label` (zero-shot prompts of the contrastive task); None when unknown.
  """

  task: str
  open_split: Callable[[str, str | None, ml_collections.ConfigDict], Source]
  transforms: Callable[[ml_collections.ConfigDict, bool], list[grain.transforms.Transformation]]
  tokenizer: Callable[[ml_collections.ConfigDict], Tokenizer] | None = None
  train_split: str = 'train'
  eval_split: str = 'test'
  class_names: Callable[[ml_collections.ConfigDict], list[str]] | None = None
