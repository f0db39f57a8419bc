"""The encoder-decoder Transformer (Vaswani et al., 2017, "Attention Is All You Need").

Legend: B batch, S source length, T target length, D width (d_model), H heads,
K head dim (D / H), F feed-forward width (d_ff), V vocabulary (shared by source and target).

Tokens are embedded and scaled by sqrt(D) (section 3.4), fixed sinusoidal positions are
added (section 3.5), then dropout; N post-LN encoder blocks and N post-LN decoder blocks
from `bigjax.layers` follow, and the decoder output is projected onto the vocabulary with
the transposed embedding matrix (weight tying, section 3.4; Press & Wolf, 2017).
`pre_norm=True` gives the pre-LN layout (Xiong et al., 2020), which trains without warm-up
tricks at small scale; it ends each stack with a LayerNorm. `final_norm=True` adds that
LayerNorm to the post-LN model too, which is what `torch.nn.Transformer` does.

The pad id (`bigjax.vocab.PAD_ID`) is masked out as a key everywhere: in encoder
self-attention, in cross-attention and in decoder self-attention (on top of the causal
mask). The KV cache stores each key's validity, so cached decoding applies the same rule
and equals the full forward pass even when a target holds the pad id; the decoding
functions never generate it.

Autoregressive decoding follows the zoo's contract (`bigjax.decode`): `encode(src)` once,
then `decode_targets(encoded, tgt)` on the `decode=True` clone, whose self-attention keys,
values and key validity and the target position live in the `cache` collection.
`scan_layers=True` runs each stack under `nn.scan`: the blocks' parameters then live under
`encoder/layers/...` and `decoder/layers/...` with a leading [L] axis (see
`bigjax.layers.stack`), and the caches are [L, B, ...].

Parameter names (stable):
  embed/embedding [V, D]                            (src_embed, tgt_embed when not shared)
  encoder/block_{i}/attn/{query, key, value}/{kernel [D, H, K], bias [H, K]}
  encoder/block_{i}/attn/out/{kernel [H, K, D], bias [D]}
  encoder/block_{i}/{attn_norm, mlp_norm}/{scale, bias}
  encoder/block_{i}/mlp/{fc1/{kernel [D, F], bias}, fc2/{kernel [F, D], bias}}
  encoder/norm/{scale, bias}                        (pre-LN or final_norm only)
  decoder/block_{i}/{self_attn, cross_attn}/...     (as encoder attn)
  decoder/block_{i}/{self_norm, cross_norm, mlp_norm}/{scale, bias}, decoder/block_{i}/mlp/...
  decoder/norm/{scale, bias}                        (pre-LN or final_norm only)
  {encoder, decoder}/layers/...                     (scan_layers: block_{i} stacked on axis 0)
  logits/{kernel [D, V], bias [V]}                  (only when the output is not tied)
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers import (
  BlockConfig,
  DecoderBlock,
  EncoderBlock,
  sinusoidal_positions,
  stack_blocks,
)
from bigjax.typing import Dtype, PyTree
from bigjax.vocab import PAD_ID

# Table 3 of the paper: base and big (the big EN-DE model used P_drop = 0.3).
VARIANTS: dict[str, dict] = {
  'test': dict(
    vocab_size=64,
    hidden_size=32,
    num_heads=2,
    mlp_dim=64,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dropout_rate=0.1,
  ),
  'base': dict(
    vocab_size=32000,
    hidden_size=512,
    num_heads=8,
    mlp_dim=2048,
    num_encoder_layers=6,
    num_decoder_layers=6,
    dropout_rate=0.1,
  ),
  'big': dict(
    vocab_size=32000,
    hidden_size=1024,
    num_heads=16,
    mlp_dim=4096,
    num_encoder_layers=6,
    num_decoder_layers=6,
    dropout_rate=0.3,
  ),
}


def block_config(module: nn.Module) -> BlockConfig:
  """The `BlockConfig` of the stacks, from the model's options."""
  return BlockConfig(
    num_heads=module.num_heads,
    mlp_dim=module.mlp_dim,
    dropout_rate=module.dropout_rate,
    pre_norm=module.pre_norm,
    layer_norm_eps=module.layer_norm_eps,
    activation=module.activation,
    dtype=module.dtype,
    param_dtype=module.param_dtype,
    attention_impl=module.attention_impl,
  )


