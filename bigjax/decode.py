"""Autoregressive decoding for every decoder in the zoo: greedy, sampling, beam search.

Legend: B batch, P prompt length, N new tokens, V vocabulary, W beam width.

Everything works on a step function `step(cache, tokens [B, L]) -> (logits [B, L, V],
cache)` and its initial `cache` (any pytree). The prompt is fed once (prefill), then one
token per step inside a jitted `jax.lax.while_loop`, so no prefix is ever recomputed.
`lm_decoder` and `seq2seq_decoder` build the step function from a model that follows the
zoo's contract:
  - a decoder-only LM with a `decode: bool` attribute, `__call__(tokens, *, train)`;
  - an encoder-decoder with a `decode: bool` attribute and methods `encode(src)` and
    `decode_targets(encoded, tgt)`,
and with the decoding clone keeping its state in the `cache` collection.

The step function returned by the adapters is a `jax.tree_util.Partial` over the model's
variables, so the variables are traced arguments (not constants baked into the program)
and a second call with the same model and shapes reuses the compiled loop. A plain Python
function works too: it is compiled once per function object.

Stopping: with `eos_id` set, a row is finished once it emits EOS; it then emits `pad_id`,
and the loop ends when every row has finished (or after N tokens).
Reserved ids: `pad_id` (default `bigjax.vocab.PAD_ID`) and every id in `banned_ids` (a
tokenizer's `reserved_ids`: BOS, ...) get probability zero, so they are never generated.

Beam search keeps B*W rows of the cache and reorders them after each step, along each
leaf's batch axis. The axes are declared, never guessed from sizes: the adapters derive
them by evaluating the cache's shapes at two batch sizes (a scanned model's caches are
[L, B, ...], batch axis 1; a step counter has none) and attach them to the step function
(`step.func.cache_batch_axes`); a hand-written step function passes `cache_batch_axes`
(a pytree like the cache of ints or None), or every cache leaf of rank >= 1 is taken to
be batch-major.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.typing import PRNGKey, PyTree
from bigjax.vocab import PAD_ID

StepFn = Callable[[PyTree, jax.Array], tuple[jax.Array, PyTree]]


# ----------------------------------------------------------------------------- filtering
def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """[..., V] logits with everything outside the top-k / nucleus set to -inf.

  top_k=0 and top_p=1 keep everything. The nucleus (Holtzman et al., 2020) is the
  smallest set of most likely tokens whose probability reaches top_p; the most likely
  token is always kept. Ties at the cut-off are kept.
  """
  _check_filter(top_k, top_p)
  logits = logits.astype(jnp.float32)
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]  # [..., 1]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]  # [..., V] descending
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
    keep = before < top_p  # a prefix of the sorted order; the first is always kept
    count = keep.sum(axis=-1, keepdims=True)  # [..., 1]
    cutoff = jnp.take_along_axis(ordered, count - 1, axis=-1)  # [..., 1]
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def _check_filter(top_k: int, top_p: float) -> None:
  if top_k < 0 or not 0.0 < top_p <= 1.0:
    raise ValueError(f'need top_k >= 0 and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}')


def _banned(pad_id: int, banned_ids) -> tuple[int, ...]:
  """The ids never generated: pad_id and banned_ids, as a sorted tuple (a static key)."""
  return tuple(sorted({int(pad_id), *(int(i) for i in banned_ids)}))


def _ban(logits: jax.Array, banned: tuple[int, ...]) -> jax.Array:
  """[..., V] logits with the banned ids set to -inf (probability zero, renormalised)."""
  return logits.astype(jnp.float32).at[..., jnp.asarray(banned, jnp.int32)].set(-jnp.inf)


def _choose(logits, rng, temperature, top_k, top_p):
  """[B, V] logits -> [B] tokens: argmax at temperature 0, else a filtered sample."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = filter_logits(logits.astype(jnp.float32) / temperature, top_k=top_k, top_p=top_p)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _as_pytree_fn(step: StepFn) -> jax.tree_util.Partial:
  return step if isinstance(step, jax.tree_util.Partial) else jax.tree_util.Partial(step)


