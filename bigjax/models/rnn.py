"""Recurrent networks: Elman RNN, LSTM and GRU layers, a byte-level LM and a classifier.

Legend: B batch, T time steps, I input width, E embedding width, H hidden width,
G gates per cell (1 Elman, 4 LSTM, 3 GRU), L layers, N directions (1 or 2), V vocabulary,
C classes.

The cells follow `torch.nn.RNN` / `torch.nn.LSTM` / `torch.nn.GRU` exactly, gate order and
both bias vectors included, so weights copy 1:1 (`kernel = weight.T`, see
`bigjax.convert.torch_rnn`):
  Elman  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
  LSTM   i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh); c' = s(f) c + s(i) tanh(g);
         h' = s(o) tanh(c')                                   (Hochreiter & Schmidhuber, 1997)
  GRU    r = s(W_ir x + b_ir + W_hr h + b_hr); z = s(... z ...);
         n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = (1 - z) n + z h  (Cho et al., 2014)
A layer projects its whole input at once (`ih`, one big matmul) and scans only the
recurrent half (`hh`) over time with `nn.scan`, so compile time does not grow with T.
Inside `RNN` everything runs time-major ([T, B, ...]: the loop reads and writes contiguous
steps); only the input and the outputs are transposed, where they are narrowest. A first
layer fed straight from an embedding (`TokenInputs`, no dropout between them) projects the
V-row table once and gathers rows, `(E W + b)[ids]`, instead of projecting every token:
the same numbers, and on a byte LM (V = 256 against B*T tokens) far less work both ways.
`rnn_impl='fused'` (the default) runs the same equations through
`bigjax.layers.recurrence.fused_scan`, whose hand-written backward forms the recurrent
weight gradient as one matmul over all steps (same parameters, same results; faster to
train on a CPU); 'scan' differentiates an `nn.scan`. `scan_unroll` sets the steps per loop
iteration of either.
With a [B, T] validity mask a padded step leaves the carry unchanged and outputs zeros, so
the backward direction (a reversed scan) starts at each sequence's last valid step.
Carries: LSTM (c, h), Elman and GRU h, each [B, H], held in float32.

Parameter names (stable):
  RNN:           layer_{i}/{fwd,bwd}/ih/{kernel [I, G*H], bias [G*H]}
                 layer_{i}/{fwd,bwd}/hh/{kernel [H, G*H], bias [G*H]}
  LM:            embed/embedding [V, E], rnn/layer_{i}/fwd/..., head/{kernel [H, V], bias}
  classifier:    embed/embedding [V, E], rnn/layer_{i}/{fwd,bwd}/..., head/{kernel, bias}
"""

import functools
from typing import Any, Callable, NamedTuple, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers.recurrence import fused_scan
from bigjax.typing import Dtype
from bigjax.vocab import PAD_ID

GATES = {'rnn': 1, 'lstm': 4, 'gru': 3}
# Cells whose update reads W_ih x + b_ih and W_hh h + b_hh only through their sum (the GRU
# scales part of the recurrent half by its reset gate).
ADDITIVE = ('rnn', 'lstm')
# How a layer runs its loop over time (`model.rnn_impl`): 'scan' differentiates an
# `nn.scan` of `RecurrentStep`; 'fused' is `bigjax.layers.recurrence.fused_scan`, whose
# hand-written backward forms the recurrent weights' gradient in one matmul after the loop.
# 'fused' is the default: the 512-wide LSTM byte LM trains 1.3x faster with it on a CPU
# (the GRU LM 1.2x); a GRU on float inputs runs within about 5% of 'scan' either way.
RNN_IMPLS = ('scan', 'fused')
DEFAULT_RNN_IMPL = 'fused'
# Steps per loop iteration (`model.scan_unroll`, forward and backward); >= T unrolls fully.
# 1 measured fastest on a CPU (the LSTM LM: 2 costs 4%, 4 costs 20%).
DEFAULT_SCAN_UNROLL = 1
Carry = Any  # jax.Array [B, H], or (c, h) for an LSTM


class TokenInputs(NamedTuple):
  """Embedded tokens not yet looked up, the input `table[ids]` of a first layer.

  table [V, E] (in the compute dtype), ids [B, T] int (time-major [T, B] inside `RNN`).
  `Recurrence` projects the table and gathers rows instead of projecting every token.
  """

  table: jax.Array
  ids: jax.Array


