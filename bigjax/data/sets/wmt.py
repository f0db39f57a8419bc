"""WMT'14 English-German (`wmt14_translate/de-en`, public TFDS) for the `seq2seq` task.

Legend: S = T = data.max_len tokens per side.

Sentences are cut into subwords by one byte-level BPE vocabulary shared by both
languages (Sennrich et al., 2016; the Transformer paper used a shared BPE of about 37000
tokens), trained (`bigjax.data.tokenizers.train_bpe`) on a bounded, evenly spaced sample
of the training pairs the first time a run opens the data, and saved as `tokenizer.json`
in the run's workdir; later runs (and `bigjax.generate`) reuse that file.

Data config fields:
  data.source_lang, data.target_lang   'en' and 'de' (either direction)
  data.max_len                         src / tgt_in / tgt_out are truncated or padded to it
  data.vocab_size                      BPE vocabulary size, the special tokens included
  data.tokenizer_sample                training pairs read to learn the BPE merges
  data.workdir                         set by the trainer: where tokenizer.json lives
  optional data.tokenizer              an existing tokenizer.json (overrides the workdir's)
The tokenizer file is handled by `bigjax.data.run_tokenizer`, as for every data set that
learns its vocabulary.
Ids: 0 <pad>, 1 <s> (BOS), 2 </s> (EOS); the rest are subwords.
"""

import ml_collections

from bigjax.data import run_tokenizer
from bigjax.data.sources import open_public
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import SubwordTokenizer, train_bpe
from bigjax.data.transforms.text import TokenizePair, as_text

NAME = 'wmt14_translate/de-en'
LANGS = ('de', 'en')


def tokenizer(data: ml_collections.ConfigDict) -> SubwordTokenizer:
  """The run's saved BPE tokenizer (written when a wmt14 run first opens its data)."""
  return run_tokenizer.load(data, 'wmt14')


def ensure_tokenizer(data: ml_collections.ConfigDict, train_source) -> str:
  """Trains and saves the tokenizer on first use; returns its path."""

  def texts():
    for i in run_tokenizer.sample_indices(len(train_source), data, 100_000):
      record = train_source[int(i)]
      for lang in LANGS:
        yield as_text(record[lang])

  def learn():
    return train_bpe(texts(), int(data.get('vocab_size', 32000)))

  return run_tokenizer.ensure(data, 'wmt14', learn)


def _data_source(split: str, data_dir: str | None):
  import tensorflow_datasets.translate.wmt14  # noqa: F401  (registers the TFDS builder)

  return open_public(NAME, split, data_dir)


def _check_langs(data: ml_collections.ConfigDict) -> tuple[str, str]:
  src, tgt = data.get('source_lang', 'en'), data.get('target_lang', 'de')
  if {src, tgt} != set(LANGS):
    raise ValueError(
      f"wmt14 de-en needs source_lang/target_lang 'en'/'de' (either way), got {src!r}/{tgt!r}"
    )
  return src, tgt


def open_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  _check_langs(data)
  source = _data_source(split, data_dir)
  train = source if split == 'train' else _data_source('train', data_dir)
  ensure_tokenizer(data, train)
  return source


def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  del train
  src, tgt = _check_langs(data)
  if not data.get('max_len', None):
    raise ValueError('the wmt14 dataset needs data.max_len (tokens per side)')
  return [TokenizePair(run_tokenizer.tokenizer_path(data, 'wmt14'), src, tgt, int(data.max_len))]


# newstest2013 ('validation') is the paper's development set; newstest2014 is 'test'.
WMT14_DE_EN = DatasetSpec('seq2seq', open_split, transforms, tokenizer, eval_split='validation')