def _check_prompt(prompt: jax.Array, max_new_tokens: int) -> None:
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f'prompt must be [B, P] tokens with P >= 1, got shape {prompt.shape}')
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be at least 1, got {max_new_tokens}')


# ------------------------------------------------------------------- greedy and sampling
@functools.partial(
  jax.jit,
  static_argnames=(
    'max_new_tokens',
    'temperature',
    'top_k',
    'top_p',
    'eos_id',
    'pad_id',
    'banned',
  ),
)
def _sample_loop(
  step, cache, prompt, rng, *, max_new_tokens, temperature, top_k, top_p, eos_id, pad_id, banned
):
  batch = prompt.shape[0]
  logits, cache = step(cache, prompt)  # prefill: [B, P, V]
  rng, sub = jax.random.split(rng)
  token = _choose(_ban(logits[:, -1], banned), sub, temperature, top_k, top_p)  # [B]
  finished = token == eos_id if eos_id is not None else jnp.zeros((batch,), bool)
  out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)

  def cond(state):
    i, _, finished, _, _, _ = state
    return (i < max_new_tokens) & ~finished.all()

  def body(state):
    i, token, finished, out, cache, rng = state
    logits, cache = step(cache, token[:, None])  # [B, 1, V]
    rng, sub = jax.random.split(rng)
    token = _choose(_ban(logits[:, -1], banned), sub, temperature, top_k, top_p)
    token = jnp.where(finished, pad_id, token)
    out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
    if eos_id is not None:
      finished = finished | (token == eos_id)
    return i + 1, token, finished, out, cache, rng

  state = (jnp.array(1, jnp.int32), token, finished, out, cache, rng)
  return jax.lax.while_loop(cond, body, state)[3]


def greedy(
  step: StepFn,
  cache: PyTree,
  prompt: jax.Array,
  *,
  max_new_tokens: int,
  eos_id: int | None = None,
  pad_id: int = PAD_ID,
  banned_ids: tuple[int, ...] = (),
) -> jax.Array:
  """Argmax decoding after the [B, P] prompt -> [B, N] new tokens (pad after EOS).

  pad_id and banned_ids are never generated."""
  _check_prompt(prompt, max_new_tokens)
  return _sample_loop(
    _as_pytree_fn(step),
    cache,
    jnp.asarray(prompt, jnp.int32),
    jax.random.key(0),
    max_new_tokens=max_new_tokens,
    temperature=0.0,
    top_k=0,
    top_p=1.0,
    eos_id=eos_id,
    pad_id=pad_id,
    banned=_banned(pad_id, banned_ids),
  )


def sample(
  step: StepFn,
  cache: PyTree,
  prompt: jax.Array,
  rng: PRNGKey,
  *,
  max_new_tokens: int,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int | None = None,
  pad_id: int = PAD_ID,
  banned_ids: tuple[int, ...] = (),
) -> jax.Array:
  """Ancestral sampling from softmax(logits / temperature), optionally restricted to the
  top-k tokens and/or the top-p nucleus -> [B, N] new tokens. temperature=0 is greedy.
  pad_id and banned_ids are never generated."""
  _check_prompt(prompt, max_new_tokens)
  if temperature < 0:
    raise ValueError(f'temperature must be >= 0, got {temperature}')
  _check_filter(top_k, top_p)
  return _sample_loop(
    _as_pytree_fn(step),
    cache,
    jnp.asarray(prompt, jnp.int32),
    rng,
    max_new_tokens=max_new_tokens,
    temperature=float(temperature),
    top_k=int(top_k),
    top_p=float(top_p),
    eos_id=eos_id,
    pad_id=pad_id,
    banned=_banned(pad_id, banned_ids),
  )


