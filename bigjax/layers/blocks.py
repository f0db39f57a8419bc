"""Transformer blocks built from one `BlockConfig`: encoder (also the decoder-only block)
and encoder-decoder decoder, pre-norm or post-norm.

Legend: B batch, T target length, S source length, D width.
Post-norm (`pre_norm=False`) is the layout of "Attention Is All You Need" and of
`torch.nn.Transformer`; pre-norm (Xiong et al., 2020) is what ViT, GPT-2, Llama and most
modern models use.

A decoder-only ("causal LM") block is an `EncoderBlock` called with `causal=True` (and
`decode=True` for a KV cache): GPT-2 is `BlockConfig(activation='gelu_tanh')`, Llama is
`BlockConfig(norm='rmsnorm', gated_mlp=True, activation='silu', use_bias=False,
position='rotary', num_kv_heads=...)`.

A mixture of experts replaces the MLP when `num_experts > 0` (`MoeBlock`, Mixtral is the
Llama block with `num_experts=8, experts_per_token=2`); the block then returns
`(x, aux)`, aux the MoE's auxiliary values (balance_loss, z_loss, expert_load [E]) over
the tokens that `key_valid` marks valid.

Parameter names (stable):
  EncoderBlock: attn_norm, attn (`MultiHeadAttention`), mlp_norm, mlp (`MlpBlock` or `MoeBlock`)
  DecoderBlock: self_norm, self_attn, cross_norm, cross_attn, mlp_norm, mlp
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers.activations import ACTIVATIONS
from bigjax.layers.attention import IMPLEMENTATIONS, POSITIONS, MultiHeadAttention
from bigjax.layers.mlp import MlpBlock
from bigjax.layers.moe import MoeBlock
from bigjax.layers.norms import check_norm, make_norm
from bigjax.layers.partitioning import constrain
from bigjax.typing import Dtype


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """Everything a Transformer block needs, shared by the blocks of one stack.

  Hashable, so it can be a Linen attribute; derive variants with `dataclasses.replace`.
  """

  num_heads: int
  mlp_dim: int
  num_kv_heads: int | None = None  # grouped-query attention; None: = num_heads
  head_dim: int | None = None  # None: D // num_heads
  dropout_rate: float = 0.0  # on each residual branch and inside the MLP
  pre_norm: bool = True
  norm: str = 'layernorm'  # 'layernorm' | 'rmsnorm'
  layer_norm_eps: float = 1e-6
  activation: str = 'gelu'  # a name in `bigjax.layers.ACTIVATIONS`
  gated_mlp: bool = False  # SwiGLU / GeGLU
  use_bias: bool = True  # in attention and MLP projections
  position: str = 'none'  # 'none' | 'rotary' (self-attention q and k)
  rope_theta: float = 1e4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.xavier_uniform()
  attention_impl: str | None = None  # None / 'xla' / 'cudnn' / 'auto' (see attention.py)
  # The residual branches' output projections (attn/out, mlp/fc2, the experts' fc2); None:
  # kernel_init. GPT-2 draws them with std / sqrt(2 * num_layers) (Radford et al., 2019).
  out_kernel_init: Callable[..., Any] | None = None
  num_experts: int = 0  # > 0: a mixture of experts (`MoeBlock`) in place of the MLP
  experts_per_token: int = 2
  capacity_factor: float = 0.0  # MoE: 0 = dropless; > 0 = capacity per expert and row

  def __post_init__(self):
    check_norm(self.norm)
    if self.activation not in ACTIVATIONS:
      raise ValueError(
        f'unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}'
      )
    if self.position not in POSITIONS:
      raise ValueError(f'position must be one of {POSITIONS}, got {self.position!r}')
    if self.attention_impl not in IMPLEMENTATIONS:
      raise ValueError(f'attention_impl must be one of {IMPLEMENTATIONS}')
    kv = self.num_kv_heads or self.num_heads
    if self.num_heads % kv:
      raise ValueError(f'num_heads {self.num_heads} is not a multiple of num_kv_heads {kv}')
    if self.num_experts and not 1 <= self.experts_per_token <= self.num_experts:
      raise ValueError(
        f'experts_per_token must be in [1, num_experts], got {self.experts_per_token} '
        f'of {self.num_experts}'
      )

  def attention(self, name: str, *, decode: bool = False, rotary: bool = True):
    """The block's `MultiHeadAttention` (rotary only where `rotary`: not cross-attention)."""
    return MultiHeadAttention(
      self.num_heads,
      num_kv_heads=self.num_kv_heads,
      head_dim=self.head_dim,
      use_bias=self.use_bias,
      position=self.position if rotary else 'none',
      rope_theta=self.rope_theta,
      decode=decode,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      implementation=self.attention_impl,
      out_kernel_init=self.out_kernel_init,
      name=name,
    )

  def mlp(self, name: str = 'mlp') -> MlpBlock | MoeBlock:
    """The block's `MlpBlock`, or a `MoeBlock` when `num_experts > 0`."""
    if self.num_experts:
      return MoeBlock(
        self.num_experts,
        experts_per_token=self.experts_per_token,
        mlp_dim=self.mlp_dim,
        activation=self.activation,
        gated=self.gated_mlp,
        use_bias=self.use_bias,
        capacity_factor=self.capacity_factor,
        dropout_rate=self.dropout_rate,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=self.kernel_init,
        out_kernel_init=self.out_kernel_init,
        name=name,
      )
    return MlpBlock(
      self.mlp_dim,
      activation=self.activation,
      gated=self.gated_mlp,
      dropout_rate=self.dropout_rate,
      use_bias=self.use_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      out_kernel_init=self.out_kernel_init,
      name=name,
    )

  def make_norm(self, name: str) -> nn.Module:
    return make_norm(
      self.norm,
      epsilon=self.layer_norm_eps,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
    )


