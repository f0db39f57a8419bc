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
  """Adds a learned [max_length, D] table to [B, T, D] inputs, starting at `offset`."""

  max_length: int
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, offset: jax.Array | int = 0) -> jax.Array:
    table = self.param(
      'embedding',
      nn.initializers.normal(stddev=0.02),
      (self.max_length, x.shape[-1]),
      self.param_dtype,
    )
    pos = jax.lax.dynamic_slice_in_dim(table, offset, x.shape[1], axis=0)  # [T, D]
    return x + pos[None].astype(x.dtype)
