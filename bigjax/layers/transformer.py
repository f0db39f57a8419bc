"""Transformer encoder and decoder blocks, pre-LN or post-LN.

Legend: B batch, T target length, S source length, D width.
Post-LN (`pre_norm=False`) is the layout of "Attention Is All You Need" and of
`torch.nn.Transformer`; pre-LN (Xiong et al., 2020) is what ViT, GPT-2 and most modern
models use.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers.attention import MultiHeadAttention
from bigjax.layers.mlp import MlpBlock
from bigjax.typing import Dtype


def _residual(block: nn.Module, name: str, x: jax.Array, f, train: bool) -> jax.Array:
  """x + dropout(f(norm(x))) for pre-LN, norm(x + dropout(f(x))) for post-LN."""
  norm = nn.LayerNorm(
    epsilon=block.layer_norm_eps,
    dtype=block.dtype,
    param_dtype=block.param_dtype,
    name=name,
  )
  y = f(norm(x) if block.pre_norm else x)
  y = nn.Dropout(block.dropout_rate)(y, deterministic=not train)
  return x + y if block.pre_norm else norm(x + y)


class EncoderBlock(nn.Module):
  """Self-attention then MLP, each in a residual branch. [B, T, D] -> [B, T, D]."""

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  pre_norm: bool = True
  layer_norm_eps: float = 1e-6
  activation: Callable[[jax.Array], jax.Array] = nn.gelu
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.xavier_uniform()
  attention_impl: str | None = None

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    *,
    mask: jax.Array | None = None,
    causal: bool = False,
    train: bool = False,
    decode: bool = False,
  ) -> jax.Array:
    attn = MultiHeadAttention(
      self.num_heads,
      decode=decode,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      implementation=self.attention_impl,
      name='attn',
    )
    x = _residual(self, 'attn_norm', x, lambda h: attn(h, mask=mask, causal=causal), train)
    mlp = MlpBlock(
      self.mlp_dim,
      activation=self.activation,
      dropout_rate=self.dropout_rate,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      name='mlp',
    )
    return _residual(self, 'mlp_norm', x, lambda h: mlp(h, train=train), train)


class DecoderBlock(nn.Module):
  """Causal self-attention, cross-attention to the encoder, then MLP.

  [B, T, D] targets and [B, S, D] encoder output -> [B, T, D].
  """

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  pre_norm: bool = True
  layer_norm_eps: float = 1e-6
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.xavier_uniform()
  attention_impl: str | None = None

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    encoded: jax.Array,
    *,
    self_mask: jax.Array | None = None,
    cross_mask: jax.Array | None = None,
    train: bool = False,
    decode: bool = False,
  ) -> jax.Array:
    mha = lambda name, dec: MultiHeadAttention(  # noqa: E731
      self.num_heads,
      decode=dec,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      implementation=self.attention_impl,
      name=name,
    )
    self_attn = mha('self_attn', decode)
    x = _residual(self, 'self_norm', x, lambda h: self_attn(h, mask=self_mask, causal=True), train)
    cross_attn = mha('cross_attn', False)
    x = _residual(self, 'cross_norm', x, lambda h: cross_attn(h, encoded, mask=cross_mask), train)
    mlp = MlpBlock(
      self.mlp_dim,
      activation=self.activation,
      dropout_rate=self.dropout_rate,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      name='mlp',
    )
    return _residual(self, 'mlp_norm', x, lambda h: mlp(h, train=train), train)
