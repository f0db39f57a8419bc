"""The pure train step: finite, learns, compiles once, and shards exactly."""

import chex
import jax
import ml_collections
import numpy as np
import pytest

import bigjax
from bigjax.train import optim, sharding
from bigjax.train.state import init_state
from bigjax.train.step import make_eval_step, make_train_step
from bigjax.train.tasks import get_task
from configs import common


def _setup(model_name='lenet', **model_kw):
  config = common.base_config()
  config.optim.name = 'adam'
  config.optim.lr = 3e-3
  config.schedule.name = 'constant'
  model = bigjax.create_model(model_name, **model_kw)
  task = get_task('classification')
  schedule = optim.make_schedule(config.schedule, config.optim.lr, 100)
  tx = optim.make_optimizer(config.optim, schedule)
  rng = np.random.default_rng(0)
  batch = {
    'image': rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
    'label': rng.integers(0, 10, size=(16,)).astype(np.int32),
  }
  state = init_state(model, tx, jax.random.key(0), (batch['image'][:1],))
  step = make_train_step(model, task, config, schedule, tx)
  return model, task, state, step, batch


def _run(state, step, batch, mesh, n):
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  jitted = jax.jit(step, in_shardings=(repl, batch_sh, repl), out_shardings=(repl, repl))
  state = jax.device_put(state, repl)
  gbatch = sharding.global_batch(batch, mesh)
  losses = []
  for _ in range(n):
    state, metrics = jitted(state, gbatch, jax.random.key(1))
    losses.append(float(metrics['loss'][0] / metrics['loss'][1]))
  return state, losses


def test_finite_learns_and_compiles_once():
  model, task, state, step, batch = _setup(features=(4, 8), hidden=(16,), dropout_rate=0.1)
  counted = chex.assert_max_traces(step, n=1)
  jitted = jax.jit(counted, donate_argnums=0)
  losses = []
  for _ in range(30):
    state, metrics = jitted(state, batch, jax.random.key(1))
    losses.append(float(metrics['loss'][0] / metrics['loss'][1]))
  assert np.all(np.isfinite(losses))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 30
  metrics = make_eval_step(model, task)(state, {**batch, 'mask': np.ones(16, bool)})
  assert float(metrics['accuracy'][0] / metrics['accuracy'][1]) > 0.5


def test_eight_devices_equal_one_device():
  assert jax.device_count() == 8, 'conftest should provide 8 fake CPU devices'
  _, _, state, step, batch = _setup(features=(4, 8), hidden=(16,))
  mesh8 = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}))
  mesh1 = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}), jax.devices()[:1])
  assert mesh8.shape['data'] == 8 and mesh1.shape['data'] == 1
  s8, l8 = _run(state, step, batch, mesh8, 3)
  s1, l1 = _run(state, step, batch, mesh1, 3)
  np.testing.assert_allclose(l8, l1, atol=1e-6)
  for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_batch_must_divide_devices():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}))
  with pytest.raises(ValueError, match='does not divide over 8 devices'):
    sharding.check_batch_size(12, mesh)
  sharding.check_batch_size(16, mesh)
