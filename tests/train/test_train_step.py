"""The pure train step: finite, learns, compiles once, shards exactly, accumulates
micro-batches exactly, and takes a frozen teacher and extra loss terms."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import bigjax
from bigjax import losses
from bigjax.train import optim, sharding
from bigjax.train.state import init_state
from bigjax.train.step import LossTerm, make_eval_step, make_train_step
from bigjax.train.tasks import get_task
from configs import common


def _constant_config(optimizer: str, lr: float) -> ml_collections.ConfigDict:
  """The base config with `optimizer` at a constant learning rate `lr`."""
  config = common.base_config()
  config.optim.name = optimizer
  config.optim.lr = lr
  config.schedule.name = 'constant'
  return config


def _image_batch(side: int) -> dict:
  """16 random [side, side, 1] images with labels in [0, 10)."""
  rng = np.random.default_rng(0)
  return {
    'image': rng.normal(size=(16, side, side, 1)).astype(np.float32),
    'label': rng.integers(0, 10, size=(16,)).astype(np.int32),
  }


def _setup(model_name='lenet', **model_kw):
  config = _constant_config('adam', 3e-3)
  model = bigjax.create_model(model_name, **model_kw)
  task = get_task('classification', config)
  schedule = optim.make_schedule(config.schedule, config.optim.lr, 100)
  tx = optim.make_optimizer(config.optim, schedule)
  batch = _image_batch(8)
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


def _assert_eight_devices_equal_one(state, step, batch, n):
  """n steps data-parallel over 8 devices give the losses and parameters of 1 device."""
  mesh8 = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}))
  mesh1 = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}), jax.devices()[:1])
  assert mesh8.shape['data'] == 8 and mesh1.shape['data'] == 1
  s8, l8 = _run(state, step, batch, mesh8, n)
  s1, l1 = _run(state, step, batch, mesh1, n)
  np.testing.assert_allclose(l8, l1, atol=1e-6)
  for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)


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
  _assert_eight_devices_equal_one(state, step, batch, 3)


def test_batch_must_divide_devices():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}))
  with pytest.raises(ValueError, match='does not divide over 8 devices'):
    sharding.check_batch_size(12, mesh)
  sharding.check_batch_size(16, mesh)


# --- gradient accumulation: k micro-batches of B == one batch of k * B ------------------


def _accum_step(model, k, optimizer='sgd'):
  config = _constant_config(optimizer, 0.5)
  config.optim.grad_accum_steps = k
  schedule, tx = optim.from_config(config)
  return make_train_step(model, get_task('classification', config), config, schedule, tx), tx


def test_accumulated_micro_batches_equal_one_big_batch():
  model = bigjax.create_model('mlp', width=16, depth=1)
  # Padding rows (mask False) in one micro-batch only: the normalisation must be global.
  batch = {**_image_batch(4), 'mask': np.arange(16) % 4 != 1}
  results = {}
  for k in (1, 4):
    step, tx = _accum_step(model, k)
    state = init_state(model, tx, jax.random.key(0), (batch['image'][:1],))
    new, metrics = jax.jit(step)(state, batch, jax.random.key(1))
    results[k] = (new, metrics)
  (big, m1), (acc, m4) = results[1], results[4]
  assert int(acc.step) == 1  # one update, not k
  for a, b in zip(jax.tree.leaves(big.params), jax.tree.leaves(acc.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  for key in ('loss', 'accuracy', 'objective', 'grad_norm'):
    np.testing.assert_allclose(m1[key][0] / m1[key][1], m4[key][0] / m4[key][1], atol=1e-6)


def test_accumulation_carries_batch_stats_through_the_micro_batches():
  model = bigjax.create_model('resnet_test')
  x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
  batch = {'image': x, 'label': np.arange(8, dtype=np.int32) % 10}
  step, tx = _accum_step(model, 2)
  state = init_state(model, tx, jax.random.key(0), (x[:1],))
  new, _ = jax.jit(step)(state, batch, jax.random.key(1))
  # By hand: micro-batch i holds examples i, i + 2, ...; each updates the running stats.
  stats = state.model_state
  for i in range(2):
    _, stats = model.apply(
      {'params': state.params, **stats}, x[i::2], train=True, mutable=['batch_stats']
    )
  for a, b in zip(jax.tree.leaves(new.model_state), jax.tree.leaves(stats)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_accumulation_on_eight_devices_equals_one_device():
  model = bigjax.create_model('mlp', width=16, depth=1)
  batch = _image_batch(4)
  step, tx = _accum_step(model, 2, 'adam')
  state = init_state(model, tx, jax.random.key(0), (batch['image'][:1],))
  _assert_eight_devices_equal_one(state, step, batch, 2)


# --- seams: a frozen teacher and an extra loss term ------------------------------------


def test_frozen_teacher_and_distillation_term():
  config = _constant_config('sgd', 0.5)
  schedule, tx = optim.from_config(config)
  task = get_task('classification', config)
  student = bigjax.create_model('mlp', width=8, depth=1)
  teacher = bigjax.create_model('mlp', width=32, depth=2)
  rng = np.random.default_rng(0)
  batch = {
    'image': rng.normal(size=(8, 4, 4, 1)).astype(np.float32),
    'label': rng.integers(0, 10, size=(8,)).astype(np.int32),
  }
  teacher_vars = teacher.init(jax.random.key(7), batch['image'][:1])
  teacher_vars = {'params': teacher_vars['params']}
  before = jax.tree.map(np.array, teacher_vars)

  def distill(outputs, micro, teacher_logits):
    return losses.distillation_loss(outputs.logits, teacher_logits, temperature=2.0)

  step = make_train_step(
    student,
    task,
    config,
    schedule,
    tx,
    loss_terms=(LossTerm('distill', 0.5, distill),),
    frozen_forward=lambda frozen, micro: teacher.apply(frozen['teacher'], micro['image']),
  )
  state = init_state(student, tx, jax.random.key(0), (batch['image'][:1],))
  start = jax.tree.map(np.array, state.params)
  jitted = jax.jit(chex.assert_max_traces(step, n=1), donate_argnums=0)
  frozen = {'teacher': teacher_vars}
  for _ in range(2):
    state, metrics = jitted(state, batch, jax.random.key(1), frozen)
  assert float(metrics['distill'][0]) > 0
  # The term is in the objective: objective = task loss + 0.5 * distill (no smoothing here).
  loss = float(metrics['loss'][0] / metrics['loss'][1])
  np.testing.assert_allclose(
    float(metrics['objective'][0]), loss + 0.5 * float(metrics['distill'][0]), rtol=1e-5
  )
  changed = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), state.params, start)
  assert min(jax.tree.leaves(changed)) > 0  # every student parameter moved
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, frozen['teacher']), before)  # untouched

  # The teacher's logits move the student: another teacher, another update.
  other = jax.tree.map(lambda x: -x, teacher_vars)
  fresh = init_state(student, tx, jax.random.key(0), (batch['image'][:1],))
  a, _ = jax.jit(step)(fresh, batch, jax.random.key(1), {'teacher': teacher_vars})
  b, _ = jax.jit(step)(fresh, batch, jax.random.key(1), {'teacher': other})
  assert np.abs(a.params['head']['kernel'] - b.params['head']['kernel']).max() > 1e-4


# --- init_state with collections that are not parameters -------------------------------


class _Extras(nn.Module):
  """Sows a value (grows on every apply), keeps a counter updated in place, and caches
  intermediates: only the counter is train state."""

  @nn.compact
  def __call__(self, x, *, train=False):
    count = self.variable('counters', 'seen', lambda: jnp.zeros((), jnp.int32))
    if train and not self.is_initializing():
      count.value += x.shape[0]
    self.sow('losses', 'penalty', jnp.mean(x**2))
    self.sow('intermediates', 'inputs', x)
    return nn.Dense(10, name='head')(x.reshape(x.shape[0], -1))


def test_init_state_with_extra_collections():
  config = common.base_config()
  config.schedule.name = 'constant'
  schedule, tx = optim.from_config(config)
  model = _Extras()
  batch = {'image': np.ones((4, 2, 2, 1), np.float32), 'label': np.zeros((4,), np.int32)}
  state = init_state(model, tx, jax.random.key(0), (batch['image'][:1],))
  assert set(state.variables) == {'params', 'counters'}
  step = make_train_step(model, get_task('classification', config), config, schedule, tx)
  jitted = jax.jit(chex.assert_max_traces(step, n=1))
  for _ in range(3):
    state, _ = jitted(state, batch, jax.random.key(1))
  assert int(state.model_state['counters']['seen']) == 12


# --- non-finite updates are not applied (train.nonfinite) ---------------------------------


@pytest.mark.parametrize('mode', ['skip', 'off'])
def test_a_non_finite_update_is_skipped(mode):
  config = _constant_config('adam', 3e-3)
  config.train.nonfinite = mode
  model = bigjax.create_model('mlp', width=16, depth=1)
  task = get_task('classification', config)
  schedule = optim.make_schedule(config.schedule, config.optim.lr, 100)
  tx = optim.make_optimizer(config.optim, schedule)
  batch = _image_batch(8)
  state = init_state(model, tx, jax.random.key(0), (batch['image'][:1],))
  step = jax.jit(make_train_step(model, task, config, schedule, tx))
  poisoned = {**batch, 'image': batch['image'].copy()}
  poisoned['image'][3, 0, 0, 0] = np.nan
  after, metrics = step(state, poisoned, jax.random.key(1))
  assert int(after.step) == 1
  if mode == 'off':  # applied as it is: NaN parameters, and no flag
    assert 'nonfinite' not in metrics
    assert not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(after.params))
    return
  assert int(metrics['nonfinite']) == 3  # the loss and the gradients
  for a, b in zip(
    jax.tree.leaves((after.params, after.opt_state)),
    jax.tree.leaves((state.params, state.opt_state)),
  ):
    np.testing.assert_array_equal(a, b)  # neither parameters nor optimiser state moved
  again, metrics = step(after, batch, jax.random.key(1))
  assert int(metrics['nonfinite']) == 0 and int(again.step) == 2
  moved = [
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(state.params))
  ]
  assert all(moved)
