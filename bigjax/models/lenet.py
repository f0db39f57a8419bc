"""LeNet-5-style CNN (LeCun et al., 1998), with ReLU and max-pooling as is usual today.

Legend: B batch, H height, W width, C channels. Small inputs (8x8 digits) keep their
size through 'SAME' convolutions; 28x28 and 32x32 inputs follow the classic shapes.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers.activations import activation
from bigjax.layers.conv import check_conv_impl, conv_general_dilated, max_pool
from bigjax.layers.heads import classifier_head
from bigjax.typing import Dtype


class LeNet(nn.Module):
  """conv(6, 5x5) -> pool -> conv(16, 5x5) -> pool -> fc(120) -> fc(84) -> fc(classes)."""

  num_classes: int = 10
  features: tuple[int, ...] = (6, 16)
  hidden: tuple[int, ...] = (120, 84)
  kernel_size: int = 5
  activation: str = 'relu'
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # 'auto' | 'xla' | 'patches': how convolutions and max-pools reach XLA (layers/conv.py).
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, H, W, C] images -> [B, num_classes] float32 logits."""
    chex.assert_rank(x, 4)
    check_conv_impl(self.conv_impl)
    act = activation(self.activation)
    x = x.astype(self.dtype)
    # LeNet-5 sees 32x32 images with unpadded convolutions (32 -> 28 -> 14 -> 10 -> 5);
    # smaller inputs (28x28 MNIST, 8x8 digits) are padded ('SAME') to keep their support.
    padding = 'VALID' if x.shape[1] >= 32 else 'SAME'
    for i, f in enumerate(self.features):
      x = nn.Conv(
        f,
        (self.kernel_size, self.kernel_size),
        padding=padding,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        conv_general_dilated=conv_general_dilated(self.conv_impl),
        name=f'conv_{i}',
      )(x)
      x = act(x)
      if x.shape[1] >= 2:
        x = max_pool(x, (2, 2), (2, 2), conv_impl=self.conv_impl)  # [B, H/2, W/2, f]
    x = x.reshape(x.shape[0], -1)  # [B, H*W*C]
    return classifier_head(
      self,
      x,
      self.hidden,
      self.num_classes,
      act=act,
      dropout_rate=self.dropout_rate,
      train=train,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    ).astype(jnp.float32)  # fp32 logits for the loss under bf16 compute


MODELS: dict[str, tuple[type[nn.Module], dict]] = {'lenet': (LeNet, {})}
