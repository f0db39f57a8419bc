"""Test set-up: 8 fake CPU devices, set before jax is imported."""

import os
import pathlib

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `from configs import common`, as train.py does


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """One TFDS data_dir for the whole session, so each builder prepares once."""
  return str(tmp_path_factory.mktemp('tfds'))


def _snapshot(path):
  """Everything under `path`: {file: its bytes, folder: 'dir'}; None if it does not exist."""
  if not os.path.exists(path):
    return None
  found = {}
  for dirpath, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(dirpath, name)
      found[full] = pathlib.Path(full).read_bytes() if os.path.isfile(full) else 'dir'
  return found


@pytest.fixture
def snapshot():
  """`snapshot(path)`: compare before and after to show a command left a folder untouched."""
  return _snapshot


@pytest.fixture(scope='session')
def speech_run(tmp_path_factory, data_dir):
  """A tiny trained speech classifier: configs/speech_cnn_spoken_words.py:test (6 steps on
  the 'small' spoken_words, prepared in the session's data_dir). Needs the `audio` extra."""
  pytest.importorskip('espeakng_loader')
  from bigjax.train import cli

  workdir = str(tmp_path_factory.mktemp('speech_run'))
  config = os.path.join(ROOT, 'configs', 'speech_cnn_spoken_words.py')
  argv = ['--config', f'{config}:test', '--workdir', workdir, f'--config.data.data_dir={data_dir}']
  assert cli.main(argv) == 0
  return workdir
