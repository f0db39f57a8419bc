"""Sharding on one mesh (bigjax.layers.partitioning, bigjax.train.sharding): on the 8 fake
CPU devices one training step of each Transformer family under data, FSDP, FSDP + tensor
and expert parallelism equals the step on 1 device; the state's shardings are the rules';
FSDP divides the per-device parameter bytes; checkpoints move between meshes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import bigjax
from bigjax.layers import partitioning
from bigjax.train import optim, sharding
from bigjax.train.loop import _abstract_state, state_shardings
from bigjax.train.state import init_state
from bigjax.train.step import make_train_step
from bigjax.train.tasks import get_task
from configs import common

B = 8  # examples: divides over every layout's batch axes

LAYOUTS = {
  'data8': dict(data=8),
  'fsdp8': dict(data=1, fsdp=8),
  'dp2_fsdp2_tp2': dict(data=2, fsdp=2, tensor=2),
}


def _config(optimizer: str = 'sgd'):
  config = common.base_config()
  config.optim.name = optimizer
  config.optim.lr = 0.1
  config.schedule.name = 'constant'
  return config


def _mesh(devices=None, rules='auto', **sizes):
  config = common.base_config().mesh
  config.update({'data': -1, **sizes, 'rules': rules})
  return sharding.make_mesh(config, devices)


def _batch(name: str) -> tuple[str, dict]:
  """(task name, a batch of B examples) for the model `name`."""
  rng = np.random.default_rng(0)
  if name == 'vit_test':
    return 'classification', {
      'image': rng.normal(size=(B, 8, 8, 3)).astype(np.float32),
      'label': rng.integers(0, 10, (B,)).astype(np.int32),
    }
  ids = rng.integers(1, 128, (B, 9)).astype(np.int32)
  if name == 'bert_test':
    return 'mlm', {
      'input_ids': ids[:, :8],
      'segment_ids': np.zeros((B, 8), np.int32),
      'mlm_labels': np.where(rng.random((B, 8)) < 0.3, ids[:, 1:], -1).astype(np.int32),
    }
  return 'lm', {'inputs': ids[:, :-1], 'targets': ids[:, 1:]}


@functools.cache
def _setup(name: str, optimizer: str = 'sgd'):
  """(model, task, tx, step function, initial state, batch, inputs) of a test variant."""
  config = _config(optimizer)
  model = bigjax.create_model(name, **MODEL_OPTIONS.get(name, {}))
  task_name, batch = _batch(name)
  task = get_task(task_name, config)
  schedule, tx = optim.from_config(config)
  inputs = tuple(np.asarray(x)[:1] for x in task.inputs(batch))
  state = init_state(model, tx, jax.random.key(0), inputs)
  step = make_train_step(model, task, config, schedule, tx)
  return model, task, tx, step, state, batch, inputs


# gpt2_test with dims that divide by 8 (heads, kv, vocab, mlp), for exact FSDP factors.
MODEL_OPTIONS = {'gpt2_test': dict(num_heads=8, hidden_size=64, mlp_dim=128)}


def _step(name: str, mesh, rules: str = 'auto'):
  """(loss, new params, abstract state) of one train step of `name` on `mesh`."""
  model, task, tx, step, state, batch, inputs = _setup(name)
  table = partitioning.rules(rules)
  abstract = _abstract_state(model, tx, inputs, mesh, None, rules)
  shardings = state_shardings(abstract)
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  jitted = jax.jit(
    sharding.under_rules(step, mesh, table),
    in_shardings=(shardings, batch_sh, repl),
    out_shardings=(shardings, repl),
  )
  new, metrics = jitted(
    jax.device_put(state, shardings), sharding.global_batch(batch, mesh), jax.random.key(1)
  )
  loss = float(metrics['loss'][0] / metrics['loss'][1])
  return loss, jax.device_get(new.params), new, abstract


@functools.cache
def _reference(name: str):
  return _step(name, _mesh(jax.devices()[:1]))[:2]


CASES = [(name, layout) for name in ('gpt2_test', 'bert_test', 'vit_test') for layout in LAYOUTS]
CASES.append(('mixtral_test', 'ep4_dp2'))
LAYOUTS['ep4_dp2'] = dict(data=2, expert=4)


@pytest.mark.parametrize('name,layout', CASES)
def test_one_step_equals_one_device(name, layout):
  loss, params, new, abstract = _step(name, _mesh(**LAYOUTS[layout]))
  ref_loss, ref_params = _reference(name)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), params, ref_params)
  # the step returns the state in the rules' shardings
  got = jax.tree.map(lambda x: x.sharding.spec, new)
  want = jax.tree.map(lambda x: x.sharding.spec, abstract)
  assert got == want
