"""Paired data for contrastive training (task 'contrastive', `bigjax.models.clip`): images
with captions, spoken words with their written word.

`coco_captions`: public TFDS `coco_captions` (COCO 2014 with the Karpathy & Li splits: train
82,783 images, val and test 5,000 each, restval 30,504; five or more captions per image).
TFDS stores the images as JPEG bytes; `as_data_source` decodes them with Pillow, no
TensorFlow. One caption per image per step: a random one in training, the first at
evaluation (`bigjax.data.transforms.caption`); images are resized (shorter side) and cropped
to data.image_size, randomly in training, centrally at evaluation, and normalised with
CLIP's pixel statistics. Evaluation reads 'val'.

TFDS's own builder names `tf.int64` among its features, which imports TensorFlow; the
builder here declares the same features with NumPy dtypes, so it reads the files `tfds build
coco_captions --file_format=array_record` writes (on a machine with network and
TensorFlow) without it.

Data config fields: data.image_size (S), data.max_len (T, text tokens), data.tokenizer (a
Hugging Face CLIP folder or any tokenizer file; else a byte-level BPE of data.vocab_size
learned from data.tokenizer_sample training images' captions and saved in the workdir,
`bigjax.data.run_tokenizer`, with '<pad>' 0, '</s>' (EOS) 1, '<s>' (BOS) 2).

`spoken_words_text`: the offline `spoken_words` (`bigjax.data.sets.speech`, its builder,
splits and audio transforms unchanged: test voices are never heard in training) with each
clip paired with its written word, byte-tokenized: {'audio': float32 [N], 'text': int32
[T], 'label', 'voice'}. Its class names are the 20 words (`WORDS`), so the contrastive task
reports zero-shot accuracy from the words as prompts (data.prompt_template '{}'). The same
text stands for every clip of a word: set task.match_key='label' so a clip's word counts
as its match. Data config fields: spoken_words' (data.builder_config, data.sample_rate,
data.audio_samples, data.time_shift) and data.max_len (T, bytes).
"""

import os

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bigjax.data import run_tokenizer
from bigjax.data.builders.spoken_words import WORDS
from bigjax.data.sets import speech
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import ByteTokenizer, train_bpe
from bigjax.data.transforms.caption import (
  CaptionImage,
  EncodeCaption,
  FirstCaption,
  PickCaption,
  RandomCaptionImage,
  WordCaption,
)
from bigjax.data.transforms.text import as_text

COCO = 'coco_captions'


def _coco_builder_class():
  """TFDS's CocoCaptions with NumPy feature dtypes (see the module docstring), made once and
  kept out of the TFDS registry (the name stays TFDS's, so its prepared files are found)."""
  from tensorflow_datasets.object_detection import coco_captions

  with tfds.core.registered.skip_registration():

    class CocoCaptions(coco_captions.CocoCaptions):
      name = COCO

      def _info(self):
        objects = {
          'id': np.int64,
          'area': np.int64,
          'bbox': tfds.features.BBoxFeature(),
          'label': tfds.features.ClassLabel(num_classes=80),
          'is_crowd': np.bool_,
        }
        features = {
          'image': tfds.features.Image(encoding_format='jpeg'),
          'image/filename': tfds.features.Text(),
          'image/id': np.int64,
          'objects': tfds.features.Sequence(objects),
          'captions': tfds.features.Sequence({'text': np.str_, 'id': np.int64}),
        }
        return tfds.core.DatasetInfo(
          builder=self, features=tfds.features.FeaturesDict(features), homepage=None
        )

  return CocoCaptions


_BUILDER = []


def _coco_source(split: str, data_dir: str | None):
  if not _BUILDER:
    _BUILDER.append(_coco_builder_class())
  try:
    builder = _BUILDER[0](data_dir=data_dir, file_format='array_record')
    return builder.as_data_source(split)
  except (AssertionError, FileNotFoundError, NotImplementedError, ValueError) as e:
    where = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
    raise FileNotFoundError(
      f'dataset {COCO!r} is not prepared in {where}: on a machine with network run `tfds '
      f'build {COCO} --data_dir={where} --file_format=array_record` (or copy a prepared copy '
      f'there), then pass --config.data.data_dir={where} ({type(e).__name__})'
    ) from None


def _open_coco(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  records = _coco_source(split, data_dir)
  if not data.get('tokenizer', None):
    train = records if split == 'train' else _coco_source('train', data_dir)

    def learn():
      index = run_tokenizer.sample_indices(len(train), data, 5_000)
      texts = (as_text(t) for i in index for t in train[int(i)]['captions']['text'])
      # '</s>' takes id 1, not 2: transformers reads a CLIP eos_token_id of 2 as its legacy
      # 'largest id' rule, so a model pooling at EOS 2 would have no Hugging Face form.
      specials = ('<pad>', '</s>', '<s>')
      return train_bpe(texts, int(data.get('vocab_size', 49408)), special_tokens=specials)

    run_tokenizer.ensure(data, COCO, learn)
  return records


def _coco_transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  size, max_len = data.get('image_size', 0), data.get('max_len', 0)
  if not size or not max_len:
    raise ValueError(
      f'the {COCO} dataset needs data.image_size (pixels) and data.max_len (text tokens)'
    )
  tokenizer = run_tokenizer.TokenizerFile.of(data, COCO)
  if train:
    return [PickCaption(), RandomCaptionImage(size), EncodeCaption(tokenizer, max_len)]
  return [FirstCaption(), CaptionImage(size), EncodeCaption(tokenizer, max_len)]


COCO_CAPTIONS = DatasetSpec(
  'contrastive',
  _open_coco,
  _coco_transforms,
  lambda data: run_tokenizer.load(data, COCO),
  eval_split='val',
)


def _spoken_words_text_transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  max_len = data.get('max_len', 0)
  if not max_len:
    raise ValueError('the spoken_words_text dataset needs data.max_len (bytes per word, e.g. 8)')
  words = [WordCaption(WORDS), EncodeCaption(ByteTokenizer(), max_len)]
  return speech.SPOKEN_WORDS.transforms(data, train) + words


SPOKEN_WORDS_TEXT = DatasetSpec(
  'contrastive',
  speech.SPOKEN_WORDS.open_split,
  _spoken_words_text_transforms,
  lambda data: ByteTokenizer(),
  class_names=lambda data: list(WORDS),
)
