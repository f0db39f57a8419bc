"""The position-wise feed-forward block of Transformers: Dense -> act -> dropout -> Dense."""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.typing import Dtype


class MlpBlock(nn.Module):
  """[..., D] -> [..., D (or out_features)] through a hidden layer of `mlp_dim`."""

  mlp_dim: int
  out_features: int | None = None
  activation: Callable[[jax.Array], jax.Array] = nn.gelu
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    dense = lambda n, name: nn.Dense(  # noqa: E731
      n,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      bias_init=nn.initializers.zeros,
      name=name,
    )
    h = self.activation(dense(self.mlp_dim, 'fc1')(x))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    return dense(self.out_features or x.shape[-1], 'fc2')(h)
