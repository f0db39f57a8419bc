"""English Wikipedia (public TFDS `wikipedia/<date>.<lang>`) for BERT pre-training (task
`mlm`).

Each record is one article, read lazily (`bigjax.data.sources.ArticlePairs`): it is cut
into chunks of `data.chunk_words` words and a random chunk is paired with the next one
(nsp_label 0) or, half the time, with a chunk of another article (nsp_label 1), chosen
from (data.nsp_seed, article index); then dynamic masking (15%: 80% [MASK], 10% random,
10% kept). TFDS has one `train` split: the last 1% of articles is held out for evaluation.

Data config fields: data.tfds_name ('wikipedia/20230601.en'), data.max_len (T),
data.chunk_words (about 0.35 T: two chunks and the specials fill T), data.nsp (True),
data.nsp_seed (0), data.mask_prob (0.15), data.max_predictions (0: dense [T] labels; P:
P positions and labels, `MaskTokens`), data.tokenizer (e.g. BERT's uncased vocab.txt or its
folder; else a WordPiece of data.vocab_size learned from data.tokenizer_sample
articles and saved in the workdir, `bigjax.data.run_tokenizer`), data.lowercase.
Prepare with `tfds build wikipedia/20230601.en --file_format=array_record` (needs network
and Apache Beam).
"""

import ml_collections

from bigjax.data import run_tokenizer
from bigjax.data.sources import ArticlePairs, open_public
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import train_wordpiece
from bigjax.data.transforms.text import MASK_PROB, as_text, mlm_transforms

DEFAULT_NAME = 'wikipedia/20230601.en'
TRAIN_SPLIT, EVAL_SPLIT = 'train[:99%]', 'train[99%:]'


def tfds_name(data: ml_collections.ConfigDict) -> str:
  return data.get('tfds_name', '') or DEFAULT_NAME


def _articles(data: ml_collections.ConfigDict, split: str, data_dir: str | None):
  import tensorflow_datasets.text.wikipedia  # noqa: F401  (registers the TFDS builder)

  return open_public(tfds_name(data), split, data_dir)


def _max_len(data: ml_collections.ConfigDict) -> int:
  if not data.get('max_len', None):
    raise ValueError('the wikipedia dataset needs data.max_len (tokens per example)')
  return int(data.max_len)


def open_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  articles = _articles(data, split, data_dir)
  if not data.get('tokenizer', None):
    train_split = data.get('train_split', '') or TRAIN_SPLIT
    train = articles if split == train_split else _articles(data, train_split, data_dir)

    def learn():
      index = run_tokenizer.sample_indices(len(train), data, 100_000)
      texts = (as_text(train[int(i)]['text']) for i in index)
      vocab = int(data.get('vocab_size', 30522))
      return train_wordpiece(texts, vocab, lowercase=run_tokenizer.lowercase(data))

    run_tokenizer.ensure(data, 'wikipedia', learn)
  words = int(data.get('chunk_words', 0)) or max(1, int(0.35 * _max_len(data)))
  pairs = ArticlePairs(articles, words, 'text', int(data.get('nsp_seed', 0)))
  return pairs if data.get('nsp', True) else _FirstChunk(pairs)


class _FirstChunk:
  """The first chunk of every article alone, for masked LM without next-sentence prediction."""

  def __init__(self, pairs: ArticlePairs):
    self.pairs = pairs

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, i: int) -> dict:
    return {'text_a': self.pairs.chunks(i)[0]}


def transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  return mlm_transforms(
    run_tokenizer.TokenizerFile.of(data, 'wikipedia'),
    _max_len(data),
    train,
    pairs=bool(data.get('nsp', True)),
    mask_prob=float(data.get('mask_prob', MASK_PROB)),
    max_predictions=int(data.get('max_predictions', 0)),
  )


def tokenizer(data: ml_collections.ConfigDict):
  return run_tokenizer.load(data, 'wikipedia')


WIKIPEDIA = DatasetSpec(
  'mlm', open_split, transforms, tokenizer, train_split=TRAIN_SPLIT, eval_split=EVAL_SPLIT
)
