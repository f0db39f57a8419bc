"""MLP and LeNet beyond the model contract: LeNet's small-image path, sown features.

Shapes at the default sizes, dtypes, bf16 compute, one trace under jit, dropout, the
LeNet-5 parameter count and the registry's errors are in tests/models/test_model_contract.py.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax


@pytest.mark.parametrize('shape', [(3, 8, 8, 1), (3, 28, 28, 1)], ids=['8x8', '28x28'])
def test_lenet_pads_small_images(shape):
  # Below 32x32 the convolutions are 'SAME' (the contract runs the 32x32 'VALID' path).
  model = bigjax.create_model('lenet', num_classes=7, dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(0), shape)
  variables = model.init(jax.random.key(1), x, train=False)
  chex.assert_shape(variables['params']['conv_1']['kernel'], (5, 5, 6, 16))
  logits = model.apply(variables, x, train=False)
  chex.assert_shape(logits, (3, 7))
  chex.assert_type(logits, jnp.float32)
  jitted = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  np.testing.assert_allclose(jitted, logits, atol=1e-5, rtol=1e-5)
  train = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(train, logits), 'dropout had no effect in training'


@pytest.mark.parametrize('name', ['mlp', 'lenet'])
def test_features_are_sown(name):
  model = bigjax.create_model(name)
  x = jnp.ones((2, 8, 8, 1))
  variables = model.init(jax.random.key(0), x)
  _, state = model.apply(variables, x, mutable=['intermediates'])
  width = 256 if name == 'mlp' else 84  # the last hidden layer
  chex.assert_shape(state['intermediates']['features'][0], (2, width))
