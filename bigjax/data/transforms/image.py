"""Image preprocessing as per-record Grain transforms: uint8 [H, W, C] -> float32.

Data config fields used: `image_size` (0 keeps the stored size), `mean`, `std`
(per-channel, on the 0..1 scale), and for training-time augmentation:
  augment: 'none' (resize only) | 'crop_flip' (CIFAR style: pad by `crop_padding`, random
    crop back to size, horizontal flip) | 'inception' (ImageNet style: random-resized crop
    (Szegedy et al., 2015) + flip in training, resize + centre crop at evaluation).
  crop_padding: pixels of zero padding for 'crop_flip' (default 4).
  flip: horizontal flips on (default True; off for digits, whose mirror images differ).
Random transforms are `grain.transforms.RandomMap`s: Grain seeds them per record from the
pipeline seed and the record index, so a resumed run draws the same crops.
"""

import math

import grain
import ml_collections
import numpy as np


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of a float [H, W, C] image to [size, size, C] (numpy, no TF)."""
  h, w, _ = image.shape
  if (h, w) == (size, size):
    return image
  ys = (np.arange(size) + 0.5) * h / size - 0.5
  xs = (np.arange(size) + 0.5) * w / size - 0.5
  y0 = np.clip(np.floor(ys).astype(int), 0, h - 1)
  x0 = np.clip(np.floor(xs).astype(int), 0, w - 1)
  y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
  wy = np.clip(ys - y0, 0, 1)[:, None, None]
  wx = np.clip(xs - x0, 0, 1)[None, :, None]
  top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
  bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
  return top * (1 - wy) + bottom * wy


class ToFloat(grain.transforms.Map):
  """{'image': uint8 [H, W, C], 'label'} -> {'image': float32 normalised, 'label': int32}."""

  def __init__(self, image_size: int, mean, std):
    self.image_size = image_size
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)

  def map(self, element):
    image = np.asarray(element['image'], np.float32) / 255.0
    if image.ndim == 2:
      image = image[..., None]
    if self.image_size:
      image = _resize(image, self.image_size)
    image = (image - self.mean) / self.std
    return {'image': image.astype(np.float32), 'label': np.int32(element['label'])}


AUGMENTS = ('none', 'crop_flip', 'inception')
# Evaluation resizes the shorter side to image_size / 0.875 and takes the central crop
# (224 of 256, as in the ResNet and Inception evaluations).
CENTER_CROP_FRACTION = 0.875


def _as_float(image) -> np.ndarray:
  image = np.asarray(image, np.float32) / 255.0
  return image[..., None] if image.ndim == 2 else image


def _resize_hw(image: np.ndarray, h: int, w: int) -> np.ndarray:
  """Bilinear resize of a float [H, W, C] image to [h, w, C]; shrinking by more than 2x
  first box-averages, so large images are not aliased."""
  fy, fx = image.shape[0] // (2 * h), image.shape[1] // (2 * w)
  if fy > 1 or fx > 1:
    fy, fx = max(fy, 1), max(fx, 1)
    hh, ww = image.shape[0] // fy * fy, image.shape[1] // fx * fx
    image = image[:hh, :ww].reshape(hh // fy, fy, ww // fx, fx, -1).mean((1, 3))
  if image.shape[:2] == (h, w):
    return image
  if h == w:
    return _resize(image, h)
  ys = np.clip((np.arange(h) + 0.5) * image.shape[0] / h - 0.5, 0, image.shape[0] - 1)
  xs = np.clip((np.arange(w) + 0.5) * image.shape[1] / w - 0.5, 0, image.shape[1] - 1)
  y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
  y1 = np.minimum(y0 + 1, image.shape[0] - 1)
  x1 = np.minimum(x0 + 1, image.shape[1] - 1)
  wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
  top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
  bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
  return top * (1 - wy) + bottom * wy


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of a float [H, W, C] image so that its shorter side is `size`."""
  h, w = image.shape[:2]
  nh, nw = (
    (size, max(size, round(w * size / h))) if h <= w else (max(size, round(h * size / w)), size)
  )
  return _resize_hw(image, nh, nw)


