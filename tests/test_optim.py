"""Optimiser chains and schedules built from config."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigjax.train import optim


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


def test_schedules():
  cos = optim.make_schedule(_cfg(name='cosine', warmup_steps=10, end_factor=0.0), 1.0, 110)
  np.testing.assert_allclose(
    [cos(0), cos(5), cos(10), cos(60), cos(110)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6
  )
  lin = optim.make_schedule(_cfg(name='linear', warmup_steps=0, end_factor=0.1), 2.0, 100)
  np.testing.assert_allclose([lin(0), lin(50), lin(100)], [2.0, 1.1, 0.2], rtol=1e-6)
  const = optim.make_schedule(_cfg(name='constant', warmup_steps=4), 3.0, 100)
  np.testing.assert_allclose([const(2), const(50)], [1.5, 3.0])
  rsqrt = optim.make_schedule(_cfg(name='rsqrt', warmup_steps=100), 1.0, 10_000)
  np.testing.assert_allclose([rsqrt(50), rsqrt(100), rsqrt(400)], [0.5, 1.0, 0.5], rtol=1e-6)
  with pytest.raises(ValueError, match='unknown schedule'):
    optim.make_schedule(_cfg(name='cosin'), 1.0, 10)


def test_weight_decay_skips_biases_and_norms():
  params = {
    'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))},
    'norm': {'scale': jnp.ones((2,))},
  }
  tx = optim.make_optimizer(_cfg(name='adamw', weight_decay=0.5), optax.constant_schedule(0.1))
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['dense']['kernel'], -0.05)
  assert np.all(updates['dense']['bias'] == 0) and np.all(updates['norm']['scale'] == 0)


@pytest.mark.parametrize('name', ['sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'lamb'])
def test_every_optimizer_descends(name):
  params = {'w': jnp.array([3.0, -2.0])}
  tx = optim.make_optimizer(
    _cfg(name=name, weight_decay=0.0, clip_norm=1.0), optax.constant_schedule(0.05)
  )
  loss = lambda p: jnp.sum(p['w'] ** 2)
  state = tx.init(params)
  for _ in range(20):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert loss(params) < 13.0 * 0.9


def test_gradient_accumulation_equals_big_batch():
  x = jax.random.normal(jax.random.key(0), (8, 3))
  y = jax.random.normal(jax.random.key(1), (8,))
  loss = lambda w, x, y: jnp.mean((x @ w - y) ** 2)
  w0 = jnp.ones(3)
  big = optim.make_optimizer(_cfg(name='sgd'), optax.constant_schedule(0.1))
  upd, _ = big.update(jax.grad(loss)(w0, x, y), big.init(w0), w0)
  accum = optim.make_optimizer(_cfg(name='sgd', grad_accum_steps=2), optax.constant_schedule(0.1))
  state, w = accum.init(w0), w0
  for half in (slice(0, 4), slice(4, 8)):
    u, state = accum.update(jax.grad(loss)(w, x[half], y[half]), state, w)
    w = optax.apply_updates(w, u)
  np.testing.assert_allclose(w, w0 + upd, rtol=1e-6)


def test_unknown_optimizer():
  with pytest.raises(ValueError, match='unknown optimizer'):
    optim.make_optimizer(_cfg(name='adamm'), optax.constant_schedule(0.1))


def test_schedule_counts_optimizer_updates_under_accumulation():
  config = ml_collections.ConfigDict(
    {
      'optim': {'name': 'sgd', 'lr': 1.0, 'grad_accum_steps': 4},
      'schedule': {'name': 'cosine', 'warmup_steps': 0, 'end_factor': 0.0},
      'train': {'steps': 100},
    }
  )
  schedule, _ = optim.from_config(config)
  np.testing.assert_allclose(
    [schedule(0), schedule(12.5), schedule(25)], [1.0, 0.5, 0.0], atol=1e-6
  )
