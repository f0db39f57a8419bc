"""The activation table: one name for each nonlinearity, shared by every family.

'gelu' is the exact erf form (Hendrycks & Gimpel, 2016), as in `torch.nn.GELU()`, the ViT
paper and BERT; 'gelu_tanh' is its tanh approximation (GPT-2, `jax.nn.gelu`'s default).
'silu' is x * sigmoid(x) (Swish; the gate of SwiGLU, Shazeer, 2020). 'quick_gelu' is
x * sigmoid(1.702 x), the sigmoid approximation of GELU (Hendrycks & Gimpel, 2016, section 2)
that OpenAI's CLIP was trained with (Hugging Face `hidden_act='quick_gelu'`).
"""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]


def quick_gelu(x: jax.Array) -> jax.Array:
  return x * nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Activation] = {
  'gelu': functools.partial(nn.gelu, approximate=False),
  'gelu_tanh': functools.partial(nn.gelu, approximate=True),
  'relu': nn.relu,
  'silu': nn.silu,
  'quick_gelu': quick_gelu,
  'tanh': jnp.tanh,
  'sigmoid': nn.sigmoid,
}


def activation(name: str | Activation) -> Activation:
  """The activation called `name` (a callable is returned as it is)."""
  if callable(name):
    return name
  if name not in ACTIVATIONS:
    raise ValueError(f'unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}')
  return ACTIVATIONS[name]
