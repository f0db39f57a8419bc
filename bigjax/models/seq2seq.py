"""LSTM encoder-decoder with additive attention (Bahdanau, Cho & Bengio, 2015, "RNNsearch").

Legend: B batch, S source length, T target length, E embedding width, H LSTM width
(encoder per direction and decoder), A attention width, L layers, V vocabulary (shared
size for source and target).

Encoder: embedding, L-layer bidirectional LSTM over the source (padding, id 0, masked:
the backward direction starts at each sequence's last real token), giving annotations
h_j = [fwd_j; bwd_j] [B, S, 2H]. The decoder's initial state is s_0 = tanh(W_s [fwd; bwd])
from the top layer's final states (the paper uses the backward one alone), c_0 = 0.
Decoder step i: the previous top-layer state s_{i-1} scores every annotation,
e_ij = v^T tanh(W_q s_{i-1} + W_k h_j), masked over source padding; the context
c_i = sum_j softmax(e_i)_j h_j; the L-layer LSTM reads [E y_{i-1}; c_i]; the logits come
from tanh(W_o [s_i; c_i; E y_{i-1}]) (a tanh deep output instead of the paper's maxout).

Autoregressive decoding follows the zoo's contract (`bigjax.decode`): `encode(src)` once,
then `decode_targets(encoded, tgt)` on the `decode=True` clone, whose LSTM state lives in
the `cache` collection. The decoder reads every target token, the pad id included (it has
no attention over targets to mask); the decoding functions never generate the pad id.

Parameter names (stable):
  encoder/embed/embedding [V, E]; encoder/rnn/layer_{i}/{fwd,bwd}/{ih,hh}/{kernel, bias}
  encoder/bridge/{kernel [2H, H], bias}; encoder/attn_key/kernel [2H, A]
  decoder/embed/embedding [V, E]; decoder/step/attn_query/{kernel [H, A], bias};
  decoder/step/attn_v [A]; decoder/step/layer_{i}/{ih,hh}/{kernel, bias}
  decoder/combine/{kernel [H + 2H + E, H], bias}; decoder/head/{kernel [H, V], bias}
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.models.rnn import (
  DEFAULT_RNN_IMPL,
  DEFAULT_SCAN_UNROLL,
  RecurrentCell,
  embed_and_rnn,
  zero_carry,
)
from bigjax.typing import Dtype, PyTree
from bigjax.vocab import PAD_ID


class Seq2SeqEncoder(nn.Module):
  """Source tokens -> annotations, attention keys, padding mask, initial decoder state."""

  vocab_size: int
  embed_dim: int
  hidden_size: int
  num_layers: int
  attention_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  rnn_impl: str = DEFAULT_RNN_IMPL
  scan_unroll: int = DEFAULT_SCAN_UNROLL

  @nn.compact
  def __call__(self, src: jax.Array, *, train: bool = False) -> PyTree:
    valid = src != PAD_ID  # [B, S]
    dense = lambda n, **kw: nn.Dense(  # noqa: E731
      n, dtype=self.dtype, param_dtype=self.param_dtype, **kw
    )
    drop = nn.Dropout(self.dropout_rate)
    x, rnn = embed_and_rnn(self, src, drop, cell='lstm', bidirectional=True, train=train)
    hidden, finals = rnn(x, mask=valid, train=train)  # [B, S, 2H]
    top = jnp.concatenate([finals[-2][1], finals[-1][1]], axis=-1).astype(self.dtype)  # [B, 2H]
    init_h = jnp.tanh(dense(self.hidden_size, name='bridge')(top))  # [B, H]
    # W_k h_j does not depend on the decoder step: computed once per source.
    keys = dense(self.attention_dim, use_bias=False, name='attn_key')(hidden)  # [B, S, A]
    return {'hidden': hidden, 'keys': keys, 'mask': valid, 'init_h': init_h}


class AttentionDecoderStep(nn.Module):
  """One decoder step: additive attention from the previous state, then L LSTM cells."""

  hidden_size: int
  num_layers: int
  attention_dim: int
  dropout_rate: float = 0.0
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, carry, embedded: jax.Array, encoded: PyTree):
    """L (c, h) carries, embedded y_{i-1} [B, E] -> (carries, (s_i [B, H], c_i, weights))."""
    query = nn.Dense(
      self.attention_dim, dtype=self.dtype, param_dtype=self.param_dtype, name='attn_query'
    )(carry[-1][1])  # [B, A]
    v = self.param(
      'attn_v',
      nn.initializers.normal(self.attention_dim**-0.5),
      (self.attention_dim,),
      self.param_dtype,
    )
    energy = jnp.tanh(query[:, None, :] + encoded['keys'])  # [B, S, A]
    scores = jnp.einsum('bsa,a->bs', energy, v.astype(self.dtype)).astype(jnp.float32)
    # A finite minimum, not -inf: an all-padding source gives uniform weights, not NaN.
    scores = jnp.where(encoded['mask'], scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)  # [B, S]
    context = jnp.einsum('bs,bsd->bd', weights.astype(self.dtype), encoded['hidden'])  # [B, 2H]
    x = jnp.concatenate([embedded, context.astype(embedded.dtype)], axis=-1)  # [B, E + 2H]
    new = []
    for i in range(self.num_layers):
      if i > 0:
        x = nn.Dropout(self.dropout_rate)(x, deterministic=self.deterministic)
      c, x = RecurrentCell(
        'lstm', self.hidden_size, self.dtype, self.param_dtype, name=f'layer_{i}'
      )(carry[i], x)
      new.append(c)
    return tuple(new), (x, context, weights)


class AttentionDecoder(nn.Module):
  """Target tokens (BOS first) and `encode`'s output -> logits; caches its state."""

  vocab_size: int
  embed_dim: int
  hidden_size: int
  num_layers: int
  attention_dim: int
  dropout_rate: float = 0.0
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scan_unroll: int = DEFAULT_SCAN_UNROLL

  @nn.compact
  def __call__(self, encoded: PyTree, tgt: jax.Array, *, train: bool = False) -> jax.Array:
    batch = tgt.shape[0]
    start = encoded['init_h'].astype(jnp.float32)  # [B, H]
    carry = tuple((jnp.zeros_like(start), start) for _ in range(self.num_layers))
    if self.decode:
      zeros = lambda: tuple(  # noqa: E731
        zero_carry('lstm', batch, self.hidden_size) for _ in range(self.num_layers)
      )
      cached = self.variable('cache', 'carry', zeros)
      # False until the first decoding call; the state then comes from `encoded`.
      started = self.variable('cache', 'started', lambda: jnp.zeros((batch,), bool))
      keep = started.value[:, None]  # [B, 1]
      carry = jax.tree.map(lambda c, s: jnp.where(keep, c, s), cached.value, carry)
    drop = nn.Dropout(self.dropout_rate)
    y = nn.Embed(
      self.vocab_size, self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype, name='embed'
    )(tgt)  # [B, T, E]
    y = drop(y, deterministic=not train)
    scan = nn.scan(
      AttentionDecoderStep,
      variable_broadcast='params',
      split_rngs={'params': False, 'dropout': True},
      in_axes=(1, nn.broadcast),
      out_axes=1,
      unroll=self.scan_unroll,
    )
    step = scan(
      self.hidden_size,
      self.num_layers,
      self.attention_dim,
      self.dropout_rate,
      not train,
      self.dtype,
      self.param_dtype,
      name='step',
    )
    final, (states, contexts, weights) = step(carry, y, encoded)  # [B, T, H], [B, T, 2H]
    self.sow('intermediates', 'attention_weights', weights)  # [B, T, S]
    if self.decode and not self.is_initializing():
      cached.value = final
      started.value = jnp.ones((batch,), bool)
    out = jnp.concatenate([states, contexts.astype(states.dtype), y], axis=-1)  # [B, T, 3H+E]
    out = jnp.tanh(
      nn.Dense(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name='combine')(
        out
      )
    )  # [B, T, H]
    out = drop(out, deterministic=not train)
    return nn.Dense(self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype, name='head')(
      out
    )  # [B, T, V]