def _check_cell(cell: str) -> None:
  if cell not in GATES:
    raise ValueError(f'unknown recurrent cell {cell!r}; choose one of {sorted(GATES)}')


def _check_impl(rnn_impl: str, scan_unroll: int) -> None:
  if rnn_impl not in RNN_IMPLS:
    raise ValueError(f'unknown model.rnn_impl {rnn_impl!r}; choose one of {list(RNN_IMPLS)}')
  if scan_unroll < 1:
    raise ValueError(f'model.scan_unroll must be at least 1, got {scan_unroll}')


def zero_carry(cell: str, batch_size: int, hidden_size: int, dtype: Dtype = jnp.float32) -> Carry:
  """The all-zero state of one cell: [B, H], or (c, h) for an LSTM."""
  _check_cell(cell)
  h = jnp.zeros((batch_size, hidden_size), dtype)
  return (h, h) if cell == 'lstm' else h


def carry_output(cell: str, carry: Carry) -> jax.Array:
  """The hidden state h [B, H] of a carry (the cell's output)."""
  return carry[1] if cell == 'lstm' else carry


def cell_update(cell: str, xp: jax.Array, hp: jax.Array, carry: Carry) -> Carry:
  """One step of the cell equations.

  xp = W_ih x + b_ih and hp = W_hh h + b_hh, both [B, G*H]; returns the new carry.
  """
  if cell == 'rnn':
    return jnp.tanh(xp + hp)
  if cell == 'lstm':
    c, _ = carry
    i, f, g, o = jnp.split(xp + hp, 4, axis=-1)  # 4 x [B, H]
    c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
    return c, nn.sigmoid(o) * jnp.tanh(c)
  xr, xz, xn = jnp.split(xp, 3, axis=-1)  # 3 x [B, H]
  hr, hz, hn = jnp.split(hp, 3, axis=-1)
  r = nn.sigmoid(xr + hr)
  z = nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  return (1.0 - z) * n + z * carry


def stacked_orthogonal(num_blocks: int) -> Callable[..., jax.Array]:
  """[H, G*H] recurrent kernel made of G independent orthogonal [H, H] blocks.

  One batched QR (Saxe et al., 2014) rather than G separate ones: cheaper to compile.
  """

  def init(key, shape, dtype=jnp.float32):
    rows, cols = shape
    if cols != num_blocks * rows:
      raise ValueError(f'stacked_orthogonal({num_blocks}) needs shape [H, {num_blocks}*H]')
    a = jax.random.normal(key, (num_blocks, rows, rows), jnp.float32)
    q, r = jnp.linalg.qr(a)  # [G, H, H] each
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]  # uniform (Haar) draw
    return q.transpose(1, 0, 2).reshape(rows, cols).astype(dtype)  # [H, G*H]

  return init


def input_bias_init(cell: str, hidden_size: int) -> Callable[..., jax.Array]:
  """Zeros, except an LSTM's forget-gate bias of 1 (Jozefowicz et al., 2015)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    bias = jnp.zeros(shape, dtype)
    if cell == 'lstm':
      bias = bias.at[hidden_size : 2 * hidden_size].set(1.0)
    return bias

  return init


def _carry_dtype(dtype: Dtype) -> Dtype:
  # The state accumulates over many steps: keep it at least float32 under bf16 compute.
  return jnp.promote_types(dtype, jnp.float32)


def _hidden_params(module: nn.Module, cell: str, hidden_size: int, param_dtype: Dtype):
  """Declares the recurrent half's `kernel` [H, G*H] and `bias` [G*H] in `module`."""
  width = GATES[cell] * hidden_size
  kernel = module.param(
    'kernel', stacked_orthogonal(GATES[cell]), (hidden_size, width), param_dtype
  )
  bias = module.param('bias', nn.initializers.zeros, (width,), param_dtype)
  return kernel, bias


class HiddenParams(nn.Module):
  """The parameters of `RecurrentStep` alone (same names and init), for the loops that do
  not scan a module: `rnn_impl='fused'` and `'cudnn'`."""

  cell: str
  hidden_size: int
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    return _hidden_params(self, self.cell, self.hidden_size, self.param_dtype)


