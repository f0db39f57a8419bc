"""The FLOP counter against hand counts and GPT-2's published 6N + 12LTD per token."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax.train import flops


def test_mlp_counts_every_matmul_three_times():
  model = bigjax.create_model('mlp', depth=2, width=32, num_classes=10)
  x = jax.ShapeDtypeStruct((4, 8, 8, 1), jnp.float32)
  forward = 2 * 4 * (64 * 32 + 32 * 32 + 32 * 10)
  assert flops.train_step_flops(model, (x,)) == 3 * forward


def test_conv_counts_kernel_and_groups():
  x = jnp.zeros((2, 8, 8, 4))
  kernel = jnp.zeros((3, 3, 2, 6))  # 2 groups of 2 input features
  fn = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
    x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=2
  )
  assert flops.forward_flops(fn, x, kernel) == 2 * (2 * 8 * 8 * 6) * (3 * 3 * 2)
  strided = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
    x, k, (2, 2), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=2
  )
  assert flops.forward_flops(strided, x, kernel) == 2 * (2 * 3 * 3 * 6) * (3 * 3 * 2)


def test_scan_cond_while_and_remat():
  w = jnp.zeros((5, 8, 8))  # 5 layers of [8, 8]
  x = jnp.zeros((3, 8))
  one = 2 * 3 * 8 * 8

  def scanned(w, x):
    step = jax.checkpoint(lambda h, wi: (h @ wi, None))
    return jax.lax.scan(step, x, w)[0]

  assert flops.forward_flops(scanned, w, x) == 5 * one

  def branches(x, p):  # the costlier branch counts
    return jax.lax.cond(p, lambda x: x @ w[0] @ w[1], lambda x: x, x)

  assert flops.forward_flops(branches, x, True) == 2 * one

  def loop(x):  # a while loop's body counts once
    return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] @ w[0]), (0, x))[1]

  assert flops.forward_flops(loop, x) == one
  assert flops.forward_flops(jax.jit(lambda x: x @ w[0]), x) == one


def test_causal_attention_counts_as_full():
  q = jnp.zeros((2, 16, 4, 8))  # [B, T, H, K]

  def attend(q):
    return jax.nn.dot_product_attention(q, q, q, is_causal=True)

  assert flops.forward_flops(attend, q) == 4 * 2 * 4 * 16 * 16 * 8


def test_gpt2_124m_matches_the_published_estimate():
  B, T, L, D, V = 1, 1024, 12, 768, 50257
  model = bigjax.create_model('gpt2_small', vocab_multiple=1)
  counted = flops.train_step_flops(model, (jax.ShapeDtypeStruct((B, T), jnp.int32),))
  n = 12 * L * D * D + V * D  # blocks and the (tied) output head; position table excluded
  assert counted == pytest.approx((6 * n + 12 * L * T * D) * B * T, rel=0.02)


def test_tokens_per_example_and_rates():
  assert flops.tokens_per_example((np.zeros((2, 7), np.int32),)) == 7
  assert flops.tokens_per_example((np.zeros((2, 8, 8, 3), np.float32),)) == 0
  cost = flops.StepCost(flops=4e12, examples=8, tokens=8 * 7, peak=1e13)
  r = cost.rates(steps=2, seconds=4.0)
  assert r == pytest.approx(
    {'examples_per_sec': 4.0, 'tokens_per_sec': 28.0, 'tflops_per_sec': 2.0, 'mfu': 0.2}
  )
  assert 'tokens_per_sec' not in flops.StepCost(1.0, 8, 0, 1.0).rates(1, 1.0)


def test_peak_flops_override_table_and_measure():
  assert flops.peak_flops(override_tflops=123.0) == (123e12, 'train.peak_tflops')

  class H200:
    device_kind = 'NVIDIA H200'

  assert flops.peak_flops('bfloat16', device=H200())[0] == 989.5e12
  assert flops.peak_flops('float32', device=H200())[0] == 494.5e12
  peak, source = flops.peak_flops(device=jax.devices()[0])  # CPU: measured
  assert source.startswith('measured') and np.isfinite(peak) and peak > 1e8


def test_unknown_module_structure_still_traces():
  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
      return nn.remat(nn.Dense)(4)(x)

  x = jax.ShapeDtypeStruct((2, 3), jnp.float32)
  assert flops.train_step_flops(Block(), (x,)) == 3 * 2 * 2 * 3 * 4
