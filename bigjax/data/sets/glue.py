"""GLUE (Wang et al., 2019; public TFDS `glue/<task>`) for fine-tuning text encoders.

Each example is one sentence or a sentence pair, encoded as [CLS] A [SEP] (B [SEP]) with
segment ids (`bigjax.data.transforms.text.EncodeText`), and its `label`: int32 for the
classification tasks, float32 (a 0-5 similarity) for STS-B (task `regression`). The test
splits have no labels, so evaluation reads `validation` (MNLI: `validation_matched`).

Data config fields: data.max_len (T), data.tokenizer (a pretrained model's folder or its
vocab.txt / tokenizer.json; else a WordPiece of data.vocab_size learned from the training
split and saved in the workdir, `bigjax.data.run_tokenizer`), data.lowercase, data.vocab_size,
data.tokenizer_sample.
Prepare with `tfds build glue/<task> --file_format=array_record` on a machine with network.
"""

import dataclasses

import ml_collections
import numpy as np

from bigjax.data import run_tokenizer
from bigjax.data.sources import open_public
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import train_wordpiece
from bigjax.data.transforms.text import EncodeText, as_text


@dataclasses.dataclass(frozen=True)
class GlueTask:
  text_keys: tuple[str, ...]
  num_classes: int  # 1: regression
  eval_split: str = 'validation'


TASKS = {
  'cola': GlueTask(('sentence',), 2),
  'sst2': GlueTask(('sentence',), 2),
  'mrpc': GlueTask(('sentence1', 'sentence2'), 2),
  'qqp': GlueTask(('question1', 'question2'), 2),
  'stsb': GlueTask(('sentence1', 'sentence2'), 1),
  'mnli': GlueTask(('premise', 'hypothesis'), 3, 'validation_matched'),
  'qnli': GlueTask(('question', 'sentence'), 2),
  'rte': GlueTask(('sentence1', 'sentence2'), 2),
  'wnli': GlueTask(('sentence1', 'sentence2'), 2),
}


def glue(task: str) -> DatasetSpec:
  """The `DatasetSpec` of `glue/<task>`."""
  spec = TASKS[task]
  name = f'glue/{task}'
  regression = spec.num_classes == 1

  def source(split: str, data_dir: str | None):
    import tensorflow_datasets.text.glue  # noqa: F401  (registers the TFDS builder)

    return open_public(name, split, data_dir)

  def open_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
    records = source(split, data_dir)
    if not data.get('tokenizer', None):
      train = records if split == 'train' else source('train', data_dir)

      def learn():
        index = run_tokenizer.sample_indices(len(train), data, 100_000)
        texts = (as_text(train[int(i)][k]) for i in index for k in spec.text_keys)
        vocab = int(data.get('vocab_size', 30522))
        return train_wordpiece(texts, vocab, lowercase=run_tokenizer.lowercase(data))

      run_tokenizer.ensure(data, name, learn)
    return records

  def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
    del train
    if not data.get('max_len', None):
      raise ValueError(f'the {name} dataset needs data.max_len (tokens per example)')
    tok = run_tokenizer.TokenizerFile.of(data, name)
    label = {'label': np.float32 if regression else np.int32}
    return [EncodeText(tok, int(data.max_len), spec.text_keys, label)]

  def tokenizer(data: ml_collections.ConfigDict):
    return run_tokenizer.load(data, name)

  task_name = 'regression' if regression else 'text_classification'
  return DatasetSpec(task_name, open_split, transforms, tokenizer, eval_split=spec.eval_split)
