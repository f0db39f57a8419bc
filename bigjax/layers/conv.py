"""Convolution + batch norm, the unit of the torchvision-style CNNs (ResNet, VGG, Inception).

Legend: B batch, H height, W width, C channels.

`conv_bn` is called inside a model's `nn.compact` method: its `nn.Conv` and `nn.BatchNorm`
become submodules of that model under the names given, so it adds no level to the
parameter tree (ResNet's `conv1`/`bn1`, VGG's `conv_{i}`/`bn_{i}`, Inception's `conv`/`bn`).
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.typing import Dtype


def torch_padding(kernel_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Symmetric padding k // 2 per axis, as torch's `padding=k // 2`.

  Flax's 'SAME' pads a strided convolution asymmetrically, torch does not.
  """
  return tuple((k // 2, k // 2) for k in kernel_size)


def conv_bn(
  x: jax.Array,
  features: int,
  kernel_size: tuple[int, int],
  strides: int = 1,
  *,
  train: bool,
  padding: Any,
  kernel_init: Callable[..., Any],
  names: tuple[str, str] = ('conv', 'bn'),
  use_bias: bool = False,
  norm: bool = True,
  epsilon: float = 1e-5,
  scale_init: Callable[..., Any] = nn.initializers.ones,
  dtype: Dtype = None,
  param_dtype: Dtype = jnp.float32,
) -> jax.Array:
  """[B, H, W, C] -> [B, H / strides, W / strides, features]: convolution, then batch norm.

  No activation (the residual sum comes first in ResNet). `norm=False` leaves the batch norm
  out (plain VGG); the convolution has a bias only with `use_bias`.
  """
  conv_name, bn_name = names
  dtypes = dict(dtype=dtype, param_dtype=param_dtype)
  x = nn.Conv(
    features,
    kernel_size,
    (strides, strides),
    padding=padding,
    use_bias=use_bias,
    kernel_init=kernel_init,
    name=conv_name,
    **dtypes,
  )(x)
  if not norm:
    return x
  # torch's BatchNorm2d: running statistics with momentum 0.1 (Flax's 0.9).
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=epsilon,
    scale_init=scale_init,
    name=bn_name,
    **dtypes,
  )(x)
