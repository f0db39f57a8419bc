"""Multi-layer perceptron (a plain DNN) for flattened inputs.

Legend: B batch, D width, C classes; images [B, H, W, C] are flattened to [B, H*W*C].
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers.activations import ACTIVATIONS, activation
from bigjax.layers.heads import classifier_head
from bigjax.typing import Dtype

__all__ = ['ACTIVATIONS', 'MLP', 'activation']


class MLP(nn.Module):
  """`depth` hidden layers of `width` units, then a linear classifier.

  `activation` is a name in `bigjax.layers.ACTIVATIONS` (re-exported here).
  """

  num_classes: int = 10
  depth: int = 2
  width: int = 256
  activation: str = 'relu'
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, ...] -> [B, num_classes] logits."""
    act = activation(self.activation)
    x = x.reshape(x.shape[0], -1).astype(self.dtype)  # [B, D_in]
    logits = classifier_head(
      self,
      x,
      (self.width,) * self.depth,
      self.num_classes,
      act=act,
      dropout_rate=self.dropout_rate,
      train=train,
      prefix='hidden',
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    chex.assert_rank(logits, 2)
    return logits


MODELS: dict[str, tuple[type[nn.Module], dict]] = {'mlp': (MLP, {})}
