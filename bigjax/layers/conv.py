"""Convolution + batch norm, the unit of the torchvision-style CNNs (ResNet, VGG, Inception),
and the CPU fast path of their convolutions and max-pools.

Legend: B batch, H height, W width, C channels, F output channels, K = kh * kw * C.

`conv_bn` is called inside a model's `nn.compact` method: its `nn.Conv` and `nn.BatchNorm`
become submodules of that model under the names given, so it adds no level to the
parameter tree (ResNet's `conv1`/`bn1`, VGG's `conv_{i}`/`bn_{i}`, Inception's `conv`/`bn`).

`conv_impl` (the models' `model.conv_impl`) picks how a convolution and a max-pool reach XLA:
  'xla'      plain `lax.conv_general_dilated` and `reduce_window` max (cuDNN on GPU).
  'patches'  a convolution as one dot over its patches: k*k strided slices of the padded
             input, concatenated on channels ([B, Ho, Wo, K] @ [K, F]); a max-pool as the
             maximum of its k*k strided slices. Autodiff then yields only dots, pads, slices
             and elementwise selects.
  'auto'     (default) 'patches' where it measures faster on XLA:CPU, 'xla' elsewhere;
             decided at trace time from `jax.default_backend()` and the shapes.
Why: XLA:CPU runs some convolutions far off its Eigen fast path. Measured on 2 cores, batch
32, forward + both gradients: a 3x3 convolution with a 2x2 output and 256 channels takes
50 ms as XLA and 4.5 ms as patches (the 1x1 and 2x2 outputs of ResNet's last stages at 32x32
and 64x64 inputs), and the input gradient of a stride-2 3x3 convolution from 4x4 to 2x2 with
256 channels 164 ms against 8 ms; max-pool's gradient (`select_and_scatter`) 8.6 ms against
torch's 1.7 ms for the whole pool. Larger outputs run faster as XLA (Eigen), so 'auto' keeps
them there. The parameters are the same `nn.Conv` kernels either way.

XLA flags (jaxlib 0.10.2, 2 cores, measured 2026-11-29): XLA:CPU sends a convolution to
YNNPACK by default (a `__ynn_fusion`). `--xla_cpu_experimental_ynn_fusion_type=` (empty: no
YNN fusions) puts it back on Eigen, which runs an isolated 3x3 convolution 1.3-1.8x faster
(8x8x64 forward + gradients 4.6 -> 3.1 ms, 16x16x64 19 -> 11 ms) but the whole ResNet-18
step slower (ImageNet stem, 32x32, batch 32, 'auto': 105 -> 148 ms; 'xla': 350 ms); fast
math, XNN graph fusion (GREEDY) and YNN/XNN dot fusions measured no better than the
default, so no flag is recommended for the CNNs.

Mixed precision: under `dtype=bfloat16` Flax's BatchNorm computes its batch statistics in
float32 (`force_float32_reductions`) and XLA fuses the normalisation with the following ReLU
and residual add into the convolution's consumer, so there is no separate fused-BN kernel.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from bigjax.typing import Dtype

CONV_IMPLS = ('auto', 'xla', 'patches')

# 'auto' uses patches on CPU for outputs of at most this many pixels, and for 1x1 kernels (a
# strided slice and one dot). Measured crossover on 2 cores: 2x2 outputs are 2-20x faster
# as patches, 4x4 and larger 1-2.5x slower.
_AUTO_MAX_OUTPUT_PIXELS = 4


def check_conv_impl(impl: str) -> str:
  if impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv_impl {impl!r}; choose one of {list(CONV_IMPLS)}')
  return impl


def _pads(
  shape: Sequence[int], window: Sequence[int], strides: Sequence[int], padding: Any
) -> list[tuple[int, int]]:
  """Explicit (low, high) pads per spatial axis for a padding string or pairs."""
  if isinstance(padding, str):
    return [tuple(p) for p in lax.padtype_to_pads(shape, window, strides, padding)]
  return [tuple(p) for p in padding]


def _strided_slices(x: jax.Array, window: Sequence[int], strides: Sequence[int]):
  """[B, H, W, C] (already padded) -> the kh*kw window taps, each [B, Ho, Wo, C], row-major."""
  b, h, w, c = x.shape
  (kh, kw), (sh, sw) = window, strides
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  return [
    lax.slice(x, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
    for i in range(kh)
    for j in range(kw)
  ]


def patches_conv(
  x: jax.Array,
  kernel: jax.Array,
  strides: Sequence[int],
  padding: Any,
  precision: Any = None,
  preferred_element_type: Any = None,
) -> jax.Array:
  """[B, H, W, C] * [kh, kw, C, F] -> [B, Ho, Wo, F]: the convolution as one dot over patches.

  Same result as `lax.conv_general_dilated` with NHWC/HWIO/NHWC layouts (cross-correlation).
  """
  kh, kw, c, f = kernel.shape
  pads = _pads(x.shape[1:3], (kh, kw), strides, padding)
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  taps = _strided_slices(x, (kh, kw), strides)
  cols = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)  # [B, Ho, Wo, K]
  return lax.dot_general(
    cols,
    kernel.reshape(kh * kw * c, f),  # [K, F], K ordered (i, j, c) as the taps
    (((3,), (0,)), ((), ())),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )  # [B, Ho, Wo, F]


def _use_patches(impl: str, out_pixels: int, kernel_pixels: int) -> bool:
  check_conv_impl(impl)
  if impl != 'auto':
    return impl == 'patches'
  if jax.default_backend() != 'cpu':
    return False
  return kernel_pixels == 1 or out_pixels <= _AUTO_MAX_OUTPUT_PIXELS


@functools.cache
def conv_general_dilated(impl: str) -> Callable[..., jax.Array]:
  """A drop-in for `lax.conv_general_dilated` (as `nn.Conv(conv_general_dilated=...)`) that
  takes the patches path per `impl`; cached so every `nn.Conv` gets the same function."""
  check_conv_impl(impl)
  nhwc = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ('NHWC', 'HWIO', 'NHWC'))

  def conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    preferred_element_type=None,
    **kw,
  ):
    plain = functools.partial(
      lax.conv_general_dilated,
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
      **kw,
    )
    supported = (
      lhs.ndim == 4
      and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
      and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
      and feature_group_count == 1
      and not kw
    )
    if not supported:
      return plain()
    kh, kw_ = rhs.shape[:2]
    pads = _pads(lhs.shape[1:3], (kh, kw_), window_strides, padding)
    out = [
      (n + lo + hi - k) // s + 1
      for n, (lo, hi), k, s in zip(lhs.shape[1:3], pads, (kh, kw_), window_strides)
    ]
    if not _use_patches(impl, out[0] * out[1], kh * kw_):
      return plain()
    return patches_conv(lhs, rhs, window_strides, pads, precision, preferred_element_type)

  return conv


def max_pool(
  x: jax.Array,
  window: tuple[int, int],
  strides: tuple[int, int] | None = None,
  padding: Any = 'VALID',
  *,
  conv_impl: str = 'auto',
) -> jax.Array:
  """[B, H, W, C] -> [B, Ho, Wo, C]: `nn.max_pool`, or with 'patches' (and 'auto' on CPU) the
  maximum of the window's strided slices, whose gradient is elementwise selects rather than
  XLA:CPU's slow `select_and_scatter`. Pads with -inf as `nn.max_pool`. On ties the slices'
  gradient is split between the tied inputs (the pooled gradient's total is the same)."""
  strides = strides or (1, 1)
  check_conv_impl(conv_impl)
  if conv_impl == 'xla' or (conv_impl == 'auto' and jax.default_backend() != 'cpu'):
    return nn.max_pool(x, window, strides, padding)
  pads = _pads(x.shape[1:3], window, strides, padding)
  low = jnp.array(-jnp.inf, x.dtype)
  x = lax.pad(x, low, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  return functools.reduce(jnp.maximum, _strided_slices(x, window, strides))  # [B, Ho, Wo, C]


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
  conv_impl: str = 'auto',
) -> jax.Array:
  """[B, H, W, C] -> [B, H / strides, W / strides, features]: convolution, then batch norm.

  No activation (the residual sum comes first in ResNet). `norm=False` leaves the batch norm
  out (plain VGG); the convolution has a bias only with `use_bias`. `conv_impl` as above.
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
    conv_general_dilated=conv_general_dilated(conv_impl),
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
