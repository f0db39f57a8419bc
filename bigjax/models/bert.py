"""BERT (Devlin et al., 2019) and RoBERTa (Liu et al., 2019) encoders with their heads.

Legend: B batch, T length, D width (hidden_size), H heads, K head dim (D / H), F mlp width,
V vocabulary, P position table size, N classes, L layers.

Token, learned position and segment embeddings are summed, normalised (LayerNorm) and
dropped out; L post-LN Transformer encoder blocks from `bigjax.layers` follow (exact-erf
GELU, LayerNorm eps 1e-12, weights N(0, 0.02)). The pooler is dense + tanh on the first
token ([CLS] / <s>). Padding is `input_ids == pad_id`: padded keys are hidden from every
query, so the outputs at real positions do not depend on what the padded positions hold.
RoBERTa is a configuration of the same model: no segment embeddings in effect
(`type_vocab_size=1`), pad id 1 and fairseq's positions (`roberta_positions`): a real token's
position is pad_id + its 1-based count among the real tokens, a padded one's is pad_id.

Differences from the reference implementation, in training only: the shared block has no
dropout on the attention probabilities, and drops out the MLP's hidden layer as well as
each residual branch. The outputs in evaluation are the same (tests/convert/test_bert_parity.py).

Heads (`head`): 'none' (logits = the last hidden states [B, T, D]), 'pretraining' (masked-LM
logits [B, T, V] and aux_logits {'nsp': [B, 2]}), 'mlm' ([B, T, V]), 'classification'
([B, N] on the dropped-out pooled output; N = 1 for regression), 'token_classification'
([B, T, N]) and 'span' ([B, T, 2]: start and end logits). The masked-LM decoder is the
transposed word embedding (tied) plus its own bias. `vocab_multiple` pads the vocabulary
(the word embedding's rows and the bias) to a multiple, as GPT's: the padded logit columns
are PADDED_LOGIT (no probability); converted checkpoints use 1 (no padding). Under
`loss_chunk > 0` the MLM logits in training are `LazyLogits` (chunked cross-entropy).
`features` always holds 'hidden' [B, T, D] and, with the pooler, 'pooled' [B, D]. Logits
are float32 under bf16 compute.

Intermediates: `hidden_states`, a tuple of L + 1 arrays [B, T, D] (the embedding output,
then each block's output; the same with `scan_layers`, where they are the scan's per-layer
outputs), and each attention's `attention_weights` [B, H, T, T] under
`encoder/block_{i}/attn/` (with `scan_layers`: one [L, B, H, T, T] array under
`encoder/layers/attn/`). Both are computed only when 'intermediates' is mutable:
`model.apply(variables, ids, mutable=['intermediates'])`.

Parameter names (stable; `bigjax.convert.hf_bert` maps Hugging Face checkpoints onto them):
  embeddings/word/embedding [V, D], embeddings/position/embedding [P, D]
  embeddings/segment/embedding [type_vocab_size, D]    (absent when type_vocab_size == 0)
  embeddings/norm/{scale, bias} [D]
  encoder/block_{i}/attn/{query, key, value}/{kernel [D, H, K], bias [H, K]}
  encoder/block_{i}/attn/out/{kernel [H, K, D], bias [D]}
  encoder/block_{i}/{attn_norm, mlp_norm}/{scale, bias}
  encoder/block_{i}/mlp/{fc1/{kernel [D, F], bias}, fc2/{kernel [F, D], bias}}
  encoder/layers/...                                   (scan_layers: stacked on axis 0)
  pooler/{kernel [D, D], bias}                         (pooler=True)
  mlm/{transform/{kernel [D, D], bias}, norm/{scale, bias}, bias [V]}
  nsp/{kernel [D, 2], bias}, classifier/{kernel [D, N], bias}
  token_classifier/{kernel [D, N], bias}, span/{kernel [D, 2], bias}
"""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers import BlockConfig, EncoderBlock, activation, stack_blocks
from bigjax.layers.initializers import normal
from bigjax.outputs import LazyLogits, ModelOutput
from bigjax.typing import Dtype
from bigjax.vocab import PAD_ID, padded_vocab

HEADS = ('none', 'pretraining', 'mlm', 'classification', 'token_classification', 'span')

# BERT: Devlin et al. (2019), Table/section 3 (base, large); the smaller sizes are Turc et al.
# (2019), "Well-Read Students Learn Better" (google-research/bert's 24 small models).
# mlp_dim is 4 * hidden_size throughout.
SIZES: dict[str, dict[str, int]] = {
  'test': dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64),
  'tiny': dict(hidden_size=128, num_layers=2, num_heads=2, mlp_dim=512),
  'mini': dict(hidden_size=256, num_layers=4, num_heads=4, mlp_dim=1024),
  'small': dict(hidden_size=512, num_layers=4, num_heads=8, mlp_dim=2048),
  'medium': dict(hidden_size=512, num_layers=8, num_heads=8, mlp_dim=2048),
  'base': dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
  'large': dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
}

