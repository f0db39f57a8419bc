"""Paired examples for contrastive training (CLIP): a text as token ids beside an image or
a sound, as per-record Grain transforms.

Legend: T text length (`data.max_len`), S image side (`data.image_size`).

A text is encoded as CLIP's tokenizer encodes it: [BOS] text [EOS], each only when the
tokenizer has it, cut to T (the EOS kept) and padded after the end with the tokenizer's pad
id (0 when it has none). With a Hugging Face CLIP folder's tokenizer this gives
transformers' `input_ids` (its pad id is the EOS); the byte tokenizer has no BOS or EOS, so
a model reading it pools at the last byte (`text_pool='last'`). Zero-shot prompts are
encoded by the same function (`encode_caption`), so prompts and training texts agree.
"""

import grain
import numpy as np

from bigjax.data.tokenizers import Tokenizer
from bigjax.data.transforms.image import resize_shorter_side
from bigjax.data.transforms.text import as_text
from bigjax.vocab import PAD_ID

# OpenAI CLIP's pixel statistics (RGB, on the 0..1 scale), as its image processor uses them.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def encode_caption(tokenizer: Tokenizer, text, max_len: int) -> np.ndarray:
  """text (str or bytes) -> int32 [max_len]: [BOS] ids [EOS], padded (see the module
  docstring)."""
  if max_len < 2:
    raise ValueError(f'data.max_len must be at least 2 tokens, got {max_len}')
  ids = [int(i) for i in tokenizer.encode(as_text(text))]
  bos, eos = tokenizer.bos_id, tokenizer.eos_id
  if bos is not None and ids[:1] != [bos]:
    ids = [bos, *ids]
  tail = [eos] if eos is not None else []
  ids = ids[: max_len - len(tail)] + tail
  pad = tokenizer.pad_id if tokenizer.pad_id is not None else PAD_ID
  return np.asarray(ids + [pad] * (max_len - len(ids)), np.int32)


def encode_prompts(tokenizer: Tokenizer, prompts, max_len: int) -> np.ndarray:
  """[K] prompt strings -> int32 [K, max_len]."""
  return np.stack([encode_caption(tokenizer, p, max_len) for p in prompts])


class EncodeCaption(grain.transforms.Map):
  """element['caption'] (a string) -> element['text'] int32 [T]; the caption is dropped.

  `tokenizer`: a Tokenizer, or a `run_tokenizer.TokenizerFile` (each Grain worker then reads
  the file itself)."""

  def __init__(self, tokenizer, max_len: int):
    self.source = tokenizer
    self.max_len = int(max_len)

  def map(self, element):
    element = dict(element)
    caption = element.pop('caption')
    tokenizer = getattr(self.source, 'tokenizer', self.source)
    return {**element, 'text': encode_caption(tokenizer, caption, self.max_len)}


class WordCaption(grain.transforms.Map):
  """A labelled example gains the text of its class: element['caption'] =
  template.format(names[label]) (spoken words: the written word)."""

  def __init__(self, names, template: str = '{}'):
    self.names = tuple(names)
    self.template = template

  def map(self, element):
    return {**element, 'caption': self.template.format(self.names[int(element['label'])])}


def _first_or_random(texts, rng: np.random.Generator | None):
  if not len(texts):
    raise ValueError('an image has no caption: every coco_captions record should have some')
  return texts[int(rng.integers(len(texts))) if rng is not None else 0]


class PickCaption(grain.transforms.RandomMap):
  """Training: COCO-style records ({'image', 'captions': {'text': [n]}}) -> {'image',
  'caption'}, a random one of the image's captions (drawn anew each epoch)."""

  def random_map(self, element, rng: np.random.Generator):
    return {
      'image': element['image'],
      'caption': _first_or_random(element['captions']['text'], rng),
    }


class FirstCaption(grain.transforms.Map):
  """Evaluation: as `PickCaption`, with the first caption (one fixed pair per image)."""

  def map(self, element):
    return {
      'image': element['image'],
      'caption': _first_or_random(element['captions']['text'], None),
    }


def caption_image(image, size: int, rng: np.random.Generator | None, mean, std) -> np.ndarray:
  """uint8 [H, W(, C)] -> float32 [S, S, 3] normalised: the shorter side resized to S, then
  a random S x S crop (given `rng`: CLIP's only augmentation, section 2.5) or the central
  one (CLIP's image processor)."""
  image = np.asarray(image, np.float32) / 255.0
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)  # a grey image of a colour data set
  image = resize_shorter_side(image, size)
  h, w = image.shape[:2]
  if rng is not None:
    top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
  else:
    top, left = (h - size) // 2, (w - size) // 2
  image = image[top : top + size, left : left + size]
  image = (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  return np.ascontiguousarray(image, np.float32)


class RandomCaptionImage(grain.transforms.RandomMap):
  """Training view of element['image'] (`caption_image` with a random crop)."""

  def __init__(self, size: int, mean=CLIP_MEAN, std=CLIP_STD):
    self.size, self.mean, self.std = int(size), mean, std

  def random_map(self, element, rng: np.random.Generator):
    return {
      **element,
      'image': caption_image(element['image'], self.size, rng, self.mean, self.std),
    }


class CaptionImage(grain.transforms.Map):
  """Evaluation view of element['image'] (`caption_image`, central crop)."""

  def __init__(self, size: int, mean=CLIP_MEAN, std=CLIP_STD):
    self.size, self.mean, self.std = int(size), mean, std

  def map(self, element):
    return {
      **element,
      'image': caption_image(element['image'], self.size, None, self.mean, self.std),
    }