# --------------------------------------------------------------------------- beam search
def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT length penalty ((5 + |Y|) / 6)^alpha (Wu et al., 2016, eq. 14)."""
  return ((5.0 + length) / 6.0) ** alpha


@dataclasses.dataclass(frozen=True)
class _Axes:
  """A pytree of batch axes (int or None per cache leaf), hashable: a static argument."""

  leaves: tuple[int | None, ...]
  treedef: Any

  @classmethod
  def of(cls, axes: PyTree) -> '_Axes':
    leaves, treedef = jax.tree.flatten(axes, is_leaf=lambda x: x is None)
    return cls(tuple(None if a is None else int(a) for a in leaves), treedef)

  def tree(self) -> PyTree:
    return jax.tree.unflatten(self.treedef, self.leaves)

  def map(self, fn, cache: PyTree) -> PyTree:
    """fn(leaf, axis) on every cache leaf with a batch axis; the others are kept."""
    leaves = self.treedef.flatten_up_to(cache)
    out = [x if a is None else fn(x, a) for x, a in zip(leaves, self.leaves)]
    return jax.tree.unflatten(self.treedef, out)


def cache_batch_axes(make_cache: Callable[[int], PyTree]) -> PyTree:
  """Each leaf's batch axis (or None) of the cache `make_cache(batch_size)` builds.

  Compares the shapes (`jax.eval_shape`, nothing is computed) at two batch sizes.
  """
  small = jax.eval_shape(functools.partial(make_cache, 2))
  large = jax.eval_shape(functools.partial(make_cache, 3))

  def axis(a, b):
    moved = [i for i, (m, n) in enumerate(zip(a.shape, b.shape)) if m != n]
    if len(moved) > 1:
      raise ValueError(f'a cache leaf of shape {a.shape} grows with the batch on several axes')
    return moved[0] if moved else None

  return jax.tree.map(axis, small, large)


def _beam_axes(step, cache: PyTree, batch: int, declared: PyTree | None) -> _Axes:
  """The batch axes of `cache`: declared, attached to the step function, or batch-major."""
  if declared is None:
    declared = getattr(getattr(step, 'func', None), 'cache_batch_axes', None)
  if declared is None:
    declared = jax.tree.map(lambda x: 0 if jnp.ndim(x) else None, cache)
  axes = _Axes.of(declared)
  try:
    leaves = axes.treedef.flatten_up_to(cache)
  except (ValueError, TypeError) as e:
    raise ValueError(f'cache_batch_axes must have the structure of the cache: {e}') from None
  for x, a in zip(leaves, axes.leaves):
    if a is not None and (a >= jnp.ndim(x) or jnp.shape(x)[a] != batch):
      raise ValueError(
        f'a cache leaf of shape {jnp.shape(x)} has no batch of {batch} on axis {a}: pass '
        "beam_search(..., cache_batch_axes=...) with each leaf's batch axis (None for none)"
      )
  return axes


@functools.partial(
  jax.jit,
  static_argnames=(
    'beam_size',
    'max_new_tokens',
    'alpha',
    'eos_id',
    'pad_id',
    'banned',
    'axes',
  ),
)
def _beam_loop(
  step, cache, prompt, *, beam_size, max_new_tokens, alpha, eos_id, pad_id, banned, axes
):
  batch, width, n = prompt.shape[0], beam_size, max_new_tokens
  logits, cache = step(cache, prompt)  # prefill once per row, then copy it to every beam
  cache = axes.map(lambda x, a: jnp.repeat(x, width, axis=a), cache)
  logits = jnp.repeat(logits[:, -1], width, axis=0)  # [B*W, V]
  vocab = logits.shape[-1]
  ranks = jnp.arange(2 * width)

  def cond(state):
    i, done = state[0], state[6]
    return (i < n) & ~done.all()

  def body(state):
    i, logits, cache, alive_seq, alive_logp, fin, done = state
    fin_seq, fin_score = fin
    logp = jax.nn.log_softmax(_ban(logits, banned)).reshape(batch, width, vocab)
    cand = (alive_logp[..., None] + logp).reshape(batch, width * vocab)  # [B, W*V]
    top_logp, top_idx = jax.lax.top_k(cand, 2 * width)  # [B, 2W]
    parent, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seqs = jnp.take_along_axis(alive_seq, parent[..., None], axis=1)  # [B, 2W, N]
    seqs = jax.lax.dynamic_update_slice(seqs, token[..., None], (0, 0, i))
    is_eos = token == eos_id if eos_id is not None else jnp.zeros_like(token, bool)

    # EOS ends a hypothesis only when it ranks among the best W candidates (fairseq's rule,
    # which makes W = 1 exactly greedy); a row is done once it holds W finished ones.
    ends = is_eos & (ranks < width)[None] & ~done[:, None]
    end_score = jnp.where(ends, top_logp / length_penalty(i + 1.0, alpha), -jnp.inf)
    pool_score = jnp.concatenate([fin_score, end_score], axis=1)  # [B, 3W]
    pool_seq = jnp.concatenate([fin_seq, seqs], axis=1)  # [B, 3W, N]
    fin_score, keep = jax.lax.top_k(pool_score, width)
    fin_seq = jnp.take_along_axis(pool_seq, keep[..., None], axis=1)
    done = done | (fin_score > -jnp.inf).all(axis=1)

    # The W best candidates that did not end continue.
    alive_logp, keep = jax.lax.top_k(jnp.where(is_eos, -jnp.inf, top_logp), width)  # [B, W]
    alive_seq = jnp.take_along_axis(seqs, keep[..., None], axis=1)  # [B, W, N]
    parent = jnp.take_along_axis(parent, keep, axis=1)  # [B, W]
    token = jnp.take_along_axis(token, keep, axis=1)
    rows = (jnp.arange(batch)[:, None] * width + parent).reshape(-1)  # [B*W]
    cache = axes.map(lambda x, a: jnp.take(x, rows, axis=a), cache)
    logits, cache = step(cache, token.reshape(-1, 1))
    return i + 1, logits[:, -1], cache, alive_seq, alive_logp, (fin_seq, fin_score), done

  alive_seq = jnp.full((batch, width, n), pad_id, jnp.int32)
  # Only beam 0 is live at first, so the first step expands one hypothesis per row.
  alive_logp = jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf)[None].repeat(batch, 0)
  fin = (alive_seq, jnp.full((batch, width), -jnp.inf))
  done = jnp.zeros((batch,), bool)
  state = (jnp.array(0, jnp.int32), logits, cache, alive_seq, alive_logp, fin, done)
  i, _, _, alive_seq, alive_logp, (fin_seq, fin_score), done = jax.lax.while_loop(cond, body, state)
  # Rows that ran out of length also rank their unfinished hypotheses.
  alive_score = jnp.where(done[:, None], -jnp.inf, alive_logp / length_penalty(i * 1.0, alpha))
  pool_score = jnp.concatenate([fin_score, alive_score], axis=1)
  scores, keep = jax.lax.top_k(pool_score, width)
  seqs = jnp.take_along_axis(jnp.concatenate([fin_seq, alive_seq], 1), keep[..., None], 1)
  return seqs, scores


def beam_search(
  step: StepFn,
  cache: PyTree,
  prompt: jax.Array,
  *,
  beam_size: int,
  max_new_tokens: int,
  alpha: float = 0.6,
  eos_id: int | None = None,
  pad_id: int = PAD_ID,
  banned_ids: tuple[int, ...] = (),
  cache_batch_axes: PyTree | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Beam search with the GNMT length penalty: score = log P(Y) / ((5 + |Y|) / 6)^alpha.

  `cache` is sized for the B prompt rows; it is copied to B*W rows after the prefill,
  along each leaf's batch axis: `cache_batch_axes` (a pytree like the cache, int or None
  per leaf), else the axes the adapters attach to their step functions, else axis 0 of
  every leaf of rank >= 1. pad_id and banned_ids are never generated.
  Returns ([B, W, N] hypotheses, best first, pad after EOS; [B, W] scores).
  alpha=0.6 is the value of Vaswani et al. (2017) for WMT.
  """
  _check_prompt(prompt, max_new_tokens)
  if beam_size < 1:
    raise ValueError(f'beam_size must be at least 1, got {beam_size}')
  prompt = jnp.asarray(prompt, jnp.int32)
  return _beam_loop(
    _as_pytree_fn(step),
    cache,
    prompt,
    beam_size=int(beam_size),
    max_new_tokens=max_new_tokens,
    alpha=float(alpha),
    eos_id=eos_id,
    pad_id=pad_id,
    banned=_banned(pad_id, banned_ids),
    axes=_beam_axes(step, cache, prompt.shape[0], cache_batch_axes),
  )