def random_crop_box(
  h: int, w: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
  """(top, left, height, width) of a random-resized crop (Szegedy et al., 2015): area a
  uniform fraction `scale` of the image, aspect ratio log-uniform in `ratio`; after 10
  misses, the largest central crop with a ratio in range."""
  area = h * w
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw = int(round(math.sqrt(target * aspect)))
    ch = int(round(math.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
  aspect = w / h
  if aspect < ratio[0]:
    cw, ch = w, int(round(w / ratio[0]))
  elif aspect > ratio[1]:
    ch, cw = h, int(round(h * ratio[1]))
  else:
    ch, cw = h, w
  return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes the shorter side to size / 0.875, then takes the central size x size crop."""
  h, w = image.shape[:2]
  short = int(round(size / CENTER_CROP_FRACTION))
  nh, nw = (
    (short, max(size, round(w * short / h))) if h <= w else (max(size, round(h * short / w)), short)
  )
  image = _resize_hw(image, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return image[top : top + size, left : left + size]


class Normalize(grain.transforms.Map):
  """{'image': float [H, W, C] in 0..1, 'label'} -> normalised float32, int32 label."""

  def __init__(self, mean, std):
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)

  def map(self, element):
    image = (element['image'] - self.mean) / self.std
    return {'image': image.astype(np.float32), 'label': np.int32(element['label'])}


class Decode(grain.transforms.Map):
  """uint8 [H, W(, C)] -> float32 [H, W, C] in 0..1, resized to `image_size` if set."""

  def __init__(self, image_size: int = 0):
    self.image_size = image_size

  def map(self, element):
    image = _as_float(element['image'])
    if self.image_size:
      image = _resize_hw(image, self.image_size, self.image_size)
    return {'image': image, 'label': element['label']}


class CenterCrop(grain.transforms.Map):
  """Evaluation view of ImageNet-size images: resize + central crop to `image_size`."""

  def __init__(self, image_size: int):
    self.image_size = image_size

  def map(self, element):
    return {
      'image': center_crop(_as_float(element['image']), self.image_size),
      'label': element['label'],
    }


class RandomCropFlip(grain.transforms.RandomMap):
  """CIFAR augmentation: zero-pad by `padding`, random crop back to H x W, random flip."""

  def __init__(self, padding: int, flip: bool = True):
    self.padding = padding
    self.flip = flip

  def random_map(self, element, rng: np.random.Generator):
    image = element['image']
    h, w = image.shape[:2]
    p = self.padding
    if p:
      padded = np.pad(image, ((p, p), (p, p), (0, 0)))
      top, left = rng.integers(0, 2 * p + 1, size=2)
      image = padded[top : top + h, left : left + w]
    if self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    return {**element, 'image': np.ascontiguousarray(image)}


class RandomResizedCrop(grain.transforms.RandomMap):
  """ImageNet augmentation: random-resized crop to `image_size`, then a random flip."""

  def __init__(self, image_size: int, flip: bool = True):
    self.image_size = image_size
    self.flip = flip

  def random_map(self, element, rng: np.random.Generator):
    image = _as_float(element['image'])
    top, left, ch, cw = random_crop_box(image.shape[0], image.shape[1], rng)
    image = _resize_hw(image[top : top + ch, left : left + cw], self.image_size, self.image_size)
    if self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    return {'image': np.ascontiguousarray(image), 'label': element['label']}


def image_transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  """Per-record transforms for an image classification split."""
  augment = data.get('augment', 'none')
  if augment not in AUGMENTS:
    raise ValueError(f'unknown data.augment {augment!r}; choose one of {AUGMENTS}')
  size = data.get('image_size', 0)
  mean, std = data.get('mean', 0.0), data.get('std', 1.0)
  flip = data.get('flip', True)
  if augment == 'none':
    return [ToFloat(size, mean, std)]
  if augment == 'crop_flip':
    ops = [Decode(size)]
    if train:
      ops.append(RandomCropFlip(data.get('crop_padding', 4), flip))
    return ops + [Normalize(mean, std)]
  if not size:
    raise ValueError(
      "data.augment='inception' crops to a fixed size: set data.image_size "
      '(e.g. 224, or 299 for Inception v3)'
    )
  crop = RandomResizedCrop(size, flip) if train else CenterCrop(size)
  return [crop, Normalize(mean, std)]
