"""Decoder-only language models: GPT-2, Llama and Mixtral as configurations of one `Gpt`.

Legend: B batch, T length, D width (hidden_size), H query heads, G key/value heads, K head
dim, F mlp width, V vocabulary, V' padded vocabulary, E experts, L layers.

tokens [B, T] -> token embedding (+ learned positions) -> dropout -> L pre-norm causal
blocks from `bigjax.layers` (`EncoderBlock` with `causal=True`) -> final norm -> logits
[B, T, V'] through the transposed token embedding (tied) or `lm_head`.
  GPT-2 (Radford et al., 2019): learned positions, LayerNorm (eps 1e-5), GELU (tanh),
    biases, tied embeddings; weights N(0, 0.02), the residual output projections N(0,
    0.02 / sqrt(2 L)).
  Llama (Touvron et al., 2023): rotary positions (`rope_theta`), RMSNorm, SwiGLU,
    grouped-query attention (`num_kv_heads`), no biases, untied output.
  Mixtral (Jiang et al., 2024): Llama with a mixture of experts (`num_experts`, top
    `experts_per_token`; `bigjax.layers.moe`) in place of each MLP. The aux_losses hold
    router_aux_weight * the mean load-balancing loss and router_z_weight * the mean router
    z-loss over the layers; the metrics the per-expert load [E].

The vocabulary is padded to a multiple of `vocab_multiple` (V' rows in the embedding and
the output): the padded logit columns are -1e9, so they get no probability in the loss and
are never sampled. `num_params(params, vocab_size)` counts the parameters without them.

Packing and padding (`segment_ids` [B, T]): 0 marks padding (never attended to), k > 0 the
k-th document of a packed row; a token attends to the earlier tokens of its own document,
and its position (learned or rotary) is its index within the document. Without
segment_ids a row is one document and attention uses the fused causal kernel (no [T, T]
mask is built).

Cached decoding (`decode=True`, see `bigjax.decode`): each attention keeps a KV cache of
G (not H) heads, and the model keeps `cache/position` [B], each row's next position. A call
appends its tokens: with segment_ids (1 = real token, 0 = left padding of a prompt) the
pads are cached as invalid keys and do not advance their row's position.

Parameter names (stable; `bigjax.convert.hf_gpt` maps Hugging Face checkpoints onto them):
  embed/embedding [V', D]; pos_embed/embedding [max_len, D] (learned positions only)
  block_{i}/{attn_norm, mlp_norm}/{scale[, bias]} [D]
  block_{i}/attn/{query [D, H, K], key [D, G, K], value [D, G, K]}/kernel (+ bias [H|G, K])
  block_{i}/attn/out/kernel [H, K, D] (+ bias [D])
  block_{i}/mlp/{fc1, gate}/kernel [D, F], fc2/kernel [F, D] (+ biases; gate when gated)
  block_{i}/mlp/router/kernel [D, E]; mlp/{fc1, gate}/kernel [E, D, F], fc2/kernel [E, F, D]
    (+ bias [E, F] / [E, D]) with a mixture of experts
  final_norm/{scale[, bias]} [D]; lm_head/kernel [D, V'] (untied only)
  layers/... with a leading [L] axis instead of block_{i} with `scan_layers`
"""

import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers import (
  BlockConfig,
  EncoderBlock,
  LearnedPositions,
  OutputKernel,
  make_norm,
  stack_blocks,
)
from bigjax.layers.initializers import normal
from bigjax.outputs import LazyLogits, ModelOutput
from bigjax.typing import Dtype, PyTree
from bigjax.vocab import padded_vocab

POSITIONS = ('learned', 'rotary')


def segment_positions(segment_ids: jax.Array) -> jax.Array:
  """[B, T] segment ids -> [B, T] each token's index within its run of equal ids (documents
  are contiguous in a packed row; a left-padded prompt's first real token gets 0)."""
  length = segment_ids.shape[1]
  index = jnp.arange(length, dtype=jnp.int32)[None]  # [1, T]
  starts = jnp.concatenate(
    [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
  )  # [B, T]
  start = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)  # [B, T]
  return index - start


def num_params(params: PyTree, vocab_size: int) -> int:
  """The parameter count over the real vocabulary: the padded rows of `embed` and columns
  of `lm_head` are not counted (GPT-2 small: 124,439,808 at vocab 50,257)."""
  total = sum(x.size for x in jax.tree.leaves(params))
  embed = params['embed']['embedding']  # [V', D]
  total -= (embed.shape[0] - vocab_size) * embed.shape[1]
  if 'lm_head' in params:
    head = params['lm_head']['kernel']  # [D, V']
    total -= (head.shape[1] - vocab_size) * head.shape[0]
  return total