def _recurrent_matmul(cell: str, carry: Carry, kernel, bias, dtype: Dtype) -> jax.Array:
  """hp = W_hh h + b_hh [B, G*H], in the compute dtype."""
  h = carry_output(cell, carry)
  return jnp.dot(h.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


def step_tail(
  cell: str, dtype: Dtype, xp: jax.Array, hp: jax.Array, carry: Carry, valid: jax.Array
) -> tuple[Carry, jax.Array]:
  """The part of a step after the recurrent matmul: the cell update, then the mask.

  xp, hp [B, G*H], valid [B] -> (carry, output [B, H]). A padded step keeps the old carry
  and outputs zeros. The update runs in float32 (or wider) whatever the compute dtype.
  """
  cdt = _carry_dtype(dtype)
  new = cell_update(cell, xp.astype(cdt), hp.astype(cdt), carry)
  keep = valid[:, None]  # [B, 1]
  new = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, carry)
  out = jnp.where(keep, carry_output(cell, new), 0.0)
  return new, out.astype(dtype)


class RecurrentStep(nn.Module):
  """The recurrent half of a cell for one step: hp = W_hh h + b_hh, then the update.

  Scanned over time by `Recurrence`; its params are `kernel` [H, G*H] and `bias` [G*H].
  """

  cell: str
  hidden_size: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, carry: Carry, inputs: tuple[jax.Array, jax.Array]):
    """carry, (xp [B, G*H], valid [B]) -> (carry, output [B, H])."""
    xp, valid = inputs
    kernel, bias = _hidden_params(self, self.cell, self.hidden_size, self.param_dtype)
    hp = _recurrent_matmul(self.cell, carry, kernel, bias, self.dtype)
    return step_tail(self.cell, self.dtype, xp, hp, carry, valid)


class Recurrence(nn.Module):
  """One direction of one recurrent layer over a whole sequence, time-major.

  Params: `ih` (Dense [I, G*H], applied to every step at once) and `hh` (`RecurrentStep`).
  `reverse=True` runs from the last step to the first; padded steps are skipped.
  """

  cell: str = 'lstm'
  hidden_size: int = 128
  reverse: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  rnn_impl: str = DEFAULT_RNN_IMPL
  scan_unroll: int = DEFAULT_SCAN_UNROLL

  @nn.compact
  def __call__(
    self, x: jax.Array | TokenInputs, mask: jax.Array, carry: Carry
  ) -> tuple[Carry, jax.Array]:
    """x [T, B, I] (or `TokenInputs` with ids [T, B]), mask [T, B] bool, carry ->
    (final carry, outputs [T, B, H])."""
    _check_cell(self.cell)
    _check_impl(self.rnn_impl, self.scan_unroll)
    ih = nn.Dense(
      GATES[self.cell] * self.hidden_size,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      bias_init=input_bias_init(self.cell, self.hidden_size),
      name='ih',
    )
    # Rows ids of E W + b equal (E[ids]) W + b: V rows projected instead of T*B tokens
    # (ids out of range are clipped).
    ids = x.ids if isinstance(x, TokenInputs) else None
    xp = ih(x.table if ids is not None else x)  # [V, G*H] or [T, B, G*H]
    if self.rnn_impl == 'fused':
      kernel, bias = HiddenParams(self.cell, self.hidden_size, self.param_dtype, name='hh')()
      return fused_scan(
        functools.partial(step_tail, self.cell, self.dtype),
        functools.partial(carry_output, self.cell),
        self.dtype,
        self.reverse,
        self.scan_unroll,
        self.cell in ADDITIVE,
        kernel,
        bias,
        xp,  # the loop gathers the table's rows itself
        ids,
        mask,
        carry,
      )  # (carry, outputs [T, B, H])
    if ids is not None:
      xp = jnp.take(xp, ids, axis=0, mode='clip')  # [T, B, G*H]
    scan = nn.scan(
      RecurrentStep,
      variable_broadcast='params',
      split_rngs={'params': False},
      reverse=self.reverse,
      unroll=self.scan_unroll,
    )
    step = scan(self.cell, self.hidden_size, self.dtype, self.param_dtype, name='hh')
    return step(carry, (xp, mask))


