"""Image preprocessing as per-record Grain transforms: uint8 [H, W, C] -> float32.

Data config fields used: `image_size` (0 keeps the stored size), `mean`, `std`
(per-channel, on the 0..1 scale).
"""

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


def image_transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  """Per-record transforms for an image classification split."""
  del train  # augmentation is added by the vision pipeline
  return [ToFloat(data.get('image_size', 0), data.get('mean', 0.0), data.get('std', 1.0))]