class Gpt(nn.Module):
  """A decoder-only Transformer LM (see the module docstring). Defaults: GPT-2 small."""

  vocab_size: int = 50257
  vocab_multiple: int = 128
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  num_kv_heads: int | None = None
  head_dim: int | None = None
  mlp_dim: int = 3072
  max_len: int = 1024
  position: str = 'learned'  # 'learned' | 'rotary'
  rope_theta: float = 1e4
  norm: str = 'layernorm'  # 'layernorm' | 'rmsnorm'
  layer_norm_eps: float = 1e-5
  activation: str = 'gelu_tanh'
  gated_mlp: bool = False
  use_bias: bool = True
  tie_embeddings: bool = True
  dropout_rate: float = 0.0
  num_experts: int = 0  # 0: dense MLP
  experts_per_token: int = 2
  capacity_factor: float = 0.0  # 0: dropless (exact); > 0: capacity per expert, overflow dropped
  router_aux_weight: float = 0.01
  router_z_weight: float = 1e-3
  init_std: float = 0.02
  scan_layers: bool = False
  remat: bool = False
  remat_policy: str | None = None  # `bigjax.layers.stack.REMAT_POLICIES`; implies remat
  loss_chunk: int = 0  # > 0: chunked cross-entropy in training, tokens per chunk
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_impl: str | None = None  # `bigjax.layers.attention.IMPLEMENTATIONS`

  @property
  def padded_vocab(self) -> int:
    return padded_vocab(self.vocab_size, self.vocab_multiple)

  def block_config(self) -> BlockConfig:
    if self.position not in POSITIONS:
      raise ValueError(f'position must be one of {POSITIONS}, got {self.position!r}')
    return BlockConfig(
      num_heads=self.num_heads,
      mlp_dim=self.mlp_dim,
      num_kv_heads=self.num_kv_heads,
      head_dim=self.head_dim,
      dropout_rate=self.dropout_rate,
      pre_norm=True,
      norm=self.norm,
      layer_norm_eps=self.layer_norm_eps,
      activation=self.activation,
      gated_mlp=self.gated_mlp,
      use_bias=self.use_bias,
      position='rotary' if self.position == 'rotary' else 'none',
      rope_theta=self.rope_theta,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=normal(self.init_std),
      attention_impl=self.attention_impl,
      out_kernel_init=normal(self.init_std / math.sqrt(2 * self.num_layers)),
      num_experts=self.num_experts,
      experts_per_token=self.experts_per_token,
      capacity_factor=self.capacity_factor,
    )

  @nn.compact
  def __call__(
    self,
    tokens: jax.Array,
    segment_ids: jax.Array | None = None,
    positions: jax.Array | None = None,
    *,
    train: bool = False,
  ) -> ModelOutput:
    """tokens [B, T] int; segment_ids [B, T] (0 = padding) and positions [B, T] optional
    -> ModelOutput with logits [B, T, V'] float32 (see the module docstring); in training
    with `loss_chunk > 0` the logits are `LazyLogits` (hidden [B, T, D] and the output
    kernel), which the losses score chunk by chunk without the full [B, T, V'] array."""
    chex.assert_rank(tokens, 2)
    config = self.block_config()
    batch, length = tokens.shape
    valid = None if segment_ids is None else segment_ids > 0  # [B, T]

    mask = None
    if self.position == 'learned' and length > self.max_len:
      what = 'decode' if self.decode else 'read'
      raise ValueError(
        f'cannot {what} {length} tokens: the learned positions cover max_len={self.max_len}; '
        'use shorter inputs (prompt + new tokens when generating) or a larger model.max_len'
      )
    if self.decode:
      # The attention caches hide the pads and the future; the rows' positions continue.
      ready = self.has_variable('cache', 'position')
      next_position = self.variable('cache', 'position', jnp.zeros, (batch,), jnp.int32)
      real = jnp.ones((batch, length), jnp.int32) if valid is None else valid.astype(jnp.int32)
      if positions is None:
        counted = next_position.value[:, None] + jnp.cumsum(real, axis=1) - 1  # [B, T]
        positions = jnp.maximum(counted, 0)
      if ready:
        next_position.value = next_position.value + real.sum(axis=1)
    elif segment_ids is not None:
      mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]  # [B, 1, T, T]
      if positions is None:
        positions = segment_positions(segment_ids)  # [B, T]

    embed = nn.Embed(
      self.padded_vocab,
      self.hidden_size,
      embedding_init=normal(self.init_std),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='embed',
    )
    x = embed(tokens)  # [B, T, D]
    if self.position == 'learned':
      x = LearnedPositions(
        self.max_len, param_dtype=self.param_dtype, init_std=self.init_std, name='pos_embed'
      )(x, positions=positions)  # [B, T, D]
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)

    out = stack_blocks(
      x,
      EncoderBlock,
      config,
      self.num_layers,
      scan=self.scan_layers,
      remat=self.remat,
      remat_policy=self.remat_policy,
      decode=self.decode,
      mask=mask,
      key_valid=valid,
      causal=True,
      positions=positions,
      train=train,
    )
    x, aux = out if self.num_experts else (out, None)
    x = make_norm(
      self.norm,
      epsilon=self.layer_norm_eps,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='final_norm',
    )(x)
    if self.tie_embeddings:
      kernel = embed.embedding.T  # [D, V']
    else:
      kernel = OutputKernel(
        self.padded_vocab, normal(self.init_std), self.param_dtype, name='lm_head'
      )(self.hidden_size)  # [D, V']
    logits = LazyLogits(
      x, kernel, vocab_size=self.vocab_size, chunk=self.loss_chunk, dtype=self.dtype
    )
    if not (train and self.loss_chunk):
      logits = logits.materialize()  # [B, T, V'] float32
    if aux is None:
      return ModelOutput(logits=logits)
    return ModelOutput(
      logits=logits,
      aux_losses={
        'moe_balance': self.router_aux_weight * aux['balance_loss'].mean(),
        'moe_z': self.router_z_weight * aux['z_loss'].mean(),
      },
      metrics={'expert_load': aux['expert_load'].mean(axis=0)},  # [E]
    )