class RecurrentCell(nn.Module):
  """One whole cell step (`ih` and `hh`), for loops whose input depends on the state.

  An attention decoder feeds each step a context computed from the previous state, so the
  input projection cannot be hoisted out of the loop as `Recurrence` does.
  """

  cell: str = 'lstm'
  hidden_size: int = 128
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, carry: Carry, x: jax.Array) -> tuple[Carry, jax.Array]:
    """carry, x [B, I] -> (carry, h [B, H])."""
    _check_cell(self.cell)
    xp = nn.Dense(
      GATES[self.cell] * self.hidden_size,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      bias_init=input_bias_init(self.cell, self.hidden_size),
      name='ih',
    )(x)  # [B, G*H]
    valid = jnp.ones(x.shape[:1], bool)
    step = RecurrentStep(self.cell, self.hidden_size, self.dtype, self.param_dtype, name='hh')
    return step(carry, (xp, valid))


class RecurrentLayer(nn.Module):
  """One layer, time-major: `fwd`, plus `bwd` when bidirectional (outputs concatenated)."""

  cell: str = 'lstm'
  hidden_size: int = 128
  bidirectional: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  rnn_impl: str = DEFAULT_RNN_IMPL
  scan_unroll: int = DEFAULT_SCAN_UNROLL

  @nn.compact
  def __call__(self, x, mask, carries: Sequence[Carry]) -> tuple[tuple[Carry, ...], jax.Array]:
    """x [T, B, I] (or `TokenInputs`), mask [T, B], N carries ->
    (N final carries, outputs [T, B, N*H])."""
    kw = dict(
      cell=self.cell,
      hidden_size=self.hidden_size,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      rnn_impl=self.rnn_impl,
      scan_unroll=self.scan_unroll,
    )
    final, outs = Recurrence(**kw, name='fwd')(x, mask, carries[0])
    if not self.bidirectional:
      return (final,), outs
    final_b, outs_b = Recurrence(**kw, reverse=True, name='bwd')(x, mask, carries[1])
    return (final, final_b), jnp.concatenate([outs, outs_b], axis=-1)  # [T, B, 2H]


class RNN(nn.Module):
  """Stacked, optionally bidirectional Elman / LSTM / GRU layers (`torch.nn.LSTM` layout).

  Dropout is applied between layers, not after the last (as in torch). Params live under
  `layer_{i}/{fwd,bwd}/{ih,hh}`.
  """

  cell: str = 'lstm'  # 'rnn' (Elman, tanh) | 'lstm' | 'gru'
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  rnn_impl: str = DEFAULT_RNN_IMPL  # see RNN_IMPLS
  scan_unroll: int = DEFAULT_SCAN_UNROLL

  @property
  def num_directions(self) -> int:
    return 2 if self.bidirectional else 1

  def zero_carries(self, batch_size: int) -> tuple[Carry, ...]:
    """L*N zero carries, ordered (layer 0 fwd, layer 0 bwd, layer 1 fwd, ...) as torch."""
    one = zero_carry(self.cell, batch_size, self.hidden_size, _carry_dtype(self.dtype))
    return tuple(one for _ in range(self.num_layers * self.num_directions))

  @nn.compact
  def __call__(
    self,
    x: jax.Array | TokenInputs,
    *,
    mask: jax.Array | None = None,
    initial_carry: Sequence[Carry] | None = None,
    train: bool = False,
  ) -> tuple[jax.Array, tuple[Carry, ...]]:
    """x [B, T, I] or `TokenInputs` (table [V, I], ids [B, T]) (mask [B, T] bool, True =
    valid) -> (outputs [B, T, N*H], L*N carries).

    Outputs are zero at padded steps; each final carry is the state after the last valid
    step in its direction.
    """
    _check_cell(self.cell)
    if self.num_layers < 1:
      raise ValueError(f'num_layers must be at least 1, got {self.num_layers}')
    if isinstance(x, TokenInputs):
      chex.assert_rank([x.table, x.ids], [2, 2])
      batch, length = x.ids.shape
      x = x._replace(ids=x.ids.T)  # [T, B]: the int ids are the cheapest thing to transpose
    else:
      chex.assert_rank(x, 3)
      batch, length = x.shape[:2]
      x = jnp.swapaxes(x, 0, 1)  # [T, B, I]
    mask = jnp.ones((batch, length), bool) if mask is None else mask.astype(bool)
    chex.assert_shape(mask, (batch, length))
    n = self.num_directions
    if initial_carry is None:
      initial_carry = self.zero_carries(batch)
    elif len(initial_carry) != self.num_layers * n:
      raise ValueError(
        f'initial_carry needs num_layers * directions = {self.num_layers * n} carries, '
        f'got {len(initial_carry)}'
      )
    cdt = _carry_dtype(self.dtype)
    initial_carry = jax.tree.map(lambda a: jnp.asarray(a, cdt), tuple(initial_carry))
    mask = mask.T  # [T, B]
    finals = []
    for i in range(self.num_layers):
      if i > 0 and self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
      layer = RecurrentLayer(
        self.cell,
        self.hidden_size,
        self.bidirectional,
        self.dtype,
        self.param_dtype,
        self.rnn_impl,
        self.scan_unroll,
        name=f'layer_{i}',
      )
      final, x = layer(x, mask, initial_carry[i * n : (i + 1) * n])  # [T, B, N*H]
      finals.extend(final)
    return jnp.swapaxes(x, 0, 1), tuple(finals)  # [B, T, N*H]


