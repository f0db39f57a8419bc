"""The vision CNN configs run end to end with their `test` argument: ResNet-18 on the
offline digits, and CIFAR-10 / ImageNet configs under `tfds.testing.mock_data`."""

import ast
import io
import json
import math
import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigjax.data.datasets import dataset_spec
from bigjax.train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOCKED = ['resnet18_cifar10', 'vgg16_cifar10', 'resnet50_imagenet2012', 'inception_v3_imagenet2012']


def _load(name, arg=None):
  config, _ = cli.load_config(
    os.path.join(ROOT, 'configs', f'{name}.py') + (f':{arg}' if arg else '')
  )
  return config


def _check_run(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == 6  # the test configs train 6 steps
  assert all(math.isfinite(r['loss']) for r in records)
  assert 0.0 <= evals[-1]['accuracy'] <= 1.0
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']


@pytest.mark.slow
def test_resnet18_digits(tmp_path, data_dir):
  config = os.path.join(ROOT, 'configs', 'resnet18_digits.py')
  rc = cli.main(
    ['--config', f'{config}:test', '--workdir', str(tmp_path), f'--config.data.data_dir={data_dir}']
  )
  assert rc == 0
  _check_run(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('name', MOCKED)
def test_mocked_public_configs(name, tmp_path):
  config = os.path.join(ROOT, 'configs', f'{name}.py')
  with tfds.testing.mock_data(num_examples=64):
    rc = cli.main(['--config', f'{config}:test', '--workdir', str(tmp_path)])
  assert rc == 0
  _check_run(tmp_path)


@pytest.mark.parametrize('name', ['resnet18_digits'] + MOCKED)
def test_configs_are_complete(name):
  full, small = _load(name), _load(name, 'test')
  for c in (full, small):
    for section in ('seed', 'model', 'data', 'optim', 'schedule', 'train', 'mesh'):
      assert section in c
    assert c.data.augment in ('crop_flip', 'inception')
  assert small.train.steps < full.train.steps
  with open(os.path.join(ROOT, 'configs', f'{name}.py')) as f:
    doc = ast.get_docstring(ast.parse(f.read()))
  assert 'Command: python train.py --config configs/' in doc and 'Expected' in doc
  with pytest.raises(ValueError, match='test'):
    _load(name, 'tset')


def test_resnet50_recipe():
  c = _load('resnet50_imagenet2012')
  assert c.optim.name == 'momentum' and c.optim.momentum == 0.9  # nesterov off
  assert c.optim.lr == pytest.approx(0.1 * c.train.batch_size / 256)
  steps_per_epoch = 1_281_167 // c.train.batch_size
  assert c.schedule.name == 'cosine' and c.schedule.warmup_steps == 5 * steps_per_epoch
  assert c.optim.weight_decay == 1e-4 and c.train.label_smoothing == 0.1
  assert (c.data.mixup_alpha, c.data.cutmix_alpha) == (0.0, 0.0)
  assert _load('inception_v3_imagenet2012').train.aux_loss_weight == 0.4


def test_imagenet_images_decode_without_tensorflow():
  """The real imagenet2012 records are JPEG bytes: TFDS decodes them with Pillow."""
  pil = pytest.importorskip('PIL.Image')
  y, x = np.mgrid[0:24, 0:40]
  image = np.stack([y * 10, x * 6, (x + y) * 4], -1).astype(np.uint8)  # smooth
  buffer = io.BytesIO()
  pil.fromarray(image).save(buffer, format='JPEG', quality=95)
  feature = tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg')
  decoded = feature.decode_example_np(buffer.getvalue())
  assert decoded.shape == (24, 40, 3) and decoded.dtype == np.uint8
  assert np.abs(decoded.astype(int) - image).mean() < 3
  assert 'tensorflow' not in sys.modules


def test_imagenet_not_prepared_says_what_to_do(tmp_path):
  spec = dataset_spec('imagenet2012')
  assert (spec.task, spec.eval_split) == ('classification', 'validation')
  with pytest.raises(FileNotFoundError, match='downloads/manual'):
    spec.open_split('train', str(tmp_path), None)


@pytest.mark.parametrize(
  'name,model,side',
  [('resnet50_imagenet2012', 'resnet_test', 32), ('vit_b16_imagenet2012', 'vit_test', 32)],
)
def test_weight_decay_follows_the_recipes(name, model, side):
  """ResNet (Goyal et al. 2017; He et al. 2019's "no bias decay") and ViT / DeiT decay
  conv, dense and attention kernels only: no BN, LayerNorm, bias, class token or position
  embedding."""
  import jax
  import jax.numpy as jnp

  import bigjax
  from bigjax.train import optim

  c = _load(name)
  assert c.optim.weight_decay > 0
  net = bigjax.create_model(model)
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))
  mask = optim.decay_mask(shapes['params'], c.optim.decay_pattern or optim.DEFAULT_DECAY_PATTERN)
  leaves = jax.tree_util.tree_leaves_with_path(mask)
  decayed = {optim.param_path(p) for p, m in leaves if m}
  kept = {optim.param_path(p) for p, m in leaves if not m}
  assert decayed and all(p.endswith('/kernel') for p in decayed)
  assert not any(p.endswith('/kernel') for p in kept)
  if model == 'vit_test':
    assert {'cls', 'pos_embed/embedding'} <= kept
