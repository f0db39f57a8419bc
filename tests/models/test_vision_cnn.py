"""VGG, ResNet and Inception v3 (test variants), image transforms.

Forward tests fill the variables from `jax.eval_shape(init)` with numpy draws: the models'
real `init` is tested once (ResNet), because compiling Inception's ~100 random draws takes
tens of seconds on 2 CPU cores while its forward pass compiles in a few.
"""

import chex
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import bigjax
from bigjax.data.pipeline import _apply
from bigjax.data.transforms import image as images
from bigjax.models import vgg
from bigjax.outputs import ModelOutput

# (model, overrides, image side)
TEST_MODELS = {
  'resnet': ('resnet_test', {}, 32),
  'resnet_bottleneck': ('resnet_test', {'block': 'bottleneck', 'cifar_stem': False}, 32),
  'vgg': ('vgg_test', {}, 16),
  'vgg_bn': ('vgg_test', {'batch_norm': True}, 16),
  'inception': ('inception_test', {}, 16),
}


def fake_variables(model, x, seed=0):
  """Variables with the structure of `model.init`, drawn with numpy (no init compile)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name in ('mean', 'bias'):
      return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
    if name in ('var', 'scale'):
      return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype)
    return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def images_batch(b, side, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, side, side, 3)), jnp.float32)


@pytest.fixture(scope='module', params=sorted(TEST_MODELS))
def built(request):
  name, overrides, side = TEST_MODELS[request.param]
  model = bigjax.create_model(name, **overrides)
  x = images_batch(4, side)
  return request.param, model, fake_variables(model, x), x


def test_shape_dtype_and_jit_equals_no_jit(built):
  _, model, variables, x = built
  eager = model.apply(variables, x)
  jitted = jax.jit(model.apply)(variables, x)
  chex.assert_shape(eager, (4, 10))
  chex.assert_type(jitted, jnp.float32)
  assert np.all(np.isfinite(eager))
  np.testing.assert_allclose(eager, jitted, atol=1e-5, rtol=1e-5)


def test_train_mode_differs_from_eval(built):
  key, model, variables, x = built
  has_bn = 'batch_stats' in variables
  train = jax.jit(
    lambda v, x, r: model.apply(v, x, train=True, rngs={'dropout': r}, mutable=['batch_stats'])
  )
  (out_a, state), (out_b, _) = (
    train(variables, x, jax.random.key(1)),
    train(variables, x, jax.random.key(2)),
  )
  evaluated = jax.jit(model.apply)(variables, x)
  if key == 'inception':  # the auxiliary head only in training
    assert isinstance(out_a, ModelOutput) and set(out_a.aux_logits) == {'aux'}
    chex.assert_shape(out_a.aux_logits['aux'], (4, 10))
    assert isinstance(evaluated, jax.Array)
    out_a, out_b = out_a.logits, out_b.logits
  chex.assert_shape(out_a, (4, 10))
  assert np.abs(out_a - evaluated).max() > 1e-3  # batch statistics or dropout
  if key.startswith('vgg'):  # dropout: another rng, another mask
    assert np.abs(out_a - out_b).max() > 1e-3
  if has_bn:  # running statistics move towards the batch statistics
    delta = jax.tree.map(
      lambda a, b: np.abs(a - b).max(), state['batch_stats'], variables['batch_stats']
    )
    assert min(jax.tree.leaves(delta)) > 0
  else:
    assert not state


def test_resnet_parameter_names_for_converters():
  """The names documented at the top of resnet.py (the HF converter relies on them)."""
  model = bigjax.create_model('resnet50')
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  p, s = shapes['params'], shapes['batch_stats']
  assert p['stem_conv']['kernel'].shape == (7, 7, 3, 64)
  assert set(p['stem_bn']) == {'scale', 'bias'} and set(s['stem_bn']) == {'mean', 'var'}
  assert [len(p[f'stage_{i}']) for i in range(4)] == [3, 4, 6, 3]
  block = p['stage_1']['block_0']
  assert set(block) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'downsample'}
  assert block['conv1']['kernel'].shape == (1, 1, 256, 128)
  assert block['conv2']['kernel'].shape == (3, 3, 128, 128)  # v1.5: the 3x3 is strided
  assert block['downsample']['conv']['kernel'].shape == (1, 1, 256, 512)
  assert 'downsample' not in p['stage_1']['block_1']
  assert p['head']['kernel'].shape == (2048, 1000)
  # Strides: 64 -> stem 32 -> pool 16 -> stages 16, 8, 4, 2.
  y = jax.eval_shape(
    lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=['intermediates']),
    shapes,
    jnp.zeros((1, 64, 64, 3)),
  )[1]['intermediates']
  assert y['stage_3']['__call__'][0].shape == (1, 2, 2, 2048)
  assert y['stage_1']['block_0']['conv2']['__call__'][0].shape == (1, 8, 8, 128)


def test_resnet_init_zero_init_residual_and_features():
  model = bigjax.create_model('resnet_test', zero_init_residual=True)
  x = images_batch(2, 32)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  for stage in ('stage_0', 'stage_1'):
    block = variables['params'][stage]['block_0']
    np.testing.assert_array_equal(block['bn2']['scale'], 0.0)
    np.testing.assert_array_equal(block['bn1']['scale'], 1.0)
  # Every residual branch is zero, so the first block passes its input through (relu'd).
  _, state = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
  inter = state['intermediates']
  stem = jax.nn.relu(inter['stem_bn']['__call__'][0])
  np.testing.assert_allclose(inter['stage_0']['__call__'][0], stem, atol=1e-6)
  chex.assert_shape(inter['features'][0], (2, 16))


def test_bn_statistics_are_global_over_the_mesh():
  """A jitted train step on 8 devices with the batch sharded on 'data' updates
  batch_stats exactly as on one device, which differs from averaging per-shard stats."""
  assert jax.device_count() >= 8, 'conftest sets 8 fake CPU devices'
  model = bigjax.create_model('resnet_test')
  # Each device's 2 examples get their own offset, so per-shard variances are too small.
  x = images_batch(16, 32) + jnp.repeat(jnp.arange(8.0), 2)[:, None, None, None]
  variables = fake_variables(model, x)

  def stats(v, x):
    return model.apply(v, x, train=True, mutable=['batch_stats'])[1]['batch_stats']

  one = jax.jit(stats)(variables, x)
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  xs = jax.device_put(x, NamedSharding(mesh, P('data')))
  vs = jax.device_put(variables, NamedSharding(mesh, P()))
  assert len(xs.sharding.device_set) == 8
  sharded = jax.jit(stats)(vs, xs)
  chex.assert_trees_all_close(sharded, one, atol=1e-6, rtol=0)
  per_shard = jax.jit(jax.vmap(stats, in_axes=(None, 0)))(variables, x.reshape(8, 2, 32, 32, 3))
  local = jax.tree.map(lambda a: a.mean(0), per_shard)
  gap = np.abs(local['stem_bn']['var'] - one['stem_bn']['var']).max()
  assert gap > 1e-2
  # The means of equal shards do average to the global mean, at the first layer.
  np.testing.assert_allclose(local['stem_bn']['mean'], one['stem_bn']['mean'], atol=1e-5)


def test_vgg_adaptive_pool_matches_torch():
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(0)
  for size, out in ((7, 7), (1, 7), (9, 7), (5, 3), (14, 7)):
    x = rng.normal(size=(2, size, size + 1, 3)).astype(np.float32)
    got = vgg.adaptive_avg_pool(jnp.asarray(x), out)
    ref = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), out)
    np.testing.assert_allclose(got, ref.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def test_small_inputs_are_rejected_with_a_hint():
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match='small_inputs'):
    jax.eval_shape(bigjax.create_model('inception_v3').init, jax.random.key(0), x)
  with pytest.raises(ValueError, match='at least 32x32'):
    jax.eval_shape(bigjax.create_model('vgg16').init, jax.random.key(0), x[:, :16, :16])
  # CIFAR-size inputs work for VGG-16 and ResNet-50 (with the CIFAR stem).
  for name, kw in (('vgg16', {}), ('resnet50', {'cifar_stem': True})):
    model = bigjax.create_model(name, num_classes=10, **kw)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    chex.assert_shape(jax.eval_shape(model.apply, shapes, x), (1, 10))


# --- image transforms ----------------------------------------------------------------------


def data_config(**kw):
  base = dict(
    image_size=0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment='none', crop_padding=4
  )
  return ml_collections.ConfigDict({**base, **kw})


def run(transforms, records, seed=0):
  ds = grain.MapDataset.source(records).seed(seed)
  ds = _apply(ds, transforms)
  return [ds[i] for i in range(len(records))]


def unique_image(h=32, w=32):
  """uint8 image whose pixels (over 3 channels) identify their position."""
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([y * 7 % 256, x * 7 % 256, (y + x) % 256], -1).astype(np.uint8)


def test_crop_flip_shapes_bounds_and_flip():
  image = unique_image()
  records = [{'image': image, 'label': 1}] * 48
  out = run(
    [images.RandomCropFlip(padding=4)], [{'image': image.astype(np.float32), 'label': 1}] * 48
  )
  padded = np.pad(image.astype(np.float32), ((4, 4), (4, 4), (0, 0)))
  flips, offsets = 0, set()
  for e in out:
    assert e['image'].shape == (32, 32, 3)
    found = None
    for flipped in (False, True):
      for top in range(9):
        for left in range(9):
          window = padded[top : top + 32, left : left + 32]
          if np.array_equal(e['image'], window[:, ::-1] if flipped else window):
            found = (flipped, top, left)
    assert found is not None, 'output is not a (flipped) window of the padded image'
    flips += found[0]
    offsets.add(found[1:])
  assert 0 < flips < 48 and len(offsets) > 10
  # Through image_transforms: normalised, float32, eval is the identity crop.
  train = run(images.image_transforms(data_config(augment='crop_flip'), True), records)
  evaluated = run(images.image_transforms(data_config(augment='crop_flip'), False), records)
  chex.assert_shape(train[0]['image'], (32, 32, 3))
  assert train[0]['image'].dtype == np.float32 and train[0]['label'].dtype == np.int32
  np.testing.assert_allclose(evaluated[0]['image'], (image / 255.0 - 0.5) / 0.25, atol=1e-6)


def test_flip_without_padding_mirrors():
  image = unique_image(8, 12).astype(np.float32)
  out = run([images.RandomCropFlip(padding=0)], [{'image': image, 'label': 0}] * 16)
  mirrored = [np.array_equal(e['image'], image[:, ::-1]) for e in out]
  same = [np.array_equal(e['image'], image) for e in out]
  assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)
  out = run([images.RandomCropFlip(padding=0, flip=False)], [{'image': image, 'label': 0}] * 8)
  assert all(np.array_equal(e['image'], image) for e in out)


def test_transforms_are_deterministic_per_seed():
  records = [{'image': unique_image(40, 50), 'label': i % 10} for i in range(8)]
  for augment, size in (('crop_flip', 0), ('inception', 24)):
    ts = images.image_transforms(data_config(augment=augment, image_size=size), True)
    a, b, c = run(ts, records, seed=3), run(ts, records, seed=3), run(ts, records, seed=4)
    assert all(np.array_equal(x['image'], y['image']) for x, y in zip(a, b))
    assert not all(np.array_equal(x['image'], y['image']) for x, y in zip(a, c))


def test_random_resized_crop_box_bounds():
  rng = np.random.default_rng(0)
  for h, w in ((100, 60), (32, 32), (20, 200)):
    for _ in range(200):
      top, left, ch, cw = images.random_crop_box(h, w, rng)
      assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
      centred = (top, left) == ((h - ch) // 2, (w - cw) // 2)  # the fallback after 10 misses
      assert ch * cw >= 0.07 * h * w or centred
  out = run(
    images.image_transforms(data_config(augment='inception', image_size=24), True),
    [{'image': unique_image(40, 60), 'label': 2}] * 4,
  )
  assert all(e['image'].shape == (24, 24, 3) for e in out)


def test_center_crop():
  # Value = column position: the central crop is symmetric around the middle column.
  h, w = 40, 80
  image = np.broadcast_to((np.arange(w) * 255 / (w - 1))[None, :, None], (h, w, 3))
  out = run(
    images.image_transforms(data_config(augment='inception', image_size=28), False),
    [{'image': image.astype(np.uint8), 'label': 0}],
  )[0]['image']
  chex.assert_shape(out, (28, 28, 3))
  raw = out * 0.25 + 0.5
  np.testing.assert_allclose(raw[:, 0] + raw[:, -1], 1.0, atol=0.02)
  # Shorter side 28 / 0.875 = 32, longer 64: the crop spans the central 28/64 of the width.
  np.testing.assert_allclose(raw[0, -1] - raw[0, 0], 27 / 64, atol=0.03)
  squares = images.center_crop(np.ones((50, 50, 1), np.float32), 16)
  chex.assert_shape(squares, (16, 16, 1))


def test_digits_are_upsampled():
  record = {'image': np.arange(64, dtype=np.uint8).reshape(8, 8, 1), 'label': 3}
  out = run(
    images.image_transforms(
      data_config(image_size=32, mean=(0.3,), std=(0.4,), augment='crop_flip', flip=False), True
    ),
    [record],
  )[0]
  chex.assert_shape(out['image'], (32, 32, 1))
  with pytest.raises(ValueError, match='augment'):
    images.image_transforms(data_config(augment='autoaugment'), True)
