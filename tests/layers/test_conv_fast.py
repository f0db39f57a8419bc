"""The CNN fast path (`conv_impl`): patches convolutions and slice max-pools equal XLA's."""

import functools
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


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _value_and_grads(f, x, w, strides, padding):
  # A fixed random cotangent, so the gradients see every output position differently.
  def loss(x, w):
    y = f(x, w, strides, padding)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))), y

  (_, y), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(x, w)
  return y, grads


@pytest.mark.parametrize('k', [1, 3, 7])
def test_patches_conv_matches_xla(k):
  """Values and both gradients, stride 1/2, torch-style / 'SAME' / 'VALID', odd and even."""
  for size, s, padding in itertools.product((7, 8), (1, 2), ('torch', 'SAME', 'VALID')):
    pad = tuple((k // 2, k // 2) for _ in range(2)) if padding == 'torch' else padding
    kx, kw = jax.random.split(jax.random.key(size * 10 + s))
    x = jax.random.normal(kx, (2, size, size + 1, 3))
    w = jax.random.normal(kw, (k, k, 3, 4))
    want, (want_dx, want_dw) = _value_and_grads(_xla_conv, x, w, (s, s), pad)
    got, (dx, dw) = _value_and_grads(_patches_conv, x, w, (s, s), pad)
    msg = f'k={k} size={size} stride={s} padding={padding}'
    assert got.shape == want.shape, msg
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=msg)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-4, err_msg=msg)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-4, err_msg=msg)


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


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _pool_grads(impl, x, window, strides, padding):
  # ReLU before the pool, as in ResNet's stem: its zeros are ties in the pooling windows.
  def loss(x):
    y = conv.max_pool(jax.nn.relu(x), window, strides, padding, conv_impl=impl)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))), y

  (_, y), dx = jax.value_and_grad(loss, has_aux=True)(x)
  return y, dx


def test_max_pool_slices_match_xla():
  cases = [
    ((3, 3), (2, 2), ((1, 1), (1, 1))),  # ResNet's stem pool, torch padding
    ((2, 2), (2, 2), 'VALID'),  # VGG, LeNet
    ((3, 3), (2, 2), 'SAME'),  # Inception with small_inputs
    ((3, 3), (1, 1), 'VALID'),
  ]
  for (window, strides, padding), size in itertools.product(cases, (7, 8)):
    # Shifted so that about half the inputs are negative: many all-zero windows after ReLU.
    x = jax.random.normal(jax.random.key(size), (2, size, size, 3)) - 0.3
    want, want_dx = _pool_grads('xla', x, window, strides, padding)
    got, dx = _pool_grads('patches', x, window, strides, padding)
    msg = f'window={window} strides={strides} padding={padding} size={size}'
    np.testing.assert_array_equal(got, want, err_msg=msg)
    # Ties after ReLU are zeros, whose ReLU gradient is zero either way: equal gradients.
    np.testing.assert_allclose(dx, want_dx, atol=1e-6, err_msg=msg)


def test_max_pool_ties_keep_the_total_gradient():
  """Exact ties between positive inputs: the gradient is split, its total is XLA's."""
  x = jnp.ones((1, 4, 4, 1)).at[0, 0, 0, 0].set(-1.0)
  for impl in ('xla', 'patches'):
    dx = jax.grad(lambda x: conv.max_pool(jax.nn.relu(x), (2, 2), (2, 2), conv_impl=impl).sum())(x)
    assert float(dx.sum()) == pytest.approx(4.0)  # one unit per pooled output
    assert float(dx[0, 0, 0, 0]) == 0.0


def _resnet_out(conv_impl, x, variables, dtype=jnp.float32):
  model = bigjax.create_model('resnet_test', cifar_stem=False, conv_impl=conv_impl, dtype=dtype)

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
  want = _resnet_out('xla', x, variables)
  for impl in ('patches', 'auto'):
    params = bigjax.create_model('resnet_test', cifar_stem=False, conv_impl=impl).init(
      jax.random.key(1), x
    )
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, variables)
    got = _resnet_out(impl, x, variables)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), got, want)
  with pytest.raises(ValueError, match='conv_impl'):
    bigjax.create_model('resnet_test', conv_impl='fast').init(jax.random.key(1), x)


def test_resnet_bfloat16_keeps_float32_statistics_and_logits():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  model = bigjax.create_model('resnet_test', cifar_stem=False)
  variables = model.init(jax.random.key(1), x)
  logits, _, updates = _resnet_out('auto', x, variables, dtype=jnp.bfloat16)
  want_logits, _, want_updates = _resnet_out('auto', x, variables)
  assert logits.dtype == jnp.float32
  for leaf in jax.tree.leaves(updates):
    assert leaf.dtype == jnp.float32
  np.testing.assert_allclose(logits, want_logits, rtol=0.1, atol=0.1)
  stem = ('batch_stats', 'stem_bn', 'mean')
  got_mean = updates[stem[0]][stem[1]][stem[2]]
  want_mean = want_updates[stem[0]][stem[1]][stem[2]]
  np.testing.assert_allclose(got_mean, want_mean, rtol=2e-2, atol=2e-3)
