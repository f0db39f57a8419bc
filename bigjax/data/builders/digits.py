"""TFDS builder for the 1,797 8x8 handwritten digits that ship inside scikit-learn.

The data is the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin &
Kaynak, 1998), 16 grey levels, bundled with scikit-learn, so it is on every machine.
Features are TF-free (uint8 Tensor, ClassLabel) so the builder prepares to ArrayRecord and
reads back through `as_data_source` without TensorFlow.
"""

import numpy as np
import tensorflow_datasets as tfds

TEST_FRACTION = 0.2  # 1,438 train / 359 test
SPLIT_SEED = 0


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 digits as a TFDS dataset with a fixed train/test split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Fixed 80/20 split drawn with seed 0.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description='scikit-learn load_digits: 8x8 grey images scaled to 0..255.',
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
          'label': tfds.features.ClassLabel(num_classes=10),
        }
      ),
      supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the data ships with scikit-learn
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    n_test = int(round(len(images) * TEST_FRACTION))
    parts = {'test': order[:n_test], 'train': np.sort(order[n_test:])}
    return {
      split: self._generate_examples(images[idx], data.target[idx], idx)
      for split, idx in parts.items()
    }

  def _generate_examples(self, images, labels, ids):
    for image, label, i in zip(images, labels, ids):
      yield int(i), {'image': image, 'label': int(label)}
