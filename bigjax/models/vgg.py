"""VGG (Simonyan & Zisserman, 2015, "Very Deep Convolutional Networks for Large-Scale
Image Recognition"), configurations A, B, D, E = VGG-11/13/16/19, optionally with batch
norm after every convolution (as in torchvision's `vgg*_bn`).

Legend: B batch, H height, W width, C channels, P pooled side, N classes.

Parameter tree: `conv_{i}/{kernel, bias}` (and `bn_{i}/{scale, bias}` with batch norm),
i counting convolutions from 0; `fc_0`, `fc_1` (the two hidden layers), `head`.
Torchvision's `features.{k}` are the convolutions in order, `classifier.{0,3,6}` are
`fc_0`, `fc_1`, `head`. The classifier input is flattened in [P, P, C] order
(torchvision flattens [C, P, P]).

Before the classifier an adaptive average pool (as torch's AdaptiveAvgPool2d) maps the
feature map to P x P (7 x 7 in the paper's 224 x 224 setting). For 32 x 32 CIFAR inputs
the map is 1 x 1 and P = 7 replicates it; `pool_size=1, hidden=512` gives the smaller
CIFAR-style classifier.
"""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.layers import initializers
from bigjax.layers.conv import check_conv_impl, conv_bn, max_pool
from bigjax.layers.heads import classifier_head
from bigjax.typing import Dtype

# Layer configurations of Table 1: ints are 3x3 conv widths, 'M' a 2x2 max-pool.
CONFIGS: dict[str, tuple[Any, ...]] = {
  'A': (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
  'B': (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
  'D': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'),
  'E': (
    64,
    64,
    'M',
    128,
    128,
    'M',
    256,
    256,
    256,
    256,
    'M',
    512,
    512,
    512,
    512,
    'M',
    512,
    512,
    512,
    512,
    'M',
  ),
  'test': (8, 'M', 16, 'M'),
}


def _adaptive_weights(size: int, out: int) -> np.ndarray:
  """[out, size] averaging matrix of torch's adaptive pooling: bin i covers
  [floor(i * size / out), ceil((i + 1) * size / out))."""
  w = np.zeros((out, size), np.float32)
  for i in range(out):
    lo, hi = (i * size) // out, -(-((i + 1) * size) // out)
    w[i, lo:hi] = 1.0 / (hi - lo)
  return w


def adaptive_avg_pool(x: jax.Array, out: int) -> jax.Array:
  """[B, H, W, C] -> [B, out, out, C], as torch.nn.AdaptiveAvgPool2d(out)."""
  wh = jnp.asarray(_adaptive_weights(x.shape[1], out), x.dtype)
  ww = jnp.asarray(_adaptive_weights(x.shape[2], out), x.dtype)
  return jnp.einsum('ih,bhwc,jw->bijc', wh, x, ww)  # [B, P, P, C]


class VGG(nn.Module):
  """VGG: 3x3 convolutions and max-pools, then a 3-layer classifier with dropout."""

  config: str = 'D'
  batch_norm: bool = False
  num_classes: int = 1000
  pool_size: int = 7
  hidden: int = 4096
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # 'auto' | 'xla' | 'patches': how convolutions and max-pools reach XLA (layers/conv.py).
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, H, W, C] images (H, W >= 2**pools) -> [B, num_classes] float32 logits."""
    chex.assert_rank(x, 4)
    check_conv_impl(self.conv_impl)
    if self.config not in CONFIGS:
      raise ValueError(f'unknown VGG config {self.config!r}; choose one of {sorted(CONFIGS)}')
    layers = CONFIGS[self.config]
    pools = sum(v == 'M' for v in layers)
    if min(x.shape[1:3]) < 2**pools:
      raise ValueError(
        f'VGG config {self.config!r} halves the image {pools} times; '
        f'give images of at least {2**pools}x{2**pools}, got {x.shape[1:3]}'
      )
    x = x.astype(self.dtype)
    i = 0
    for v in layers:
      if v == 'M':
        x = max_pool(x, (2, 2), (2, 2), conv_impl=self.conv_impl)  # [B, H/2, W/2, C]
        continue
      x = conv_bn(
        x,
        v,
        (3, 3),
        train=train,
        padding=((1, 1), (1, 1)),
        kernel_init=initializers.he_normal('fan_out'),
        names=(f'conv_{i}', f'bn_{i}'),
        use_bias=True,
        norm=self.batch_norm,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        conv_impl=self.conv_impl,
      )
      x = nn.relu(x)
      i += 1
    x = adaptive_avg_pool(x, self.pool_size)  # [B, P, P, C]
    x = x.reshape(x.shape[0], -1)  # [B, P*P*C]
    return classifier_head(
      self,
      x,
      (self.hidden, self.hidden),
      self.num_classes,
      act=nn.relu,
      dropout_rate=self.dropout_rate,
      train=train,
      kernel_init=initializers.normal(0.01),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    ).astype(jnp.float32)  # fp32 logits for the loss under bf16 compute


VARIANTS: dict[str, dict[str, Any]] = {
  'vgg11': dict(config='A'),
  'vgg13': dict(config='B'),
  'vgg16': dict(config='D'),
  'vgg19': dict(config='E'),
  # Tiny, for CPU tests: two convolutions, a 2x2 pool and 32-unit hidden layers.
  'vgg_test': dict(config='test', num_classes=10, pool_size=2, hidden=32),
}

MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
  **{name: (VGG, defaults) for name, defaults in VARIANTS.items()},
  **{
    f'{name}_bn': (VGG, dict(batch_norm=True, **defaults))
    for name, defaults in VARIANTS.items()
    if name != 'vgg_test'
  },
}