def _residual(config: BlockConfig, name: str, x: jax.Array, f, train: bool) -> jax.Array:
  """x + dropout(f(norm(x))) for pre-norm, norm(x + dropout(f(x))) for post-norm."""
  norm = config.make_norm(name)
  y = f(norm(x) if config.pre_norm else x)
  y = nn.Dropout(config.dropout_rate)(y, deterministic=not train)
  return x + y if config.pre_norm else norm(x + y)


def _mlp_residual(config: BlockConfig, x: jax.Array, valid, train: bool):
  """The MLP's residual branch: x, or (x, aux) with a mixture of experts."""
  mlp = config.mlp()
  if not config.num_experts:
    return _residual(config, 'mlp_norm', x, lambda h: mlp(h, train=train), train)
  aux = {}

  def f(h):
    y, values = mlp(h, valid, train=train)
    aux.update(values)
    return y

  return _residual(config, 'mlp_norm', x, f, train), aux


# The logical axes of a block's input and output (`bigjax.layers.partitioning`).
ACTIVATION = ('batch', 'length', 'act_embed')


def _constrained(out):
  """A block's output [B, T, D], or ([B, T, D], aux), with its logical axes."""
  if isinstance(out, tuple):
    return constrain(out[0], ACTIVATION), out[1]
  return constrain(out, ACTIVATION)


class EncoderBlock(nn.Module):
  """Self-attention then MLP, each in a residual branch. [B, T, D] -> [B, T, D].

  With `causal=True` it is the block of a decoder-only model; `decode=True` caches its
  keys and values (see `MultiHeadAttention`).
  """

  config: BlockConfig
  decode: bool = False

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    *,
    mask: jax.Array | None = None,
    key_valid: jax.Array | None = None,
    causal: bool = False,
    positions: jax.Array | None = None,
    train: bool = False,
  ) -> jax.Array | tuple[jax.Array, dict]:
    """x [B, T, D]; mask [B, 1, T, T] and/or key_valid [B, T]; positions for rotary.
    Returns [B, T, D], or ([B, T, D], aux) with a mixture of experts."""
    c = self.config
    attn = c.attention('attn', decode=self.decode)
    f = lambda h: attn(h, mask=mask, key_valid=key_valid, causal=causal, positions=positions)  # noqa: E731
    x = _residual(c, 'attn_norm', constrain(x, ACTIVATION), f, train)
    return _constrained(_mlp_residual(c, x, key_valid, train))


class DecoderBlock(nn.Module):
  """Causal self-attention, cross-attention to the encoder, then MLP.

  [B, T, D] targets and [B, S, D] encoder output -> [B, T, D]. `decode=True` caches the
  self-attention keys and values.
  """

  config: BlockConfig
  decode: bool = False

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    encoded: jax.Array,
    *,
    key_valid: jax.Array | None = None,
    encoded_valid: jax.Array | None = None,
    train: bool = False,
  ) -> jax.Array | tuple[jax.Array, dict]:
    """key_valid [B, T]: target validity (self-attention keys); encoded_valid [B, S].
    Returns [B, T, D], or ([B, T, D], aux) with a mixture of experts."""
    c = self.config
    self_attn = c.attention('self_attn', decode=self.decode)
    x = _residual(
      c,
      'self_norm',
      constrain(x, ACTIVATION),
      lambda h: self_attn(h, key_valid=key_valid, causal=True),
      train,
    )
    cross_attn = c.attention('cross_attn', rotary=False)
    x = _residual(
      c, 'cross_norm', x, lambda h: cross_attn(h, encoded, key_valid=encoded_valid), train
    )
    return _constrained(_mlp_residual(c, x, key_valid, train))