# ------------------------------------------------------------------------------ adapters
def _decoding_clone(model: nn.Module, encoder_decoder: bool) -> nn.Module:
  fields = type(model).__dataclass_fields__
  methods = encoder_decoder and not (hasattr(model, 'encode') and hasattr(model, 'decode_targets'))
  if 'decode' not in fields or methods:
    kind = (
      'an encoder-decoder needs `encode` and `decode_targets` methods and a `decode`'
      if encoder_decoder
      else 'an LM needs a `decode`'
    )
    raise ValueError(
      f'{type(model).__name__} cannot decode with a cache: {kind} bool attribute '
      '(see bigjax.decode)'
    )
  return model.clone(decode=True)


def _without_cache(variables: PyTree) -> dict:
  return {k: v for k, v in variables.items() if k not in ('cache', 'intermediates')}


@dataclasses.dataclass(frozen=True)
class _Step:
  """A decoding step over `model` (hashable by model) and its cache's batch axes."""

  model: nn.Module
  axes: _Axes

  @property
  def cache_batch_axes(self) -> PyTree:
    return self.axes.tree()


class _LMStep(_Step):
  """step(variables, cache, tokens) for a decoder-only model."""

  def __call__(self, variables, cache, tokens):
    logits, mutated = self.model.apply({**variables, 'cache': cache}, tokens, mutable=['cache'])
    return logits, mutated['cache']


