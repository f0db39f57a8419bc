"""ResNet v1.5 (He et al., 2016, "Deep Residual Learning for Image Recognition").

v1.5 puts the stride of a bottleneck block on its 3x3 convolution (as torchvision and
Hugging Face `microsoft/resnet-*` do) instead of the first 1x1.

Legend: B batch, H height, W width, C channels, N classes.

Parameter tree (`params`; `batch_stats` holds `mean`/`var` under the same `bn*` paths):

  stem_conv/kernel                        [7, 7, 3, 64]  (3x3, stride 1 with cifar_stem)
  stem_bn/{scale, bias}                   [64]
  stage_{i}/block_{j}/conv1/kernel        i = 0..3, j = 0..stage_sizes[i]-1
  stage_{i}/block_{j}/bn1/{scale, bias}
  stage_{i}/block_{j}/conv2/kernel, bn2   (basic blocks end here)
  stage_{i}/block_{j}/conv3/kernel, bn3   (bottleneck blocks only)
  stage_{i}/block_{j}/downsample/conv/kernel    [1, 1, C_in, C_out] (first block of a
  stage_{i}/block_{j}/downsample/bn/{scale, bias}  stage when stride or width changes)
  head/{kernel, bias}                     [C_final, N]

Convolutions have no bias; kernels are [kh, kw, C_in, C_out] (torch: [C_out, C_in, kh, kw]).
Torchvision's `layer{i+1}.{j}` is `stage_{i}/block_{j}`; Hugging Face's
`resnet.encoder.stages.{i}.layers.{j}.layer.{0,1,2}` is `conv1..3`/`bn1..3` and its
`shortcut` is `downsample`; `resnet.embedder.embedder` is `stem_conv`/`stem_bn`;
`classifier.1` (torchvision `fc`) is `head`.

The pooled feature vector [B, C_final] is sown into `intermediates` as 'features'.
"""

from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers import initializers
from bigjax.layers.conv import check_conv_impl, conv_bn, max_pool, torch_padding
from bigjax.typing import Dtype

# torchvision initialises convolutions with Kaiming normal, fan_out mode, and the
# classifier with torch's default U(+-1/sqrt(fan_in)).
conv_init = initializers.he_normal('fan_out')


class _ResidualBlock(nn.Module):
  """conv-BN-ReLU units in a row (the last without ReLU) plus the shortcut, then ReLU.

  A subclass gives `layout`: per convolution, its kernel side and whether it carries the
  block's stride. The last one has `features * expansion` channels, the others `features`.
  """

  features: int
  strides: int = 1
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  conv_impl: str = 'auto'
  expansion: ClassVar[int] = 1
  layout: ClassVar[tuple[tuple[int, bool], ...]] = ()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    out = self.features * self.expansion
    last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    y = x
    for i, (k, strided) in enumerate(self.layout, start=1):
      last = i == len(self.layout)
      y = conv_bn(
        y,
        out if last else self.features,
        (k, k),
        self.strides if strided else 1,
        train=train,
        padding=torch_padding((k, k)),
        kernel_init=conv_init,
        names=(f'conv{i}', f'bn{i}'),
        scale_init=last_scale if last else nn.initializers.ones,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        conv_impl=self.conv_impl,
      )
      if not last:
        y = nn.relu(y)
    return nn.relu(y + _shortcut(self, x, out, train))


class BasicBlock(_ResidualBlock):
  """Two 3x3 convolutions (ResNet-18/34); the stride sits on the first."""

  layout = ((3, True), (3, False))


class Bottleneck(_ResidualBlock):
  """1x1 reduce -> 3x3 (strided, v1.5) -> 1x1 expand by 4 (ResNet-50/101/152)."""

  expansion = 4
  layout = ((1, False), (3, True), (1, False))


class Downsample(nn.Module):
  """Projection shortcut: strided 1x1 convolution + batch norm."""

  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    return conv_bn(
      x,
      self.features,
      (1, 1),
      self.strides,
      train=train,
      padding='VALID',
      kernel_init=conv_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_impl=self.conv_impl,
    )


