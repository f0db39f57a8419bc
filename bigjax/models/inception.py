"""Inception v3 (Szegedy et al., 2016, "Rethinking the Inception Architecture for
Computer Vision"): factorised convolutions (n x n as 1 x n then n x 1), grid-size
reduction blocks, batch norm, and an auxiliary classifier on the 17 x 17 grid.

Legend: B batch, H height, W width, C channels, N classes.

Layout and widths follow torchvision's `inception_v3` so weights map name for name:
every convolution is a `ConvBN` (conv without bias + BN, eps 1e-3, + ReLU) with params
`conv/kernel`, `bn/{scale, bias}`; blocks are `Mixed_5b` ... `Mixed_7c` with the branch
names of torchvision (`branch1x1`, `branch5x5_1`, `branch7x7dbl_3`, ...); the auxiliary
head is `AuxLogits` (`conv0`, `conv1`, `fc`) and the classifier `head` (torchvision `fc`).

At 299 x 299: stem -> 35 x 35 x 192, Mixed_5* -> 35 x 35 x 288, Mixed_6a -> 17 x 17 x 768,
Mixed_6* -> 17 x 17 x 768 (auxiliary head here), Mixed_7a -> 8 x 8 x 1280,
Mixed_7b/c -> 8 x 8 x 2048, global average pool, dropout, classifier.

`small_inputs=True` pads every convolution and pool ('SAME') and drops the two stem
max-pools, so the network runs on small images (e.g. 32 x 32); `width` scales every
channel count (the test variant uses 1/16).
"""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers import initializers
from bigjax.layers.conv import check_conv_impl, conv_bn, max_pool, torch_padding
from bigjax.outputs import ModelOutput
from bigjax.typing import Dtype


class ConvBN(nn.Module):
  """Convolution (no bias) -> batch norm (eps 1e-3, as the paper's TF release) -> ReLU."""

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: Any = 'VALID'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    # torchvision draws N(0, 0.1) truncated at +-2, i.e. 20 sigma: a plain normal.
    x = conv_bn(
      x,
      self.features,
      self.kernel_size,
      self.strides,
      train=train,
      padding=self.padding,
      kernel_init=initializers.normal(0.1),
      epsilon=1e-3,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_impl=self.conv_impl,
    )
    return nn.relu(x)


class _Block(nn.Module):
  """Shared plumbing: `conv(name, c, k, ...)` builds a ConvBN with scaled width."""

  width: float = 1.0
  small_inputs: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # 'auto' | 'xla' | 'patches': how convolutions and max-pools reach XLA (layers/conv.py).
  conv_impl: str = 'auto'

  @nn.nowrap
  def ch(self, c: int) -> int:
    return max(1, round(c * self.width))

  @nn.nowrap
  def conv(
    self, name: str, c: int, k: tuple[int, int], strides: int = 1, same: bool = False
  ) -> ConvBN:
    # 'same' convolutions keep the grid; the others are unpadded unless small_inputs.
    if same:
      padding = torch_padding(k)
    else:
      padding = 'SAME' if self.small_inputs else 'VALID'
    return ConvBN(
      self.ch(c),
      k,
      strides,
      padding,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_impl=self.conv_impl,
      name=name,
    )

  @nn.nowrap
  def max_pool(self, x: jax.Array) -> jax.Array:
    padding = 'SAME' if self.small_inputs else 'VALID'
    return max_pool(x, (3, 3), (2, 2), padding, conv_impl=self.conv_impl)

  @nn.nowrap
  def avg_pool(self, x: jax.Array) -> jax.Array:
    # 3x3 stride-1 pool with zero padding counted (torch's F.avg_pool2d default).
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=True)


class InceptionA(_Block):
  """35 x 35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1 (Figure 5, 5x5 kept)."""

  pool_features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    b1 = self.conv('branch1x1', 64, (1, 1))(x, train=train)
    b5 = self.conv('branch5x5_1', 48, (1, 1))(x, train=train)
    b5 = self.conv('branch5x5_2', 64, (5, 5), same=True)(b5, train=train)
    b3 = self.conv('branch3x3dbl_1', 64, (1, 1))(x, train=train)
    b3 = self.conv('branch3x3dbl_2', 96, (3, 3), same=True)(b3, train=train)
    b3 = self.conv('branch3x3dbl_3', 96, (3, 3), same=True)(b3, train=train)
    bp = self.conv('branch_pool', self.pool_features, (1, 1))(self.avg_pool(x), train=train)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)  # [B, H, W, 224 + pool_features]


