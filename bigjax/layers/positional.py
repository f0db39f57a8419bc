"""Position encodings: fixed sinusoids (Vaswani et al., 2017) and learned tables."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.typing import Dtype


def sinusoidal_positions(length: int, width: int, max_timescale: float = 1e4) -> jax.Array:
  """[T, D] table: sin on the first half of the channels, cos on the second.

  This is the layout of tensor2tensor; `interleave` style (sin, cos, sin, ...) is the
  paper's formula with channels permuted, which does not change the model.
  """
  positions = np.arange(length)[:, None]
  half = width // 2
  inv = np.exp(-np.log(max_timescale) * np.arange(half) / max(half - 1, 1))
  angles = positions * inv[None, :]  # [T, D/2]
  table = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
  if width % 2:
    table = np.pad(table, ((0, 0), (0, 1)))
  return jnp.asarray(table, jnp.float32)


class LearnedPositions(nn.Module):
  """Adds a learned [max_length, D] table to [B, T, D] inputs: rows offset ... offset + T - 1,
  or, given `positions` [B, T] (per-row positions: packed documents, ragged prompts), the
  rows they name (a gather; out-of-range positions are clipped)."""

  max_length: int
  param_dtype: Dtype = jnp.float32
  init_std: float = 0.02

  @nn.compact
  def __call__(
    self, x: jax.Array, offset: jax.Array | int = 0, positions: jax.Array | None = None
  ) -> jax.Array:
    table = self.param(
      'embedding',
      nn.initializers.normal(stddev=self.init_std),
      (self.max_length, x.shape[-1]),
      self.param_dtype,
    )
    if positions is not None:
      pos = jnp.take(table, positions, axis=0, mode='clip')  # [B, T, D]
      return x + pos.astype(x.dtype)
    pos = jax.lax.dynamic_slice_in_dim(table, offset, x.shape[1], axis=0)  # [T, D]
    return x + pos[None].astype(x.dtype)


def rotary(x: jax.Array, positions: jax.Array, theta: float = 1e4) -> jax.Array:
  """Rotary position embedding (RoPE; Su et al., 2021) of [B, T, H, K] queries or keys.

  `positions` are the absolute positions, [T] or [B, T]. Channel i of the first half is
  rotated with channel i of the second half by the angle position * theta^(-2i/K): the
  "rotate half" layout of GPT-NeoX and Hugging Face Llama (the paper pairs neighbouring
  channels, a permutation of the same thing). Dot products of rotated queries and keys
  depend only on the positions' difference. Computed in float32.
  """
  head_dim = x.shape[-1]
  if head_dim % 2:
    raise ValueError(f'rotary positions need an even head dim, got {head_dim}')
  half = head_dim // 2
  inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim)  # [K/2]
  angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq  # [(B,) T, K/2]
  angles = angles[None, :, None, :] if angles.ndim == 2 else angles[:, :, None, :]  # [B, T, 1, K/2]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)  # [B, T, H, K/2] each
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)  # [B, T, H, K]
  return out.astype(x.dtype)
