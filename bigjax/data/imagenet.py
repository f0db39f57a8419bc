"""ImageNet-1k (ILSVRC 2012) from TFDS `imagenet2012`, read without TensorFlow.

TFDS stores the images as JPEG bytes; `tfds.data_source` decodes them with Pillow
(`tfds.features.Image.decode_example_np`, OpenCV if installed), so the pipeline needs
no TensorFlow. Records are {'image': uint8 [H, W, 3] of any size, 'label': int64,
'file_name'}; `bigjax.data.images.image_transforms` crops them to `data.image_size`
(`data.augment='inception'`: random-resized crops in training, resize + centre crop at
evaluation). The evaluation split is 'validation' (50,000 images).
"""

import ml_collections

from bigjax.data import images
from bigjax.data.datasets import DatasetSpec, open_public, register_dataset

NAME = 'imagenet2012'


def open_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  """A random-access source over a prepared `imagenet2012` split."""
  del data
  return open_public(
    NAME, split, data_dir, manual='ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar'
  )


register_dataset(
  NAME,
  DatasetSpec(
    'classification',
    open_split,
    images.image_transforms,
    train_split='train',
    eval_split='validation',
  ),
)
