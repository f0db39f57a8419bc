"""Vision Transformer: shapes, published parameter counts, jit, dropout, mixed precision."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax


def _images(batch=2, size=32):
  return jax.random.normal(jax.random.key(0), (batch, size, size, 3))


def _count(variables):
  return sum(x.size for x in jax.tree.leaves(variables['params']))


def _init(model, x, seed=1):
  """Random variables of the shapes `model.init` builds (skips compiling the initialisers)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype), shapes)


@pytest.fixture(scope='module')
def test_variables():
  return _init(bigjax.create_model('vit_test'), _images())


@pytest.mark.parametrize('pool', ['cls', 'mean'])
def test_output_shapes(pool):
  model = bigjax.create_model('vit_test', pool=pool)
  x = _images()
  variables = _init(model, x)
  # 32x32 images in 4x4 patches: 64 tokens, plus the class token with pool='cls'.
  tokens = 64 + (pool == 'cls')
  chex.assert_shape(variables['params']['pos_embed']['embedding'], (tokens, 32))
  assert ('cls' in variables['params']) == (pool == 'cls')
  logits, state = model.apply(variables, x, mutable=['intermediates'])
  chex.assert_shape(logits, (2, 10))
  chex.assert_type(logits, jnp.float32)
  chex.assert_shape(state['intermediates']['features'][0], (2, 32))
  features = bigjax.create_model('vit_test', pool=pool, num_classes=0).apply(variables, x)
  np.testing.assert_allclose(features, state['intermediates']['features'][0], atol=1e-6)


def test_jit_matches_eager(test_variables):
  model = bigjax.create_model('vit_test')
  x, variables = _images(), test_variables
  eager = model.apply(variables, x)
  jitted = jax.jit(model.apply)(variables, x)
  np.testing.assert_allclose(eager, jitted, atol=1e-5, rtol=1e-5)


def test_bfloat16_compute_with_float32_params():
  model = bigjax.create_model('vit_test', dtype=jnp.bfloat16)
  x = _images()
  variables = _init(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))
  logits = model.apply(variables, x)
  chex.assert_type(logits, jnp.float32)  # bf16 compute, float32 logits
  reference = bigjax.create_model('vit_test').apply(variables, x)
  np.testing.assert_allclose(logits.astype(jnp.float32), reference, atol=0.1, rtol=0.1)


def test_bad_options_are_explained():
  x = _images(size=30)
  with pytest.raises(ValueError, match='not divisible by patch_size 4'):
    jax.eval_shape(bigjax.create_model('vit_test').init, jax.random.key(0), x)
  with pytest.raises(ValueError, match="pool must be 'cls' or 'mean'"):
    jax.eval_shape(bigjax.create_model('vit_test', pool='max').init, jax.random.key(0), x)