class _Seq2SeqStep(_Step):
  """step(variables, (cache, encoded), tokens) for an encoder-decoder."""

  def __call__(self, variables, state, tokens):
    cache, encoded = state
    logits, mutated = self.model.apply(
      {**variables, 'cache': cache}, encoded, tokens, method='decode_targets', mutable=['cache']
    )
    return logits, (mutated['cache'], encoded)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=('method',))
def _init_cache(model, *args, method=None):
  # Only the cache is returned, so XLA drops the parameter initialisers and the forward.
  return model.init(jax.random.key(0), *args, method=method)['cache']


@functools.partial(jax.jit, static_argnums=(0,))
def _encode(model, variables, src):
  return model.apply(variables, src, method='encode')


def lm_decoder(
  model: nn.Module, variables: PyTree, batch_size: int, max_len: int
) -> tuple[jax.tree_util.Partial, PyTree]:
  """(step, cache) for a decoder-only model, with room for max_len = P + N tokens."""
  model = _decoding_clone(model, encoder_decoder=False)
  make = lambda b: _init_cache(model, jnp.zeros((b, max_len), jnp.int32))  # noqa: E731
  axes = _Axes.of(cache_batch_axes(make))
  return jax.tree_util.Partial(_LMStep(model, axes), _without_cache(variables)), make(batch_size)


