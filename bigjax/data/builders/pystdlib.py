"""TFDS builder over the Python standard library's own `.py` sources (a byte corpus).

Every machine that runs bigjax has these files. Tests, `site-packages` and `idlelib`'s
tests are excluded. The split is by file and fixed: a file goes to validation when the
CRC32 of its path relative to the stdlib root is divisible by 20 (about 5% of files), so
it does not depend on the order files are listed in.
"""

import os
import sysconfig
import zlib

import numpy as np
import tensorflow_datasets as tfds

_EXCLUDED_DIRS = {'test', 'tests', 'idle_test', 'site-packages', '__pycache__'}


def stdlib_files(root: str | None = None) -> list[str]:
  """Sorted relative paths of the stdlib's .py files, tests excluded."""
  root = root or sysconfig.get_paths()['stdlib']
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS)
    for name in filenames:
      if name.endswith('.py') and not name.startswith('test_'):
        found.append(os.path.relpath(os.path.join(dirpath, name), root))
  return sorted(found)


def is_validation(relpath: str) -> bool:
  return zlib.crc32(relpath.replace(os.sep, '/').encode()) % 20 == 0


class Pystdlib(tfds.core.GeneratorBasedBuilder):
  """One example per stdlib source file: its relative path and its bytes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Split by CRC32(path) % 20 == 0 -> validation.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description='Python standard library sources, byte level.',
      features=tfds.features.FeaturesDict(
        {
          'path': tfds.features.Text(),
          'bytes': tfds.features.Tensor(shape=(None,), dtype=np.uint8),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    root = sysconfig.get_paths()['stdlib']
    files = stdlib_files(root)
    return {
      'train': self._generate_examples(root, [f for f in files if not is_validation(f)]),
      'validation': self._generate_examples(root, [f for f in files if is_validation(f)]),
    }

  def _generate_examples(self, root, files):
    for rel in files:
      with open(os.path.join(root, rel), 'rb') as f:
        data = f.read()
      yield rel, {'path': rel, 'bytes': np.frombuffer(data, np.uint8)}