class InceptionB(_Block):
  """Grid reduction 35 -> 17 (Figure 10): strided 3x3 | 1x1-3x3-3x3/2 | max-pool."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    b3 = self.conv('branch3x3', 384, (3, 3), strides=2)(x, train=train)
    bd = self.conv('branch3x3dbl_1', 64, (1, 1))(x, train=train)
    bd = self.conv('branch3x3dbl_2', 96, (3, 3), same=True)(bd, train=train)
    bd = self.conv('branch3x3dbl_3', 96, (3, 3), strides=2)(bd, train=train)
    return jnp.concatenate([b3, bd, self.max_pool(x)], axis=-1)  # [B, H/2, W/2, 480 + C]


class InceptionC(_Block):
  """17 x 17 block with 7x7 factorised as 1x7 and 7x1 (Figure 6)."""

  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    c7 = self.channels_7x7
    b1 = self.conv('branch1x1', 192, (1, 1))(x, train=train)
    b7 = self.conv('branch7x7_1', c7, (1, 1))(x, train=train)
    b7 = self.conv('branch7x7_2', c7, (1, 7), same=True)(b7, train=train)
    b7 = self.conv('branch7x7_3', 192, (7, 1), same=True)(b7, train=train)
    bd = self.conv('branch7x7dbl_1', c7, (1, 1))(x, train=train)
    bd = self.conv('branch7x7dbl_2', c7, (7, 1), same=True)(bd, train=train)
    bd = self.conv('branch7x7dbl_3', c7, (1, 7), same=True)(bd, train=train)
    bd = self.conv('branch7x7dbl_4', c7, (7, 1), same=True)(bd, train=train)
    bd = self.conv('branch7x7dbl_5', 192, (1, 7), same=True)(bd, train=train)
    bp = self.conv('branch_pool', 192, (1, 1))(self.avg_pool(x), train=train)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)  # [B, H, W, 768]


class InceptionD(_Block):
  """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max-pool."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    b3 = self.conv('branch3x3_1', 192, (1, 1))(x, train=train)
    b3 = self.conv('branch3x3_2', 320, (3, 3), strides=2)(b3, train=train)
    b7 = self.conv('branch7x7x3_1', 192, (1, 1))(x, train=train)
    b7 = self.conv('branch7x7x3_2', 192, (1, 7), same=True)(b7, train=train)
    b7 = self.conv('branch7x7x3_3', 192, (7, 1), same=True)(b7, train=train)
    b7 = self.conv('branch7x7x3_4', 192, (3, 3), strides=2)(b7, train=train)
    return jnp.concatenate([b3, b7, self.max_pool(x)], axis=-1)  # [B, H/2, W/2, 512 + C]