def embed_and_rnn(
  model: nn.Module,
  tokens: jax.Array,
  drop: nn.Dropout,
  *,
  cell: str,
  bidirectional: bool = False,
  train: bool = False,
) -> tuple[jax.Array | TokenInputs, RNN]:
  """The front of every recurrent model: tokens [B, T] -> dropped embeddings [B, T, E], and
  the `rnn` stack to run on them (not yet applied: the LM feeds it its cached state).

  Without embedding dropout, and with no more vocabulary rows than tokens, the embeddings
  come back unlooked-up as `TokenInputs` (table, tokens): the first layer then projects the
  table instead of every token (same result). Use the return value only as `rnn`'s input.

  Called inside `model`'s compact method, so `embed` and `rnn` become its submodules; the
  sizes are `model`'s vocab_size, embed_dim, hidden_size, num_layers, dropout_rate, dtype,
  param_dtype, rnn_impl and scan_unroll. `drop` is the caller's dropout, which it may reuse
  further on.
  """
  embed = nn.Embed(
    model.vocab_size,
    model.embed_dim,
    dtype=model.dtype,
    param_dtype=model.param_dtype,
    name='embed',
  )
  if (drop.rate == 0 or not train) and model.vocab_size <= tokens.size:
    x = TokenInputs(jnp.asarray(embed.embedding, model.dtype), tokens)  # [V, E], [B, T]
  else:
    x = drop(embed(tokens), deterministic=not train)  # [B, T, E]
  rnn = RNN(
    cell,
    model.hidden_size,
    model.num_layers,
    bidirectional,
    model.dropout_rate,
    model.dtype,
    model.param_dtype,
    model.rnn_impl,
    model.scan_unroll,
    name='rnn',
  )
  return x, rnn


class RNNLanguageModel(nn.Module):
  """Byte-level recurrent language model: `embed`, stacked `rnn`, `head` to V logits.

  Dropout on the embeddings, between layers and before the head (the non-recurrent
  connections; Zaremba et al., 2014). With `decode=True` the recurrent state lives in the
  `cache` collection: create it with `init` on a [B, L] input, then each `apply(...,
  mutable=['cache'])` continues from it.
  """

  vocab_size: int = 256
  cell: str = 'lstm'
  embed_dim: int = 128
  hidden_size: int = 512
  num_layers: int = 1
  dropout_rate: float = 0.0
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  rnn_impl: str = DEFAULT_RNN_IMPL
  scan_unroll: int = DEFAULT_SCAN_UNROLL

  @nn.compact
  def __call__(
    self, tokens: jax.Array, *, mask: jax.Array | None = None, train: bool = False
  ) -> jax.Array:
    """tokens [B, T] int (mask [B, T], default all valid) -> float32 logits [B, T, V]."""
    chex.assert_rank(tokens, 2)
    drop = nn.Dropout(self.dropout_rate)
    x, rnn = embed_and_rnn(self, tokens, drop, cell=self.cell, train=train)
    carry = None
    if self.decode:
      cache = self.variable('cache', 'carry', rnn.zero_carries, tokens.shape[0])
      carry = cache.value
    y, final = rnn(x, mask=mask, initial_carry=carry, train=train)  # [B, T, H]
    if self.decode and not self.is_initializing():
      cache.value = final
    y = drop(y, deterministic=not train)
    logits = nn.Dense(self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype, name='head')(
      y
    )  # [B, T, V]
    return logits.astype(jnp.float32)  # a float32 loss under bf16 compute