def seq2seq_decoder(
  model: nn.Module, variables: PyTree, src: jax.Array, max_len: int
) -> tuple[jax.tree_util.Partial, PyTree]:
  """(step, cache) for an encoder-decoder: encodes [B, S] src once; room for max_len
  target tokens (the BOS prompt included)."""
  variables = _without_cache(variables)
  src = jnp.asarray(src, jnp.int32)
  decoder = _decoding_clone(model, encoder_decoder=True)

  def state(src):  # (cache, encoded): the decoding state for [B, S] sources
    encoded = _encode(model, variables, src)
    dummy = jnp.zeros((src.shape[0], max_len), jnp.int32)
    return _init_cache(decoder, encoded, dummy, method='decode_targets'), encoded

  axes = cache_batch_axes(lambda b: state(jnp.zeros((b, src.shape[1]), jnp.int32)))
  step = jax.tree_util.Partial(_Seq2SeqStep(decoder, _Axes.of(axes)), variables)
  return step, state(src)


def _run(
  step, cache, prompt, *, method, max_new_tokens, rng, eos_id, pad_id, banned_ids=(), **options
):
  common = dict(max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, banned_ids=banned_ids)
  if method == 'greedy':
    return greedy(step, cache, prompt, **common)
  if method == 'sample':
    keys = ('temperature', 'top_k', 'top_p')
    return sample(
      step,
      cache,
      prompt,
      jax.random.key(0) if rng is None else rng,
      **common,
      **{k: options[k] for k in keys if k in options},
    )
  if method == 'beam':
    keys = ('beam_size', 'alpha')
    seqs, _ = beam_search(
      step,
      cache,
      prompt,
      **common,
      **{k: options[k] for k in keys if k in options},
    )
    return seqs[:, 0]
  raise ValueError(f"unknown decoding method {method!r}; choose 'greedy', 'sample' or 'beam'")


def generate_lm(
  model: nn.Module,
  variables: PyTree,
  prompt: jax.Array,
  *,
  max_new_tokens: int,
  method: str = 'greedy',
  rng: PRNGKey | None = None,
  eos_id: int | None = None,
  pad_id: int = PAD_ID,
  banned_ids: tuple[int, ...] = (),
  **options: Any,
) -> jax.Array:
  """Continues [B, P] prompts with an LM -> [B, N] tokens. options: temperature, top_k,
  top_p (sample), beam_size, alpha (beam; the best hypothesis is returned). pad_id and
  banned_ids (e.g. the tokenizer's `reserved_ids`) are never generated."""
  prompt = jnp.asarray(prompt, jnp.int32)
  _check_prompt(prompt, max_new_tokens)
  step, cache = lm_decoder(model, variables, prompt.shape[0], prompt.shape[1] + max_new_tokens)
  return _run(
    step,
    cache,
    prompt,
    method=method,
    max_new_tokens=max_new_tokens,
    rng=rng,
    eos_id=eos_id,
    pad_id=pad_id,
    banned_ids=banned_ids,
    **options,
  )


def generate_seq2seq(
  model: nn.Module,
  variables: PyTree,
  src: jax.Array,
  *,
  bos_id: int,
  max_new_tokens: int,
  method: str = 'greedy',
  rng: PRNGKey | None = None,
  eos_id: int | None = None,
  pad_id: int = PAD_ID,
  banned_ids: tuple[int, ...] = (),
  **options: Any,
) -> jax.Array:
  """Translates [B, S] sources -> [B, N] target tokens (after BOS; pad after EOS).

  pad_id and banned_ids (e.g. the tokenizer's `reserved_ids`) are never generated."""
  src = jnp.asarray(src, jnp.int32)
  prompt = jnp.full((src.shape[0], 1), bos_id, jnp.int32)
  _check_prompt(prompt, max_new_tokens)
  step, cache = seq2seq_decoder(model, variables, src, 1 + max_new_tokens)
  return _run(
    step,
    cache,
    prompt,
    method=method,
    max_new_tokens=max_new_tokens,
    rng=rng,
    eos_id=eos_id,
    pad_id=pad_id,
    banned_ids=banned_ids,
    **options,
  )