class _Stack(nn.Module):
  """The options shared by the encoder and the decoder stack."""

  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  pre_norm: bool = False
  final_norm: bool = False
  layer_norm_eps: float = 1e-6
  activation: str = 'relu'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_impl: str | None = None
  scan_layers: bool = False
  remat: bool = False
  remat_policy: str | None = None

  @nn.nowrap
  def _run(self, x: jax.Array, block: type[nn.Module], **kwargs) -> jax.Array:
    """`num_layers` blocks on x (called from `__call__`), then the final norm if any."""
    config = block_config(self)
    x = stack_blocks(
      x,
      block,
      config,
      self.num_layers,
      scan=self.scan_layers,
      remat=self.remat,
      remat_policy=self.remat_policy,
      **kwargs,
    )
    if self.final_norm:
      x = config.make_norm('norm')(x)
    return x


STACK_OPTIONS = tuple(
  f for f in _Stack.__dataclass_fields__ if f not in ('num_layers', 'parent', 'name')
)


class TransformerEncoder(_Stack):
  """The encoder stack on embedded inputs: [B, S, D] and [B, S] validity -> [B, S, D]."""

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array, *, train: bool = False) -> jax.Array:
    return self._run(x, EncoderBlock, key_valid=valid, train=train)  # padded keys are hidden


class TransformerDecoder(_Stack):
  """The decoder stack on embedded targets.

  [B, T, D] targets, [B, S, D] encoder output, [B, S] source validity and optional [B, T]
  target validity -> [B, T, D]. Self-attention is causal and hides invalid target keys;
  with `decode=True` its keys, values and key validity are appended to the `cache`.
  """

  decode: bool = False

  @nn.compact
  def __call__(
    self,
    y: jax.Array,
    encoded: jax.Array,
    src_valid: jax.Array,
    tgt_valid: jax.Array | None = None,
    *,
    train: bool = False,
  ) -> jax.Array:
    return self._run(
      y,
      DecoderBlock,
      decode=self.decode,
      encoded=encoded,
      key_valid=tgt_valid,
      encoded_valid=src_valid,
      train=train,
    )


class TargetPositions(nn.Module):
  """Adds sinusoidal positions to [B, T, D]; while decoding, from the cached offset."""

  max_len: int
  decode: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    length, width = x.shape[1], x.shape[2]
    if not self.decode:
      return x + sinusoidal_positions(length, width)[None].astype(x.dtype)
    initialised = self.has_variable('cache', 'index')
    index = self.variable('cache', 'index', lambda: jnp.array(0, jnp.int32))
    if not initialised:  # `init` sizes the cache with the longest target
      if length > self.max_len:
        raise ValueError(
          f'cannot decode {length} tokens: the position table has max_len={self.max_len}; '
          'raise the model option max_len'
        )
      offset = 0
    else:
      offset = index.value
      index.value = offset + length
    table = sinusoidal_positions(self.max_len, width)  # [max_len, D]
    pos = jax.lax.dynamic_slice_in_dim(table, offset, length, axis=0)  # [T, D]
    return x + pos[None].astype(x.dtype)