class LSTMSeq2Seq(nn.Module):
  """Bidirectional-LSTM encoder, attentive LSTM decoder (pad id `bigjax.vocab.PAD_ID`)."""

  vocab_size: int = 256
  embed_dim: int = 64
  hidden_size: int = 128
  num_layers: int = 1
  attention_dim: int = 128
  dropout_rate: float = 0.0
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # The encoder's recurrence (`bigjax.models.rnn.RNN_IMPLS`); the attentive decoder feeds
  # each step a context from the previous state, so it always scans (with `scan_unroll`).
  rnn_impl: str = DEFAULT_RNN_IMPL
  scan_unroll: int = DEFAULT_SCAN_UNROLL

  def setup(self):
    kw = dict(
      vocab_size=self.vocab_size,
      embed_dim=self.embed_dim,
      hidden_size=self.hidden_size,
      num_layers=self.num_layers,
      attention_dim=self.attention_dim,
      dropout_rate=self.dropout_rate,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    self.encoder = Seq2SeqEncoder(**kw, rnn_impl=self.rnn_impl, scan_unroll=self.scan_unroll)
    self.decoder = AttentionDecoder(**kw, decode=self.decode, scan_unroll=self.scan_unroll)

  def encode(self, src: jax.Array, *, train: bool = False) -> PyTree:
    """[B, S] source tokens -> {'hidden': [B, S, 2H], 'keys': [B, S, A], 'mask': [B, S],
    'init_h': [B, H]}."""
    chex.assert_rank(src, 2)
    return self.encoder(src, train=train)

  def decode_targets(self, encoded: PyTree, tgt: jax.Array, *, train: bool = False) -> jax.Array:
    """`encode` output and [B, T] target tokens (BOS first) -> [B, T, V] logits.

    With `decode=True` the T tokens continue the sequence held in the cache.
    """
    chex.assert_rank(tgt, 2)
    return self.decoder(encoded, tgt, train=train).astype(jnp.float32)  # an fp32 loss

  def __call__(self, src: jax.Array, tgt_in: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, S] source and [B, T] shifted target tokens -> [B, T, V] logits."""
    logits = self.decode_targets(self.encode(src, train=train), tgt_in, train=train)
    chex.assert_shape(logits, (*tgt_in.shape, self.vocab_size))
    return logits


# 'bahdanau' is RNNsearch's size (620-dim embeddings, 1000 units, 1000-dim attention;
# Bahdanau et al., 2015, appendix A) with LSTM cells; 'small' suits the algorithmic tasks.
VARIANTS = {
  'test': dict(embed_dim=16, hidden_size=32, attention_dim=16),
  'small': dict(embed_dim=64, hidden_size=128, attention_dim=128),
  'bahdanau': dict(embed_dim=620, hidden_size=1000, attention_dim=1000, vocab_size=30000),
}

MODELS: dict[str, tuple[type[nn.Module], dict]] = {
  'seq2seq_lstm' + ('' if size == 'small' else f'_{size}'): (LSTMSeq2Seq, kw)
  for size, kw in VARIANTS.items()
}
