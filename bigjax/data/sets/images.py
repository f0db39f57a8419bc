"""Image classification data sets: the offline `digits`, public TFDS ones, ImageNet-1k.

ImageNet-1k (ILSVRC 2012) comes from TFDS `imagenet2012`, read without TensorFlow: TFDS
stores the images as JPEG bytes and `tfds.data_source` decodes them with Pillow
(`tfds.features.Image.decode_example_np`, OpenCV if installed). Records are {'image':
uint8 [H, W, 3] of any size, 'label': int64, 'file_name'}; `image_transforms` crops them
to `data.image_size` (`data.augment='inception'`: random-resized crops in training,
resize + centre crop at evaluation). Its evaluation split is 'validation' (50,000 images).
"""

import ml_collections

from bigjax.data.builders.digits import Digits
from bigjax.data.builders.prepare import open_prepared
from bigjax.data.sources import open_public
from bigjax.data.spec import DatasetSpec
from bigjax.data.transforms.image import image_transforms

IMAGENET = 'imagenet2012'


def _digits_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  del data
  return open_prepared(Digits, split, data_dir)


def public(name: str, eval_split: str = 'test', manual: str = '') -> DatasetSpec:
  """The spec of a public TFDS image data set, which must already be prepared."""

  def open_split(split, data_dir, data):
    del data
    return open_public(name, split, data_dir, manual)

  return DatasetSpec('classification', open_split, image_transforms, eval_split=eval_split)


DIGITS = DatasetSpec('classification', _digits_split, image_transforms)
IMAGENET2012 = public(
  IMAGENET, 'validation', manual='ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar'
)
