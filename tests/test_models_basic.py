"""MLP and LeNet: shapes, parameter counts, jit, dropout; the registry's errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax


@pytest.mark.parametrize(
  'name, shape, kwargs',
  [
    ('mlp', (3, 8, 8, 1), {'width': 32, 'dropout_rate': 0.5}),
    ('lenet', (3, 8, 8, 1), {'dropout_rate': 0.5}),
    ('lenet', (3, 28, 28, 1), {'dropout_rate': 0.5}),
    ('lenet', (3, 32, 32, 3), {'dropout_rate': 0.5}),
  ],
)
def test_shapes_jit_and_dropout(name, shape, kwargs):
  model = bigjax.create_model(name, num_classes=7, **kwargs)
  x = jax.random.normal(jax.random.key(0), shape)
  variables = model.init(jax.random.key(1), x, train=False)
  logits = model.apply(variables, x, train=False)
  chex.assert_shape(logits, (3, 7))
  chex.assert_type(logits, jnp.float32)
  jitted = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  np.testing.assert_allclose(jitted, logits, atol=1e-5, rtol=1e-5)
  train = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(train, logits), 'dropout had no effect in training'


def test_lenet5_parameter_count():
  # LeNet-5 on 32x32x1 with 10 classes: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706.
  model = bigjax.create_model('lenet')
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  assert sum(x.size for x in jax.tree.leaves(shapes['params'])) == 61_706


def test_bfloat16_compute_keeps_float32_params():
  model = bigjax.create_model('mlp', dtype=jnp.bfloat16, width=16)
  x = jnp.ones((2, 8, 8, 1))
  variables = model.init(jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert model.apply(variables, x).dtype == jnp.bfloat16


def test_features_are_sown():
  model = bigjax.create_model('mlp', width=16)
  x = jnp.ones((2, 8, 8, 1))
  variables = model.init(jax.random.key(0), x)
  _, state = model.apply(variables, x, mutable=['intermediates'])
  chex.assert_shape(state['intermediates']['features'][0], (2, 16))


def test_registry_lists_and_rejects():
  assert {'mlp', 'lenet'} <= set(bigjax.list_models())
  with pytest.raises(ValueError, match="unknown model 'lenett'.*did you mean lenet"):
    bigjax.create_model('lenett')
  with pytest.raises(ValueError, match='has no option'):
    bigjax.create_model('mlp', widht=3)
