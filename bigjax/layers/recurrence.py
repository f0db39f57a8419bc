"""A recurrence over time with a hand-written backward pass (`fused_scan`).

Legend: T time steps, B batch, H hidden width, G gates per cell (G*H the gate width),
V rows of an input table.

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

Two more savings, both for XLA:CPU, where every pass over a [T, B, G*H] array costs tens
of milliseconds at LM sizes: with `ids` the input is a [V, G*H] table whose rows the loop
gathers step by step (and whose gradient it scatter-adds in the loop), so the [T, B, G*H]
input never exists; and an `additive` tail (one that reads xp and hp only as xp + hp: LSTM,
Elman) has dxp = dhp, so the backward loop stacks that array once.
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


def _x_at(xp: jax.Array, ids_t: jax.Array | None, x_t: jax.Array | None) -> jax.Array:
  """This step's input projection [B, G*H]: a slice of xp, or rows `ids_t` of the table."""
  return x_t if ids_t is None else jnp.take(xp, ids_t, axis=0, mode='clip')


def _forward(tail, hidden, dtype, reverse, unroll, kernel, bias, xp, ids, valid, carry, save):
  def body(carry, inputs):
    x_t, ids_t, v_t = inputs
    hp = _hp(hidden, carry, kernel, bias, dtype)  # [B, G*H]
    new, out = tail(_x_at(xp, ids_t, x_t), hp, carry, v_t)
    return new, (out, (hp, carry) if save else None)

  steps = (xp if ids is None else None, ids, valid)
  return jax.lax.scan(body, carry, steps, reverse=reverse, unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4, 5))
def fused_scan(
  tail: Tail,
  hidden: Hidden,
  dtype: Dtype,
  reverse: bool,
  unroll: int,
  additive: bool,
  kernel: jax.Array,
  bias: jax.Array,
  xp: jax.Array,
  ids: jax.Array | None,
  valid: jax.Array,
  carry: Carry,
) -> tuple[Carry, jax.Array]:
  """Runs carry, out_t = tail(x_t, hidden(carry) kernel + bias, carry, valid_t) over time.

  x_t is xp[t] for xp [T, B, G*H] (time-major) and ids None, or xp[ids[t]] for a table
  xp [V, G*H] and ids [T, B] int (clipped into range). valid [T, B] bool, kernel [H, G*H],
  bias [G*H], carry a pytree of [B, H] -> (final carry, outputs [T, B, H]). `tail` and
  `hidden` must be hashable (module-level functions or `functools.partial`s of them): they
  are static. The matmul runs in `dtype`; `reverse` runs from the last step to the first;
  `unroll` steps per loop iteration, forward and backward; `additive` promises that `tail`
  reads its first two arguments only through their sum.
  """
  carry, (outs, _) = _forward(
    tail, hidden, dtype, reverse, unroll, kernel, bias, xp, ids, valid, carry, False
  )
  return carry, outs


def _fused_fwd(tail, hidden, dtype, reverse, unroll, additive, kernel, bias, xp, ids, valid, carry):
  final, (outs, (hps, prevs)) = _forward(
    tail, hidden, dtype, reverse, unroll, kernel, bias, xp, ids, valid, carry, True
  )
  # hps [T, B, G*H], prevs: the carry before each step, each [T, B, H].
  return (final, outs), (kernel, bias, xp, ids, valid, hps, prevs)


def _fused_bwd(tail, hidden, dtype, reverse, unroll, additive, res, grads):
  kernel, bias, xp, ids, valid, hps, prevs = res
  d_final, d_outs = grads
  w_t = kernel.astype(dtype).T  # [G*H, H]

  def body(acc, inputs):
    d_carry, d_table = acc
    x_t, ids_t, v_t, hp_t, prev_t, dout_t = inputs
    _, vjp = jax.vjp(lambda x, hp, c: tail(x, hp, c, v_t), _x_at(xp, ids_t, x_t), hp_t, prev_t)
    dx, dhp, d_prev = vjp((d_carry, dout_t))
    if additive:
      dx = dhp  # the same array: stacked (or scattered) once
    # hp depends on the previous carry through hidden(carry) only: dh += dhp W^T.
    _, hidden_vjp = jax.vjp(hidden, prev_t)
    (d_through_w,) = hidden_vjp(jnp.dot(dhp, w_t).astype(hidden(prev_t).dtype))
    d_prev = jax.tree.map(jnp.add, d_prev, d_through_w)
    if ids_t is not None:  # rows of the table: scatter-add this step's input gradient
      d_table = d_table.at[jnp.clip(ids_t, 0, xp.shape[0] - 1)].add(dx.astype(d_table.dtype))
      dx = None
    elif additive:
      dx = None
    return (d_prev, d_table), (dx, dhp)

  d_table = None if ids is None else jnp.zeros(xp.shape, jnp.promote_types(xp.dtype, jnp.float32))
  steps = (xp if ids is None else None, ids, valid, hps, prevs, d_outs)
  (d_carry, d_table), (dxp, dhps) = jax.lax.scan(
    body, (d_final, d_table), steps, reverse=not reverse, unroll=unroll
  )
  if ids is not None:
    dxp = d_table.astype(xp.dtype)
  elif additive:
    dxp = dhps
  # All steps' weight gradients at once: [H, T*B] x [T*B, G*H].
  h_prevs = hidden(prevs).astype(dtype)  # [T, B, H]
  d_kernel = jnp.dot(
    h_prevs.reshape(-1, h_prevs.shape[-1]).T,  # [H, T*B]
    dhps.reshape(-1, dhps.shape[-1]),  # [T*B, G*H]
    preferred_element_type=jnp.float32,
  )
  d_bias = jnp.sum(dhps, axis=(0, 1), dtype=jnp.float32)
  return d_kernel.astype(kernel.dtype), d_bias.astype(bias.dtype), dxp, None, None, d_carry


fused_scan.defvjp(_fused_fwd, _fused_bwd)