# ------------------------------------------------------------------------------ registry
# GPT-2 (Radford et al., 2019): 50,257 byte-level BPE tokens, 1024 positions; the sizes of
# the released checkpoints (d_model, layers; heads of 64 channels; mlp 4 * d_model).
GPT2_SIZES: dict[str, dict[str, int]] = {
  'test': dict(vocab_size=256, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=64),
  'small': dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
  'medium': dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
  'large': dict(hidden_size=1280, num_layers=36, num_heads=20, mlp_dim=5120),
  'xl': dict(hidden_size=1600, num_layers=48, num_heads=25, mlp_dim=6400),
}
# The Llama block: rotary, RMSNorm, SwiGLU, no biases, untied output.
LLAMA: dict[str, Any] = dict(
  position='rotary',
  norm='rmsnorm',
  layer_norm_eps=1e-5,
  activation='silu',
  gated_mlp=True,
  use_bias=False,
  tie_embeddings=False,
)
LLAMA_TEST: dict[str, Any] = dict(
  LLAMA,
  vocab_size=256,
  hidden_size=32,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  mlp_dim=64,
  max_len=64,
)
# Llama 2 7B (Touvron et al., 2023b): 32,000 SentencePiece tokens, 4096 positions.
LLAMA2_7B: dict[str, Any] = dict(
  LLAMA,
  vocab_size=32000,
  hidden_size=4096,
  num_layers=32,
  num_heads=32,
  mlp_dim=11008,
  max_len=4096,
)
# Mixtral 8x7B (Jiang et al., 2024): Mistral 7B's block (8 kv heads, rope_theta 1e6) with 8
# SwiGLU experts of width 14,336, top-2.
MIXTRAL_8X7B: dict[str, Any] = dict(
  LLAMA,
  vocab_size=32000,
  hidden_size=4096,
  num_layers=32,
  num_heads=32,
  num_kv_heads=8,
  mlp_dim=14336,
  max_len=32768,
  rope_theta=1e6,
  num_experts=8,
  experts_per_token=2,
)

MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
  **{f'gpt2_{size}': (Gpt, dict(options)) for size, options in GPT2_SIZES.items()},
  'llama_test': (Gpt, LLAMA_TEST),
  'llama2_7b': (Gpt, LLAMA2_7B),
  'mixtral_test': (Gpt, dict(LLAMA_TEST, num_experts=4, experts_per_token=2)),
  'mixtral_8x7b': (Gpt, MIXTRAL_8X7B),
}
