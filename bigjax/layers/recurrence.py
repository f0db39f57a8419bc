"""A recurrence over time with a hand-written backward pass (`fused_scan`).

Legend: T time steps, B batch, H hidden width, G gates per cell (G*H the gate width).

A recurrent layer is, per step, hp = h W + b (the one matmul that must stay in the loop)
followed by an elementwise `tail(xp, hp, carry, valid) -> (carry, out)`. Differentiating a
plain `lax.scan` of that step makes XLA's backward loop accumulate dW += h_{t-1}^T dhp_t in
the loop carry: a [B, H] x [B, G*H] outer product with a tiny contraction, plus a read and a
write of the whole [H, G*H] accumulator, every step. `fused_scan` saves hp and the carries
in its forward loop, runs one reverse loop that only propagates dh through W^T, and forms
the weight gradient after the loop as a single [H, T*B] x [T*B, G*H] matmul (and db as one
sum), which a CPU runs near its peak. The tail's own backward comes from `jax.vjp` of the
same `tail` (recomputed from the saved hp, cheap next to the matmuls), so the cell
equations live in one place and the results equal the plain scan's.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from bigjax.typing import Dtype

Carry = Any  # a pytree of [B, H] arrays
Tail = Callable[[jax.Array, jax.Array, Carry, jax.Array], tuple[Carry, jax.Array]]
Hidden = Callable[[Carry], jax.Array]


def _hp(hidden: Hidden, carry: Carry, kernel: jax.Array, bias: jax.Array, dtype: Dtype):
  return jnp.dot(hidden(carry).astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


def _forward(tail, hidden, dtype, reverse, unroll, kernel, bias, xp, valid, carry, save):
  def body(carry, inputs):
    x_t, v_t = inputs
    hp = _hp(hidden, carry, kernel, bias, dtype)  # [B, G*H]
    new, out = tail(x_t, hp, carry, v_t)
    return new, (out, (hp, carry) if save else None)

  return jax.lax.scan(body, carry, (xp, valid), reverse=reverse, unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def fused_scan(
  tail: Tail,
  hidden: Hidden,
  dtype: Dtype,
  reverse: bool,
  unroll: int,
  kernel: jax.Array,
  bias: jax.Array,
  xp: jax.Array,
  valid: jax.Array,
  carry: Carry,
) -> tuple[Carry, jax.Array]:
  """Runs carry, out_t = tail(xp_t, hidden(carry) kernel + bias, carry, valid_t) over time.

  xp [T, B, G*H] (time-major), valid [T, B] bool, kernel [H, G*H], bias [G*H], carry a
  pytree of [B, H] -> (final carry, outputs [T, B, H]). `tail` and `hidden` must be
  hashable (module-level functions or `functools.partial`s of them): they are static.
  The matmul runs in `dtype`; `reverse` runs from the last step to the first; `unroll`
  steps per loop iteration, forward and backward.
  """
  carry, (outs, _) = _forward(
    tail, hidden, dtype, reverse, unroll, kernel, bias, xp, valid, carry, False
  )
  return carry, outs


def _fused_fwd(tail, hidden, dtype, reverse, unroll, kernel, bias, xp, valid, carry):
  final, (outs, (hps, prevs)) = _forward(
    tail, hidden, dtype, reverse, unroll, kernel, bias, xp, valid, carry, True
  )
  # hps [T, B, G*H], prevs: the carry before each step, each [T, B, H].
  return (final, outs), (kernel, bias, xp, valid, hps, prevs)


def _fused_bwd(tail, hidden, dtype, reverse, unroll, res, grads):
  kernel, bias, xp, valid, hps, prevs = res
  d_final, d_outs = grads
  w_t = kernel.astype(dtype).T  # [G*H, H]

  def body(d_carry, inputs):
    x_t, v_t, hp_t, prev_t, dout_t = inputs
    _, vjp = jax.vjp(lambda x, hp, c: tail(x, hp, c, v_t), x_t, hp_t, prev_t)
    dx, dhp, d_prev = vjp((d_carry, dout_t))
    # hp depends on the previous carry through hidden(carry) only: dh += dhp W^T.
    _, hidden_vjp = jax.vjp(hidden, prev_t)
    (d_through_w,) = hidden_vjp(jnp.dot(dhp, w_t).astype(hidden(prev_t).dtype))
    d_prev = jax.tree.map(jnp.add, d_prev, d_through_w)
    return d_prev, (dx, dhp)

  d_carry, (dxp, dhps) = jax.lax.scan(
    body, d_final, (xp, valid, hps, prevs, d_outs), reverse=not reverse, unroll=unroll
  )
  # All steps' weight gradients at once: [H, T*B] x [T*B, G*H].
  h_prevs = hidden(prevs).astype(dtype)  # [T, B, H]
  d_kernel = jnp.einsum('tbh,tbg->hg', h_prevs, dhps, preferred_element_type=jnp.float32)
  d_bias = jnp.sum(dhps, axis=(0, 1), dtype=jnp.float32)
  return d_kernel.astype(kernel.dtype), d_bias.astype(bias.dtype), dxp, None, d_carry


fused_scan.defvjp(_fused_fwd, _fused_bwd)
