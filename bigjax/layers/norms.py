"""Normalisation layers behind one choice: `norm='layernorm' | 'rmsnorm'`.

LayerNorm (Ba et al., 2016) has parameters `scale` and `bias` [D]; RMSNorm (Zhang &
Sennrich, 2019; Llama) divides by the root mean square without centring and has only
`scale` [D]. Both compute their statistics in float32 under bf16 compute.
"""

import flax.linen as nn
import jax.numpy as jnp

from bigjax.typing import Dtype

NORMS = ('layernorm', 'rmsnorm')


def check_norm(kind: str) -> None:
  if kind not in NORMS:
    raise ValueError(f'unknown norm {kind!r}; choose one of {NORMS}')


def make_norm(
  kind: str = 'layernorm',
  *,
  epsilon: float = 1e-6,
  dtype: Dtype = None,
  param_dtype: Dtype = jnp.float32,
  name: str | None = None,
) -> nn.Module:
  """An `nn.LayerNorm` or `nn.RMSNorm` over the last axis, named `name`."""
  check_norm(kind)
  cls = nn.LayerNorm if kind == 'layernorm' else nn.RMSNorm
  return cls(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)