# The uncased WordPiece vocabulary, 512 positions, two segments.
BERT_VOCAB = dict(vocab_size=30522, max_positions=512, type_vocab_size=2, pad_id=0)
# RoBERTa's byte-level BPE (50,265 ids), 514 positions (512 + the pad offset), one segment.
ROBERTA_VOCAB = dict(
  vocab_size=50265,
  max_positions=514,
  type_vocab_size=1,
  pad_id=1,
  roberta_positions=True,
  layer_norm_eps=1e-5,
)


def roberta_position_ids(input_ids: jax.Array, pad_id: int) -> jax.Array:
  """fairseq's positions [B, T]: pad_id + the running count of real tokens; pad_id on padding."""
  valid = (input_ids != pad_id).astype(jnp.int32)  # [B, T]
  return jnp.cumsum(valid, axis=1) * valid + pad_id  # [B, T]


class BertEmbeddings(nn.Module):
  """Word + position (+ segment) embeddings, LayerNorm, dropout; `word` is the tied decoder."""

  vocab_size: int
  hidden_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float
  dropout_rate: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    embed = lambda n: nn.Embed(  # noqa: E731
      n,
      self.hidden_size,
      embedding_init=normal(0.02),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    self.word = embed(self.vocab_size)
    self.position = embed(self.max_positions)
    if self.type_vocab_size:
      self.segment = embed(self.type_vocab_size)
    self.norm = nn.LayerNorm(
      epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype
    )
    self.dropout = nn.Dropout(self.dropout_rate)

  def __call__(self, input_ids, segment_ids, positions, *, train: bool = False) -> jax.Array:
    """[B, T] ids, segments and positions -> [B, T, D]."""
    x = self.word(input_ids) + self.position(positions)  # [B, T, D]
    if self.type_vocab_size:
      x = x + self.segment(segment_ids)
    return self.dropout(self.norm(x), deterministic=not train)


class MlmHead(nn.Module):
  """dense + activation + LayerNorm, then the tied decoder and an output bias."""

  activation: str
  layer_norm_eps: float
  vocab_size: int  # the real vocabulary: columns past it (padding) are masked
  loss_chunk: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, kernel: jax.Array, *, train: bool = False
  ) -> jax.Array | LazyLogits:
    """[B, T, D] and the decoder kernel [D, V'] (the transposed word embedding) -> float32
    logits [B, T, V'], or `LazyLogits` in training with `loss_chunk > 0`."""
    x = nn.Dense(
      x.shape[-1],
      kernel_init=normal(0.02),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='transform',
    )(x)
    x = activation(self.activation)(x)
    x = nn.LayerNorm(
      epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name='norm'
    )(x)
    bias = self.param('bias', nn.initializers.zeros, (kernel.shape[-1],), self.param_dtype)
    logits = LazyLogits(
      x, kernel, bias, vocab_size=self.vocab_size, chunk=self.loss_chunk, dtype=self.dtype
    )
    return logits if train and self.loss_chunk else logits.materialize()


class BertEncoder(nn.Module):
  """L post-LN encoder blocks: [B, T, D] and [B, T] key validity -> [B, T, D]."""

  config: BlockConfig
  num_layers: int
  scan_layers: bool = False
  remat: bool = False
  remat_policy: str | None = None

  @nn.compact
  def __call__(self, x, key_valid, *, collect: bool = False, train: bool = False):
    """Returns x, or (x, list of every block's output) with `collect`."""
    return stack_blocks(
      x,
      EncoderBlock,
      self.config,
      self.num_layers,
      scan=self.scan_layers,
      remat=self.remat,
      remat_policy=self.remat_policy,
      collect=collect,
      key_valid=key_valid,
      train=train,
    )