class InceptionE(_Block):
  """8 x 8 block with expanded filter banks: 3x3 split into parallel 1x3 and 3x1
  (Figure 7)."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    b1 = self.conv('branch1x1', 320, (1, 1))(x, train=train)
    b3 = self.conv('branch3x3_1', 384, (1, 1))(x, train=train)
    b3 = jnp.concatenate(
      [
        self.conv('branch3x3_2a', 384, (1, 3), same=True)(b3, train=train),
        self.conv('branch3x3_2b', 384, (3, 1), same=True)(b3, train=train),
      ],
      axis=-1,
    )
    bd = self.conv('branch3x3dbl_1', 448, (1, 1))(x, train=train)
    bd = self.conv('branch3x3dbl_2', 384, (3, 3), same=True)(bd, train=train)
    bd = jnp.concatenate(
      [
        self.conv('branch3x3dbl_3a', 384, (1, 3), same=True)(bd, train=train),
        self.conv('branch3x3dbl_3b', 384, (3, 1), same=True)(bd, train=train),
      ],
      axis=-1,
    )
    bp = self.conv('branch_pool', 192, (1, 1))(self.avg_pool(x), train=train)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)  # [B, H, W, 2048]


class InceptionAux(_Block):
  """Auxiliary classifier on the 17 x 17 grid: 5x5/3 avg-pool, 1x1 (128), 5x5 (768),
  global pool, linear."""

  num_classes: int = 1000

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    x = nn.avg_pool(x, (5, 5), (3, 3), 'SAME' if self.small_inputs else 'VALID')  # [B, 5, 5, C]
    x = self.conv('conv0', 128, (1, 1))(x, train=train)
    x = self.conv('conv1', 768, (5, 5))(x, train=train)  # [B, 1, 1, 768]
    x = jnp.mean(x, axis=(1, 2))  # [B, 768]
    return nn.Dense(
      self.num_classes,
      kernel_init=initializers.normal(0.001),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='fc',
    )(x).astype(jnp.float32)


class InceptionV3(_Block):
  """Inception v3. In training returns `ModelOutput(logits, aux_logits={'aux': ...})` when
  `aux_logits` is on (the task scores the auxiliary head against the same labels); in
  evaluation the auxiliary head is skipped and only logits are returned."""

  num_classes: int = 1000
  aux_logits: bool = True
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> Any:
    """[B, H, W, 3] images (H, W >= 75 unless small_inputs) -> [B, N] logits, or in
    training a ModelOutput with [B, N] logits and [B, N] aux_logits['aux']."""
    chex.assert_rank(x, 4)
    if not self.small_inputs and min(x.shape[1:3]) < 75:
      raise ValueError(
        f'Inception v3 needs images of at least 75x75 (299x299 in the paper), '
        f'got {x.shape[1:3]}; pass small_inputs=True for small images'
      )
    kw = dict(
      width=self.width,
      small_inputs=self.small_inputs,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_impl=self.conv_impl,
    )
    check_conv_impl(self.conv_impl)
    x = x.astype(self.dtype)
    x = self.conv('Conv2d_1a_3x3', 32, (3, 3), strides=2)(x, train=train)  # [B, 149, 149, 32]
    x = self.conv('Conv2d_2a_3x3', 32, (3, 3))(x, train=train)  # [B, 147, 147, 32]
    x = self.conv('Conv2d_2b_3x3', 64, (3, 3), same=True)(x, train=train)  # [B, 147, 147, 64]
    if not self.small_inputs:
      x = self.max_pool(x)  # [B, 73, 73, 64]
    x = self.conv('Conv2d_3b_1x1', 80, (1, 1))(x, train=train)  # [B, 73, 73, 80]
    x = self.conv('Conv2d_4a_3x3', 192, (3, 3))(x, train=train)  # [B, 71, 71, 192]
    if not self.small_inputs:
      x = self.max_pool(x)  # [B, 35, 35, 192]
    x = InceptionA(pool_features=32, name='Mixed_5b', **kw)(x, train=train)  # 256
    x = InceptionA(pool_features=64, name='Mixed_5c', **kw)(x, train=train)  # 288
    x = InceptionA(pool_features=64, name='Mixed_5d', **kw)(x, train=train)  # 288
    x = InceptionB(name='Mixed_6a', **kw)(x, train=train)  # [B, 17, 17, 768]
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
      x = InceptionC(channels_7x7=c7, name=name, **kw)(x, train=train)  # [B, 17, 17, 768]
    aux = None
    # The auxiliary head runs in training (and at init, so its params always exist).
    if self.aux_logits and (train or self.is_initializing()):
      aux = InceptionAux(num_classes=self.num_classes, name='AuxLogits', **kw)(x, train=train)
    x = InceptionD(name='Mixed_7a', **kw)(x, train=train)  # [B, 8, 8, 1280]
    x = InceptionE(name='Mixed_7b', **kw)(x, train=train)  # [B, 8, 8, 2048]
    x = InceptionE(name='Mixed_7c', **kw)(x, train=train)  # [B, 8, 8, 2048]
    x = jnp.mean(x, axis=(1, 2))  # [B, 2048]
    self.sow('intermediates', 'features', x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    logits = nn.Dense(
      self.num_classes,
      kernel_init=initializers.normal(0.1),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='head',
    )(x).astype(jnp.float32)  # fp32 logits for the loss under bf16 compute
    if train and aux is not None:
      return ModelOutput(logits, aux_logits={'aux': aux})
    return logits


VARIANTS: dict[str, dict[str, Any]] = {
  'inception_v3': dict(),
  # Tiny, for CPU tests: 1/16 of every width, padded so 16x16 or 32x32 images work.
  'inception_test': dict(num_classes=10, width=1 / 16, small_inputs=True),
}

MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
  name: (InceptionV3, defaults) for name, defaults in VARIANTS.items()
}