class Transformer(nn.Module):
  """Encoder-decoder Transformer for sequence-to-sequence tasks (pad id 0)."""

  vocab_size: int = 32000
  hidden_size: int = 512
  num_heads: int = 8
  mlp_dim: int = 2048
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  dropout_rate: float = 0.1
  pre_norm: bool = False  # the paper's post-LN; True for pre-LN (Xiong et al., 2020)
  final_norm: bool | None = None  # a LayerNorm after each stack; None: only with pre_norm
  layer_norm_eps: float = 1e-6  # tensor2tensor; torch.nn.Transformer uses 1e-5
  activation: str = 'relu'  # 'gelu' is exact (torch's), 'gelu_tanh' the approximation
  share_embeddings: bool = True  # one vocabulary for source and target
  tie_output: bool = True  # logits = decoder output @ target embedding^T
  max_len: int = 1024  # longest target the decoding position table covers
  decode: bool = False  # autoregressive decoding with a cache (see module docstring)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_impl: str | None = None  # `bigjax.layers.attention.IMPLEMENTATIONS`
  scan_layers: bool = False  # nn.scan over each stack's blocks (params under `layers/`)
  remat: bool = False  # recompute each block's activations in the backward pass
  remat_policy: str | None = None  # `bigjax.layers.stack.REMAT_POLICIES`; implies remat

  def setup(self):
    d = self.hidden_size
    if d % self.num_heads:
      raise ValueError(f'hidden_size {d} is not divisible by num_heads {self.num_heads}')
    embed = lambda name: nn.Embed(  # noqa: E731
      self.vocab_size,
      d,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      # std D^-0.5, so that the sqrt(D)-scaled inputs have unit variance (tensor2tensor).
      embedding_init=nn.initializers.normal(stddev=d**-0.5),
      name=name,
    )
    if self.share_embeddings:
      self.embed = embed('embed')
    else:
      self.src_embed = embed('src_embed')
      self.tgt_embed = embed('tgt_embed')
    # Every stack option but its depth is the model option of the same name.
    stack = {k: getattr(self, k) for k in STACK_OPTIONS}
    if self.final_norm is None:
      stack['final_norm'] = self.pre_norm
    self.encoder = TransformerEncoder(self.num_encoder_layers, **stack, name='encoder')
    self.decoder = TransformerDecoder(
      self.num_decoder_layers, decode=self.decode, **stack, name='decoder'
    )
    self.tgt_positions = TargetPositions(self.max_len, self.decode, name='tgt_positions')
    self.embed_dropout = nn.Dropout(self.dropout_rate)
    if not self.tie_output:
      self.logits = nn.Dense(
        self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype, name='logits'
      )

  def _embed(self, tokens: jax.Array, side: str) -> jax.Array:
    table = self.embed if self.share_embeddings else getattr(self, f'{side}_embed')
    return table(tokens) * self.hidden_size**0.5  # [B, L, D]

  def encode(self, src: jax.Array, *, train: bool = False) -> PyTree:
    """[B, S] source tokens -> {'hidden': [B, S, D], 'mask': [B, S] bool (not padding)}."""
    chex.assert_rank(src, 2)
    valid = src != PAD_ID
    x = self._embed(src, 'src')
    x = x + sinusoidal_positions(src.shape[1], self.hidden_size)[None].astype(x.dtype)
    x = self.embed_dropout(x, deterministic=not train)
    return {'hidden': self.encoder(x, valid, train=train), 'mask': valid}

  def decode_targets(self, encoded: PyTree, tgt: jax.Array, *, train: bool = False) -> jax.Array:
    """`encode` output and [B, T] target tokens (BOS first) -> [B, T, V] float32 logits.

    With `decode=True` the T tokens continue the sequence held in the cache.
    """
    chex.assert_rank(tgt, 2)
    y = self.tgt_positions(self._embed(tgt, 'tgt'))
    y = self.embed_dropout(y, deterministic=not train)
    y = self.decoder(y, encoded['hidden'], encoded['mask'], tgt != PAD_ID, train=train)
    if self.tie_output:
      table = self.embed if self.share_embeddings else self.tgt_embed
      logits = table.attend(y)  # [B, T, V]
    else:
      logits = self.logits(y)  # [B, T, V]
    return logits.astype(jnp.float32)  # float32 logits (and loss) under bf16 compute

  def __call__(self, src: jax.Array, tgt_in: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, S] source and [B, T] shifted target tokens -> [B, T, V] logits."""
    logits = self.decode_targets(self.encode(src, train=train), tgt_in, train=train)
    chex.assert_shape(logits, (*tgt_in.shape, self.vocab_size))
    return logits


MODELS: dict[str, tuple[type[nn.Module], dict]] = {
  f'transformer_{name}': (Transformer, variant) for name, variant in VARIANTS.items()
}