class RNNClassifier(nn.Module):
  """Sequence classifier: `embed`, (bi)directional `rnn`, pooling, `head` to C logits.

  pooling='last': the top layer's final hidden states (forward after the last valid step,
  backward after the first), concatenated; 'mean': the outputs averaged over valid steps.
  """

  num_classes: int = 2
  vocab_size: int = 256
  cell: str = 'lstm'
  embed_dim: int = 128
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = True
  pooling: str = 'last'  # 'last' | 'mean'
  dropout_rate: float = 0.0
  pad_id: int = PAD_ID
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  rnn_impl: str = DEFAULT_RNN_IMPL
  scan_unroll: int = DEFAULT_SCAN_UNROLL

  @nn.compact
  def __call__(
    self, tokens: jax.Array, *, mask: jax.Array | None = None, train: bool = False
  ) -> jax.Array:
    """tokens [B, T] int (mask [B, T], default tokens != pad_id) -> float32 logits [B, C]."""
    if self.pooling not in ('last', 'mean'):
      raise ValueError(f"pooling must be 'last' or 'mean', got {self.pooling!r}")
    chex.assert_rank(tokens, 2)
    mask = tokens != self.pad_id if mask is None else mask.astype(bool)
    drop = nn.Dropout(self.dropout_rate)
    x, rnn = embed_and_rnn(
      self, tokens, drop, cell=self.cell, bidirectional=self.bidirectional, train=train
    )
    y, finals = rnn(x, mask=mask, train=train)  # [B, T, N*H]
    if self.pooling == 'last':
      top = finals[-rnn.num_directions :]
      feats = jnp.concatenate([carry_output(self.cell, c) for c in top], axis=-1)  # [B, N*H]
      feats = feats.astype(self.dtype)
    else:
      m = mask[..., None].astype(y.dtype)  # [B, T, 1]
      feats = (y * m).sum(1) / jnp.maximum(m.sum(1), 1.0)  # [B, N*H]
    self.sow('intermediates', 'features', feats)
    feats = drop(feats, deterministic=not train)
    logits = nn.Dense(
      self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='head'
    )(feats)
    chex.assert_rank(logits, 2)
    return logits.astype(jnp.float32)  # a float32 loss under bf16 compute


# Byte-level LM sizes. 'medium' and 'large' are the two-layer word-level models of
# Zaremba et al. (2014), "Recurrent Neural Network Regularization" (650 and 1500 units,
# dropout 0.5 and 0.65); 'small' is a one-layer byte model that trains on a CPU in minutes.
LM_VARIANTS = {
  'test': dict(embed_dim=16, hidden_size=32, num_layers=1),
  'small': dict(embed_dim=128, hidden_size=512, num_layers=1),
  'medium': dict(embed_dim=650, hidden_size=650, num_layers=2, dropout_rate=0.5),
  'large': dict(embed_dim=1500, hidden_size=1500, num_layers=2, dropout_rate=0.65),
}
# Sequence classifiers: a bidirectional one-layer encoder (Graves & Schmidhuber, 2005).
CLASSIFIER_VARIANTS = {
  'test': dict(embed_dim=16, hidden_size=16, num_layers=1),
  'base': dict(embed_dim=128, hidden_size=256, num_layers=1, dropout_rate=0.2),
}

MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
  **{
    f'{cell}_lm' + ('' if size == 'small' else f'_{size}'): (
      RNNLanguageModel,
      dict(cell=cell, **kw),
    )
    for cell in ('lstm', 'gru', 'rnn')
    for size, kw in LM_VARIANTS.items()
  },
  **{
    f'{cell}_classifier' + ('' if size == 'base' else f'_{size}'): (
      RNNClassifier,
      dict(cell=cell, **kw),
    )
    for cell in ('lstm', 'gru')
    for size, kw in CLASSIFIER_VARIANTS.items()
  },
}
