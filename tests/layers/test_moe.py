"""The mixture-of-experts MLP: routing, dropless against a per-token reference, capacity
mode, the auxiliary losses, and the MoE block inside a stack (unrolled and scanned)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import layers
from bigjax.layers import BlockConfig, EncoderBlock
from bigjax.layers.moe import MoeBlock, routing_aux

B, T, D, E, K, F = 2, 6, 8, 4, 2, 16
X = jax.random.normal(jax.random.key(0), (B, T, D))
VALID = jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)  # row 0 left-padded


def _moe(**options) -> tuple[MoeBlock, dict]:
  options = dict(num_experts=E, experts_per_token=K, mlp_dim=F, **options)
  block = MoeBlock(kernel_init=nn.initializers.normal(0.5), **options)
  params = block.init(jax.random.key(1), X)['params']
  if 'fc1' in params and 'bias' in params['fc1']:  # biases away from their zero init
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)
  return block, params


def _reference(params, x, k, gated, act=jax.nn.silu) -> jax.Array:
  """Every expert on every token (einsums), mixed with the renormalised top-k weights."""
  probs = jax.nn.softmax(x @ params['router']['kernel'], axis=-1)  # [B, T, E]
  top, idx = jax.lax.top_k(probs, k)  # [B, T, k]
  mix = (
    jnp.zeros_like(probs)
    .at[jnp.arange(B)[:, None, None], jnp.arange(T)[None, :, None], idx]
    .set(top / top.sum(-1, keepdims=True))
  )  # [B, T, E], k non-zeros per token

  def proj(h, name, spec):
    y = jnp.einsum(spec, h, params[name]['kernel'])
    return y + params[name]['bias'] if 'bias' in params[name] else y

  h = proj(x, 'fc1', 'btd,edf->btef')  # [B, T, E, F]
  h = act(proj(x, 'gate', 'btd,edf->btef')) * h if gated else act(h)
  out = jnp.einsum('btef,efd->bted', h, params['fc2']['kernel'])  # [B, T, E, D]
  if 'bias' in params['fc2']:
    out = out + params['fc2']['bias']
  return jnp.einsum('bted,bte->btd', out, mix), idx


@pytest.mark.parametrize('gated,use_bias', [(True, False), (False, True)])
def test_dropless_routes_to_k_distinct_experts_and_equals_the_per_token_reference(gated, use_bias):
  block, params = _moe(gated=gated, use_bias=use_bias, activation='silu')
  y, aux = jax.jit(block.apply)({'params': params}, X, VALID)
  want, idx = _reference(params, X, K, gated)
  np.testing.assert_allclose(y, want * VALID[..., None], atol=1e-5, rtol=1e-5)  # pads get 0
  # Every token has k distinct experts; the load counts each valid token's k exactly once.
  idx = np.asarray(idx)
  assert (np.sort(idx, -1)[..., 1:] != np.sort(idx, -1)[..., :-1]).all()
  routed = np.zeros(E)
  np.add.at(routed, idx[np.asarray(VALID)].reshape(-1), 1)
  n = int(VALID.sum())
  np.testing.assert_allclose(aux['expert_load'], routed / (n * K), atol=1e-6)
  assert aux['expert_load'].sum() == pytest.approx(1.0)
  # The padded tokens count for nothing: marking them valid changes the load.
  _, everything = block.apply({'params': params}, X)
  assert not np.allclose(everything['expert_load'], aux['expert_load'])


def test_capacity_mode_big_equals_dropless_tiny_drops():
  block, params = _moe()
  run = jax.jit(lambda b, x: b.apply({'params': params}, x, VALID), static_argnums=0)
  dropless, aux = run(block, X)
  big, big_aux = run(block.clone(capacity_factor=float(E)), X)  # C = T * k: nothing dropped
  np.testing.assert_allclose(big, dropless, atol=1e-5, rtol=1e-5)
  tiny, tiny_aux = run(block.clone(capacity_factor=0.3), X)  # C = ceil(0.3 * 6 * 2 / 4) = 1
  assert math.ceil(0.3 * T * K / E) == 1
  assert np.abs(np.asarray(tiny - dropless)).max() > 1e-3
  # The load counts what the router chose, dropped or not.
  np.testing.assert_allclose(tiny_aux['expert_load'], aux['expert_load'], atol=1e-7)
  np.testing.assert_allclose(big_aux['balance_loss'], aux['balance_loss'], atol=1e-6)
  # One slot per expert and row: row 1's 6 tokens share E = 4 slots, so at least two of them
  # lost every assignment and get no MLP output; padding (row 0's first two) takes no slot.
  silent = np.abs(np.asarray(tiny)).max(-1) < 1e-7  # [B, T]
  assert silent[1].sum() >= T - E
  assert silent[0, :2].all() and not silent[0, 2]


def test_balance_loss_is_one_at_uniform_routing_and_more_when_skewed():
  n = 8
  uniform = 5.0 * jax.nn.one_hot(jnp.arange(n) % E, E)  # token i prefers expert i mod E
  skewed = 5.0 * jax.nn.one_hot(jnp.zeros(n, int), E)  # every token prefers expert 0
  valid = jnp.ones((n,), bool)

  def aux(logits, k=1):
    probs = jax.nn.softmax(logits)
    return routing_aux(logits, probs, jax.lax.top_k(probs, k)[1], valid)

  assert aux(uniform)['balance_loss'] == pytest.approx(1.0, abs=1e-6)
  assert aux(uniform, k=2)['balance_loss'] == pytest.approx(1.0, abs=1e-6)
  np.testing.assert_allclose(aux(uniform)['expert_load'], np.full(E, 1 / E))
  assert aux(skewed)['balance_loss'] > 1.5
  # A half-skewed routing sits in between: the loss grows with the imbalance.
  half = jnp.concatenate([uniform[: n // 2], skewed[: n // 2]])
  assert 1.0 < aux(half)['balance_loss'] < aux(skewed)['balance_loss']
  # z-loss by hand: logsumexp of all-zero logits is log E.
  assert aux(jnp.zeros((n, E)))['z_loss'] == pytest.approx(math.log(E) ** 2, rel=1e-6)
  # Invalid tokens are left out of every statistic.
  probs = jax.nn.softmax(half)
  masked = routing_aux(half, probs, jax.lax.top_k(probs, 1)[1], jnp.arange(n) < n // 2)
  assert masked['balance_loss'] == pytest.approx(1.0, abs=1e-6)


def test_moe_block_config_and_stack_return_the_stacked_aux():
  config = BlockConfig(
    num_heads=2, mlp_dim=F, num_experts=E, experts_per_token=K, gated_mlp=True, activation='silu'
  )
  assert isinstance(config.mlp(), MoeBlock)
  assert not isinstance(BlockConfig(num_heads=2, mlp_dim=F).mlp(), MoeBlock)
  with pytest.raises(ValueError, match='experts_per_token'):
    BlockConfig(num_heads=2, mlp_dim=F, num_experts=2, experts_per_token=3)

  class Stack(nn.Module):
    scan: bool

    @nn.compact
    def __call__(self, x, valid):
      return layers.stack_blocks(
        x, EncoderBlock, config, 3, scan=self.scan, remat=self.scan, key_valid=valid, causal=True
      )

  unrolled = Stack(False).init(jax.random.key(0), X, VALID)['params']
  axes = layers.logical_axes(unrolled)
  assert axes['block_0']['mlp']['fc2']['kernel'] == ('experts', 'mlp', 'embed')
  assert axes['block_0']['mlp']['router']['kernel'] == ('embed', 'experts')

  @jax.jit
  def both(params):
    return (
      Stack(False).apply({'params': params}, X, VALID),
      Stack(True).apply({'params': layers.stack_layers(params, 3)}, X, VALID),
    )

  (x1, aux1), (x2, aux2) = both(unrolled)
  assert aux1['expert_load'].shape == (3, E) and aux1['balance_loss'].shape == (3,)
  np.testing.assert_allclose(x1, x2, atol=1e-5, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), aux1, aux2)