class Bert(nn.Module):
  """The BERT / RoBERTa encoder with one of `HEADS` on top (see the module docstring)."""

  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  max_positions: int = 512
  type_vocab_size: int = 2  # 0: no segment embeddings
  pad_id: int = PAD_ID
  roberta_positions: bool = False  # fairseq's pad-offset positions (RoBERTa)
  dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  activation: str = 'gelu'  # exact erf GELU, as in BERT's code
  head: str = 'none'
  num_classes: int = 2  # classification (1 = regression) and token classification
  pooler: bool = True
  scan_layers: bool = False
  remat: bool = False
  remat_policy: str | None = None  # `bigjax.layers.stack.REMAT_POLICIES`; implies remat
  vocab_multiple: int = 1  # pad the word embedding to a multiple (128 suits GPUs)
  loss_chunk: int = 0  # > 0: MLM logits chunked in training (`LazyLogits`), tokens per chunk
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_impl: str | None = None  # `bigjax.layers.attention.IMPLEMENTATIONS`

  @property
  def padded_vocab(self) -> int:
    return padded_vocab(self.vocab_size, self.vocab_multiple)

  def _check(self, length: int) -> None:
    if self.head not in HEADS:
      raise ValueError(f'unknown BERT head {self.head!r}; choose one of {HEADS}')
    if self.head in ('pretraining', 'classification') and not self.pooler:
      raise ValueError(f'head {self.head!r} reads the pooled output: set pooler=True')
    needed = length + (self.pad_id + 1 if self.roberta_positions else 0)
    if needed > self.max_positions:
      raise ValueError(
        f'sequences of {length} tokens need {needed} positions but the model has '
        f'max_positions={self.max_positions}: truncate the inputs'
      )

  @nn.compact
  def __call__(
    self,
    input_ids: jax.Array,
    segment_ids: jax.Array | None = None,
    masked_positions: jax.Array | None = None,
    *,
    train: bool = False,
  ) -> ModelOutput:
    """[B, T] token ids (and [B, T] segment ids, default 0) -> `ModelOutput` (see `head`).

    masked_positions [B, P] (MLM heads only): the MLM logits are computed at these positions
    only, [B, P, V] instead of [B, T, V] (BERT's `max_predictions_per_seq`).
    """
    chex.assert_rank(input_ids, 2)
    batch, length = input_ids.shape
    self._check(length)
    if masked_positions is not None and self.head not in ('mlm', 'pretraining'):
      raise ValueError(f'masked_positions are for the MLM heads, not head={self.head!r}')
    if segment_ids is None:
      segment_ids = jnp.zeros_like(input_ids)
    key_valid = input_ids != self.pad_id  # [B, T]
    if self.roberta_positions:
      positions = roberta_position_ids(input_ids, self.pad_id)  # [B, T]
    else:
      positions = jnp.broadcast_to(jnp.arange(length), (batch, length))  # [B, T]

    embeddings = BertEmbeddings(
      self.padded_vocab,
      self.hidden_size,
      self.max_positions,
      self.type_vocab_size,
      self.layer_norm_eps,
      self.dropout_rate,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='embeddings',
    )
    x = embeddings(input_ids, segment_ids, positions, train=train)  # [B, T, D]

    config = BlockConfig(
      num_heads=self.num_heads,
      mlp_dim=self.mlp_dim,
      dropout_rate=self.dropout_rate,
      pre_norm=False,
      layer_norm_eps=self.layer_norm_eps,
      activation=self.activation,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=normal(0.02),
      attention_impl=self.attention_impl,
    )
    encoder = BertEncoder(
      config, self.num_layers, self.scan_layers, self.remat, self.remat_policy, name='encoder'
    )
    collect = self.is_mutable_collection('intermediates')
    if collect:
      h, layer_outputs = encoder(x, key_valid, collect=True, train=train)
      for y in (x, *layer_outputs):
        self.sow('intermediates', 'hidden_states', y)
    else:
      h = encoder(x, key_valid, train=train)  # [B, T, D]

    dense = lambda n, name: nn.Dense(  # noqa: E731
      n, kernel_init=normal(0.02), dtype=self.dtype, param_dtype=self.param_dtype, name=name
    )
    features: dict[str, Any] = {'hidden': h}
    pooled = None
    if self.pooler:
      pooled = jnp.tanh(dense(self.hidden_size, 'pooler')(h[:, 0]))  # [B, D]
      features['pooled'] = pooled

    aux_logits = {}
    drop = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=not train)  # noqa: E731
    if self.head == 'none':
      logits = h
    elif self.head in ('mlm', 'pretraining'):
      mlm = MlmHead(
        self.activation,
        self.layer_norm_eps,
        self.vocab_size,
        self.loss_chunk,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name='mlm',
      )
      at = h
      if masked_positions is not None:
        at = jnp.take_along_axis(h, masked_positions[..., None], axis=1)  # [B, P, D]
      logits = mlm(at, embeddings.word.embedding.T, train=train)  # [B, T or P, V']
      if self.head == 'pretraining':
        aux_logits['nsp'] = dense(2, 'nsp')(pooled)  # [B, 2]
    elif self.head == 'classification':
      logits = dense(self.num_classes, 'classifier')(drop(pooled))  # [B, N]
    elif self.head == 'token_classification':
      logits = dense(self.num_classes, 'token_classifier')(drop(h))  # [B, T, N]
    else:  # span
      logits = dense(2, 'span')(h)  # [B, T, 2]: start, end
    # float32 logits (and loss) under bf16 compute; `head='none'` returns the hidden states.
    as_float32 = lambda y: y if isinstance(y, LazyLogits) else y.astype(jnp.float32)  # noqa: E731
    if self.head != 'none':
      logits = as_float32(logits)
    aux_logits = {k: as_float32(y) for k, y in aux_logits.items()}
    return ModelOutput(logits=logits, aux_logits=aux_logits, features=features)


def _variant(size: str, vocab: dict, **extra) -> tuple[type[nn.Module], dict]:
  return Bert, dict(**SIZES[size], **vocab, **extra)


MODELS: dict[str, tuple[type[nn.Module], dict]] = {
  **{f'bert_{size}': _variant(size, BERT_VOCAB) for size in SIZES if size != 'test'},
  'bert_test': _variant('test', dict(BERT_VOCAB, vocab_size=128, max_positions=64)),
  'roberta_base': _variant('base', ROBERTA_VOCAB),
  'roberta_large': _variant('large', ROBERTA_VOCAB),
  'roberta_test': _variant('test', dict(ROBERTA_VOCAB, vocab_size=128, max_positions=66)),
}