def _shortcut(block: nn.Module, x: jax.Array, out: int, train: bool) -> jax.Array:
  """Identity, or a projection when the block changes resolution or width."""
  if block.strides == 1 and x.shape[-1] == out:
    return x
  # Called inside the block's compact method, so the block becomes the parent.
  return Downsample(
    out,
    block.strides,
    dtype=block.dtype,
    param_dtype=block.param_dtype,
    conv_impl=block.conv_impl,
    name='downsample',
  )(x, train=train)


BLOCKS: dict[str, Any] = {'basic': BasicBlock, 'bottleneck': Bottleneck}


class Stage(nn.Module):
  """`num_blocks` blocks of one width; the first one carries the stride."""

  block_cls: Any
  features: int
  num_blocks: int
  strides: int = 1
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    for j in range(self.num_blocks):
      x = self.block_cls(
        self.features,
        strides=self.strides if j == 0 else 1,
        zero_init_residual=self.zero_init_residual,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        conv_impl=self.conv_impl,
        name=f'block_{j}',
      )(x, train=train)
    return x


class ResNet(nn.Module):
  """ResNet v1.5 for [B, H, W, C] images.

  stage_sizes: blocks per stage; stage i has width `width * 2**i` (times 4 at the end of a
    bottleneck). cifar_stem: a 3x3 stride-1 stem without max-pool, for 32x32 inputs.
  zero_init_residual: the last BN of each block starts with gamma = 0 (Goyal et al., 2017),
    so every residual block starts as the identity.
  conv_impl: 'auto' | 'xla' | 'patches', how convolutions and the stem's max-pool reach XLA
    (see `bigjax.layers.conv`); the parameters are the same for all three.
  dtype: compute dtype (bfloat16 for mixed precision); batch statistics and the logits stay
    float32.
  """

  stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
  block: str = 'basic'
  width: int = 64
  num_classes: int = 1000
  cifar_stem: bool = False
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, H, W, C] images -> [B, num_classes] float32 logits."""
    chex.assert_rank(x, 4)
    check_conv_impl(self.conv_impl)
    if self.block not in BLOCKS:
      raise ValueError(f'unknown ResNet block {self.block!r}; choose one of {sorted(BLOCKS)}')
    block_cls = BLOCKS[self.block]
    x = x.astype(self.dtype)
    k, stride = (3, 1) if self.cifar_stem else (7, 2)
    x = conv_bn(
      x,
      self.width,
      (k, k),
      stride,
      train=train,
      padding=torch_padding((k, k)),
      kernel_init=conv_init,
      names=('stem_conv', 'stem_bn'),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_impl=self.conv_impl,
    )  # [B, H/2, W/2, C] (H, W with cifar_stem)
    x = nn.relu(x)
    if not self.cifar_stem:
      x = max_pool(
        x, (3, 3), (2, 2), torch_padding((3, 3)), conv_impl=self.conv_impl
      )  # [B, H/4, W/4, C]
    for i, n in enumerate(self.stage_sizes):
      x = Stage(
        block_cls,
        self.width * 2**i,
        n,
        strides=1 if i == 0 else 2,
        zero_init_residual=self.zero_init_residual,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        conv_impl=self.conv_impl,
        name=f'stage_{i}',
      )(x, train=train)
    x = jnp.mean(x, axis=(1, 2))  # [B, C_final]
    self.sow('intermediates', 'features', x)
    return nn.Dense(
      self.num_classes,
      kernel_init=initializers.fan_in_uniform(),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='head',
    )(x).astype(jnp.float32)  # fp32 logits for the loss under bf16 compute


# He et al. (2016), Table 1.
VARIANTS: dict[str, dict[str, Any]] = {
  'resnet18': dict(stage_sizes=(2, 2, 2, 2), block='basic'),
  'resnet34': dict(stage_sizes=(3, 4, 6, 3), block='basic'),
  'resnet50': dict(stage_sizes=(3, 4, 6, 3), block='bottleneck'),
  'resnet101': dict(stage_sizes=(3, 4, 23, 3), block='bottleneck'),
  'resnet152': dict(stage_sizes=(3, 8, 36, 3), block='bottleneck'),
  # Tiny, for CPU tests: two stages of one basic block, 8 channels, CIFAR stem.
  'resnet_test': dict(stage_sizes=(1, 1), block='basic', width=8, num_classes=10, cifar_stem=True),
}

MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
  name: (ResNet, defaults) for name, defaults in VARIANTS.items()
}
