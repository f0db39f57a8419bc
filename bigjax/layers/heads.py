"""Output heads: the classifier head of the image models (hidden Dense layers, then a linear
classifier) and `OutputKernel`, the untied vocabulary projection of the language models.

Legend: B batch, F features, N classes.

`classifier_head` is called inside a model's `nn.compact` method, so its layers are that
model's submodules (`{prefix}_{i}` for the hidden layers, `head` for the classifier) and it
adds no level to the parameter tree. The last hidden activations are sown into
`intermediates` as 'features'.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.typing import Dtype


def classifier_head(
  model: nn.Module,
  x: jax.Array,
  hidden: Sequence[int],
  num_classes: int,
  *,
  act: Callable[[jax.Array], jax.Array],
  dropout_rate: float,
  train: bool,
  prefix: str = 'fc',
  kernel_init: Callable[..., Any] = nn.linear.default_kernel_init,
  dtype: Dtype = None,
  param_dtype: Dtype = jnp.float32,
) -> jax.Array:
  """[B, F] -> [B, num_classes] logits: per width in `hidden`, Dense -> act -> dropout."""
  dense = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype)
  for i, width in enumerate(hidden):
    x = act(nn.Dense(width, name=f'{prefix}_{i}', **dense)(x))  # [B, width]
    x = nn.Dropout(dropout_rate)(x, deterministic=not train)
  model.sow('intermediates', 'features', x)
  return nn.Dense(num_classes, name='head', **dense)(x)  # [B, N]


class OutputKernel(nn.Module):
  """The kernel [D, V] of an untied output projection, as a parameter `kernel` (the name
  and initialisation of `nn.Dense(V, use_bias=False)`'s), returned instead of applied so
  the caller decides how to apply it (all at once, or chunk by chunk: `LazyLogits`)."""

  features: int
  kernel_init: Callable[..., Any] = nn.linear.default_kernel_init
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> jax.Array:
    return self.param('kernel', self.kernel_init, (in_features, self.features), self.param_dtype)
