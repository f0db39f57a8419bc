"""Weight initialisers that draw their random numbers as one flat vector.

Why: with `jax_threefry_partitionable` (the default since JAX 0.5) XLA:CPU compiles a
threefry draw of a rank-4 conv kernel about 8x slower than a draw of the same numbers as
a flat vector (measured: 30 distinct [3, 3, 8, n] normals, 100 s against 12 s on 2 busy
cores), and a model's `init` holds one draw per kernel, so Inception v3's init took
minutes to compile. The distributions are the usual ones; only the layout of the draw
differs. The `fan_*` conventions follow torch (kernels are [..., C_in, C_out]).
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
  receptive = math.prod(shape[:-2])
  return shape[-2] * receptive, shape[-1] * receptive


def normal(stddev: float) -> Initializer:
  """N(0, stddev^2), untruncated."""

  def init(key, shape, dtype=jnp.float32):
    return (stddev * jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)

  return init


def he_normal(mode: str = 'fan_in', gain: float = 2.0) -> Initializer:
  """N(0, gain / fan), untruncated: torch's `kaiming_normal_` (He et al., 2015)."""
  if mode not in ('fan_in', 'fan_out'):
    raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")

  def init(key, shape, dtype=jnp.float32):
    fan = _fans(shape)[mode == 'fan_out']
    return normal(math.sqrt(gain / fan))(key, shape, dtype)

  return init


def fan_in_uniform() -> Initializer:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for Linear and Conv weights."""

  def init(key, shape, dtype=jnp.float32):
    bound = 1.0 / math.sqrt(_fans(shape)[0])
    flat = jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound)
    return flat.reshape(shape)

  return init
