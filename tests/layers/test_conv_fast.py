"""The CNN fast path (`conv_impl`): patches convolutions and slice max-pools equal XLA's."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import bigjax
from bigjax.layers import conv

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _xla_conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


def _patches_conv(x, w, strides, padding):
  return conv.patches_conv(x, w, strides, padding)


def _weighted_sum(y):
  # A fixed cotangent, so the gradients see every output position differently.
  return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)))


# The image is 7x8 (odd height, even width), so each case covers both parities.
CONV_CASES = [
  *itertools.product((1, 3, 7), (1, 2), ('torch', 'SAME')),
  (3, 2, 'VALID'),
  (7, 1, 'VALID'),
]


@jax.jit
def _all_convs(x, ws):
  """(value, dx, dw) of every case for both paths, in one compilation."""
  out = []
  for (k, s, padding), w in zip(CONV_CASES, ws):
    pad = ((k // 2, k // 2),) * 2 if padding == 'torch' else padding
    for f in (_xla_conv, _patches_conv):
      loss = lambda x, w: _weighted_sum(f(x, w, (s, s), pad))  # noqa: E731
      out.append((f(x, w, (s, s), pad), *jax.grad(loss, (0, 1))(x, w)))
  return out


def test_patches_conv_matches_xla():
  """Values and both gradients: kernels 1/3/7, stride 1/2, torch-style / 'SAME' / 'VALID'
  padding, odd and even sizes."""
  x = jax.random.normal(jax.random.key(0), (2, 7, 8, 3))
  keys = jax.random.split(jax.random.key(1), len(CONV_CASES))
  ws = [jax.random.normal(key, (k, k, 3, 4)) for key, (k, *_) in zip(keys, CONV_CASES)]
  out = _all_convs(x, ws)
  for i, case in enumerate(CONV_CASES):
    want, got = out[2 * i], out[2 * i + 1]
    for name, a, b in zip(('value', 'dx', 'dw'), got, want):
      assert a.shape == b.shape, (case, name)
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=f'{case} {name}')


def test_conv_fn_is_a_drop_in_for_nn_conv():
  """Through nn.Conv: same parameters, same output; unsupported cases fall back to lax."""
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3))
  plain = nn.Conv(4, (3, 3), (2, 2), padding='SAME')
  fast = nn.Conv(
    4, (3, 3), (2, 2), padding='SAME', conv_general_dilated=conv.conv_general_dilated('patches')
  )
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, fast.init(jax.random.key(1), x)) == jax.tree.map(
    jnp.shape, variables
  )
  np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), atol=1e-5)
  # Kernel dilation is not on the patches path: it must still give lax's answer.
  dil = dict(kernel_dilation=(2, 2), padding='SAME')
  fast_dil = nn.Conv(4, (3, 3), conv_general_dilated=conv.conv_general_dilated('patches'), **dil)
  v = nn.Conv(4, (3, 3), **dil).init(jax.random.key(1), x)
  np.testing.assert_allclose(fast_dil.apply(v, x), nn.Conv(4, (3, 3), **dil).apply(v, x), atol=1e-5)
  with pytest.raises(ValueError, match='conv_impl'):
    conv.conv_general_dilated('cudnn')


POOL_CASES = [
  ((3, 3), (2, 2), ((1, 1), (1, 1))),  # ResNet's stem pool, torch padding
  ((2, 2), (2, 2), 'VALID'),  # VGG, LeNet
  ((3, 3), (2, 2), 'SAME'),  # Inception with small_inputs
  ((3, 3), (1, 1), 'VALID'),
]


@jax.jit
def _all_pools(x):
  out = []
  for window, strides, padding in POOL_CASES:
    for impl in ('xla', 'patches'):
      # ReLU before the pool, as in ResNet's stem: its zeros are ties in the windows.
      f = lambda x: conv.max_pool(jax.nn.relu(x), window, strides, padding, conv_impl=impl)  # noqa: E731,B023
      out.append((f(x), jax.grad(lambda x: _weighted_sum(f(x)))(x)))  # noqa: B023
  return out


def test_max_pool_slices_match_xla():
  # Shifted so that about half the inputs are negative: many all-zero windows after ReLU.
  x = jax.random.normal(jax.random.key(0), (2, 7, 8, 3)) - 0.3
  out = _all_pools(x)
  for i, case in enumerate(POOL_CASES):
    (want, want_dx), (got, dx) = out[2 * i], out[2 * i + 1]
    np.testing.assert_array_equal(got, want, err_msg=str(case))
    # Ties after ReLU are zeros, whose ReLU gradient is zero either way: equal gradients.
    np.testing.assert_allclose(dx, want_dx, atol=1e-6, err_msg=str(case))


def test_max_pool_ties_keep_the_total_gradient():
  """Exact ties between positive inputs: the gradient is split, its total is XLA's."""
  x = jnp.ones((1, 4, 4, 1)).at[0, 0, 0, 0].set(-1.0)
  for impl in ('xla', 'patches'):
    dx = jax.grad(lambda x: conv.max_pool(jax.nn.relu(x), (2, 2), (2, 2), conv_impl=impl).sum())(x)
    assert float(dx.sum()) == pytest.approx(4.0)  # one unit per pooled output
    assert float(dx[0, 0, 0, 0]) == 0.0


def _resnet_out(conv_impl, x, variables):
  model = bigjax.create_model('resnet_test', cifar_stem=False, conv_impl=conv_impl)

  def loss(params):
    logits, updates = model.apply(
      {**variables, 'params': params}, x, train=True, mutable=['batch_stats']
    )
    return jnp.sum(logits * jnp.arange(10.0)), (logits, updates)

  (_, (logits, updates)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
    variables['params']
  )
  return logits, grads, updates


def test_resnet_conv_impls_agree():
  """ImageNet stem (strided 7x7 and the max-pool), strided blocks, 1x1 shortcut: same
  parameter tree, logits, gradients and batch statistics for every conv_impl."""
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  model = bigjax.create_model('resnet_test', cifar_stem=False, conv_impl='xla')
  variables = model.init(jax.random.key(1), x)
  fast = bigjax.create_model('resnet_test', cifar_stem=False, conv_impl='patches')
  shapes = jax.eval_shape(fast.init, jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, variables)
  got, want = _resnet_out('patches', x, variables), _resnet_out('xla', x, variables)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), got, want)
  with pytest.raises(ValueError, match='conv_impl'):
    bigjax.create_model('resnet_test', conv_impl='fast').init(jax.random.key(1), x)


def test_resnet_bfloat16_keeps_float32_statistics_and_logits():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  variables = bigjax.create_model('resnet_test').init(jax.random.key(1), x)

  @jax.jit
  def forward(variables, x):
    out = []
    for dtype in (jnp.bfloat16, jnp.float32):
      model = bigjax.create_model('resnet_test', dtype=dtype)
      out.append(model.apply(variables, x, train=True, mutable=['batch_stats']))
    return out

  (logits, updates), (want_logits, want_updates) = forward(variables, x)
  assert logits.dtype == jnp.float32
  for leaf in jax.tree.leaves(updates):
    assert leaf.dtype == jnp.float32
  np.testing.assert_allclose(logits, want_logits, rtol=0.1, atol=0.1)
  stem = ('batch_stats', 'stem_bn', 'mean')
  got_mean = updates[stem[0]][stem[1]][stem[2]]
  want_mean = want_updates[stem[0]][stem[1]][stem[2]]
  np.testing.assert_allclose(got_mean, want_mean, rtol=2e-2, atol=2e-3)
