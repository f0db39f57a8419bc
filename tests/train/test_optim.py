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


def test_unknown_optimizer():
  with pytest.raises(ValueError, match='unknown optimizer'):
    optim.make_optimizer(_cfg(name='adamm'), optax.constant_schedule(0.1))


def test_schedule_spans_train_steps_updates_whatever_the_accumulation():
  # train.steps counts optimiser updates; accumulation splits each update's batch, so it
  # changes neither the schedule nor the number of updates (it used to shrink both by k).
  for k in (1, 4):
    config = ml_collections.ConfigDict(
      {
        'optim': {'name': 'sgd', 'lr': 1.0, 'grad_accum_steps': k},
        'schedule': {'name': 'cosine', 'warmup_steps': 10, 'end_factor': 0.0},
        'train': {'steps': 110},
      }
    )
    schedule, tx = optim.from_config(config)
    np.testing.assert_allclose(
      [schedule(5), schedule(10), schedule(60), schedule(110)], [0.5, 1.0, 0.5, 0.0], atol=1e-6
    )
    assert not isinstance(tx, optax.MultiSteps)  # accumulation lives in the train step


def _vit_like_params():
  return {
    'patch_embed': {'kernel': jnp.ones((4, 4, 3, 8)), 'bias': jnp.ones((8,))},
    'cls': jnp.ones((1, 1, 8)),
    'pos_embed': {'embedding': jnp.ones((1, 17, 8))},
    'embed': {'embedding': jnp.ones((32, 8))},
    'block_0': {
      'attn': {'query': {'kernel': jnp.ones((8, 2, 4)), 'bias': jnp.ones((2, 4))}},
      'attn_norm': {'scale': jnp.ones((8,)), 'bias': jnp.ones((8,))},
    },
    'head': {'kernel': jnp.ones((8, 10)), 'bias': jnp.ones((10,))},
  }


def _decayed(pattern=''):
  """The parameters that AdamW's weight decay moves when the gradient is zero."""
  params = _vit_like_params()
  tx = optim.make_optimizer(
    _cfg(name='adamw', weight_decay=0.5, decay_pattern=pattern), optax.constant_schedule(0.1)
  )
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  return {
    optim.param_path(path)
    for path, u in jax.tree_util.tree_leaves_with_path(updates)
    if np.any(np.asarray(u) != 0)
  }


def test_default_weight_decay_hits_kernels_only():
  # Not the embedding tables, position embeddings, class token, biases or norm scales
  # (the old rank > 1 rule decayed the first four).
  assert _decayed() == {'patch_embed/kernel', 'block_0/attn/query/kernel', 'head/kernel'}


def test_decay_pattern_chooses_what_decays():
  assert _decayed('.') == {optim.param_path(p) for p, _ in
                           jax.tree_util.tree_leaves_with_path(_vit_like_params())}  # fmt: skip
  assert _decayed('(kernel|embedding)$') == {
    'patch_embed/kernel',
    'block_0/attn/query/kernel',
    'head/kernel',
    'pos_embed/embedding',
    'embed/embedding',
  }
  with pytest.raises(ValueError, match='decay_pattern'):
    optim.make_optimizer(
      _cfg(name='adamw', weight_decay=0.1, decay_pattern='(kernel'), optax.constant_schedule(0.1)
    )
