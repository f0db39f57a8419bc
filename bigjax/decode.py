"""Autoregressive decoding for every decoder in the zoo: greedy, sampling, beam search.

Legend: B batch, P prompt length, N new tokens, V vocabulary, W beam width.

Everything works on a step function `step(cache, tokens [B, L]) -> (logits [B, L, V],
cache)` and its initial `cache` (any pytree). The prompt is fed once (prefill), then one
token per step inside one jitted loop (a `jax.lax.while_loop` that ends once every row has
stopped; a `jax.lax.scan` of N steps when there is no stop id, as for audio), so no prefix
is ever recomputed.
Ragged prompts are left-padded to a common length P; the prefill then calls
`step(cache, tokens, valid [B, P] bool)` (True = a real token, False = left padding), so
a step function only needs the third argument when it is given ragged prompts.
`lm_decoder` and `seq2seq_decoder` build the step function from a model that follows the
zoo's contract:
  - a decoder-only LM with a `decode: bool` attribute, `__call__(tokens, *, train)`, and,
    for ragged prompts, `__call__(tokens, segment_ids, *, train)` (1 = real, 0 = padding:
    the padding is cached as invalid keys and does not advance the row's position); a
    conditional one (WaveNet) also takes keyword inputs, `lm_decoder(..., conditioning=)`;
  - an encoder-decoder with a `decode: bool` attribute and methods `encode(src)` and
    `decode_targets(encoded, tgt)`,
and with the decoding clone keeping its state in the `cache` collection. A model may
return logits or a `bigjax.outputs.ModelOutput`.

The step function returned by the adapters is a `jax.tree_util.Partial` over the model's
variables, so the variables are traced arguments (not constants baked into the program)
and a second call with the same model and shapes reuses the compiled loop. A plain Python
function works too: it is compiled once per function object; a new `on_token`
does not compile the loop again.

Choosing a token, in order (the order of Hugging Face's logits processors):
  1. only the first `vocab_size` logits are candidates (a model's padded vocabulary
     columns are dropped, whatever value they hold);
  2. repetition penalty (CTRL, Keskar et al., 2019): the logit of every id already in the
     row (its real prompt tokens and what was generated) is divided by the penalty when
     positive and multiplied by it when negative; 1.0 is off;
  3. `pad_id` and every id in `banned_ids` (a tokenizer's `reserved_ids`) get probability
     zero, unless they are stop ids; `pad_id=None` bans nothing on its account (Hugging
     Face vocabularies have no pad, and id 0 is a real token);
  4. greedy: argmax; sampling: temperature, top-k, top-p, then a draw.
Beam search applies the penalty to the log-probabilities (as Hugging Face's beam search
does), after the ban and the normalisation.

Stopping: `eos_id` is an id or a tuple of stop ids; a row is finished once it emits any of
them and then emits the fill id (`pad_id`, or the first stop id when `pad_id` is None, or
0); the loop ends when every row has finished (or after N tokens).

Sampling draws each row from its own key (`rng` is one key, split into B row keys, or B
keys), folded with the step index: a row's tokens depend on its prompt and its key only,
so a batch of ragged prompts gives, row for row, what each prompt alone gives with its key.

Beam search keeps B*W rows of the cache and reorders them after each step, along each
leaf's batch axis. The axes are declared, never guessed from sizes: the adapters derive
them by evaluating the cache's shapes at two batch sizes (a scanned model's caches are
[L, B, ...], batch axis 1; a step counter has none) and attach them to the step function
(`step.func.cache_batch_axes`); a hand-written step function passes `cache_batch_axes`
(a pytree like the cache of ints or None), or every cache leaf of rank >= 1 is taken to
be batch-major.

Streaming: `on_token(tokens)` is called with the [B] numpy tokens of each step, in order,
from inside the compiled loop (`jax.debug.callback(ordered=True)`, so a streamed loop runs on
one device, the first local one); finished rows report
the fill id. Beam search knows its best hypothesis only at the end: it calls `on_token`
column by column after the search.
"""

import dataclasses
import functools
import inspect
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.outputs import logits_of
from bigjax.typing import PRNGKey, PyTree
from bigjax.vocab import PAD_ID

StepFn = Callable[..., tuple[jax.Array, PyTree]]
TokenCallback = Callable[[np.ndarray], Any]


# ----------------------------------------------------------------------------- filtering
def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """[..., V] logits with everything outside the top-k / nucleus set to -inf.

  top_k=0 and top_p=1 keep everything. The nucleus (Holtzman et al., 2020) is the
  smallest set of most likely tokens whose probability reaches top_p; the most likely
  token is always kept. Ties at the cut-off are kept. Ids with probability zero (-inf, or
  a padded vocabulary column's -1e9) are never kept by the nucleus.
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
    # A prefix of the sorted order; the first is always kept. Rounding can leave the
    # cumulative mass just under top_p at the zero-probability tail: those stay out.
    keep = (before < top_p) & ((probs > 0) | (jnp.arange(probs.shape[-1]) == 0))
    count = keep.sum(axis=-1, keepdims=True)  # [..., 1]
    cutoff = jnp.take_along_axis(ordered, count - 1, axis=-1)  # [..., 1]
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def _check_filter(top_k: int, top_p: float) -> None:
  if top_k < 0 or not 0.0 < top_p <= 1.0:
    raise ValueError(f'need top_k >= 0 and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}')


def stop_ids(eos_id: int | Sequence[int] | None) -> tuple[int, ...]:
  """The stop ids as a tuple: None -> (), an id -> (id,), ids -> ids (order kept)."""
  if eos_id is None:
    return ()
  if isinstance(eos_id, (int, np.integer)):
    return (int(eos_id),)
  return tuple(dict.fromkeys(int(i) for i in eos_id))


def _fill_id(pad_id: int | None, stops: tuple[int, ...]) -> int:
  """What a finished row emits: pad_id, else the first stop id, else 0."""
  return int(pad_id) if pad_id is not None else stops[0] if stops else 0


def _banned(pad_id: int | None, banned_ids, stops: tuple[int, ...] = ()) -> tuple[int, ...]:
  """The ids never generated: pad_id and banned_ids less the stop ids (a static key)."""
  banned = {int(i) for i in banned_ids} | (set() if pad_id is None else {int(pad_id)})
  return tuple(sorted(banned - set(stops)))


def _ban(logits: jax.Array, banned: tuple[int, ...]) -> jax.Array:
  """[..., V] logits with the banned ids set to -inf (probability zero, renormalised)."""
  banned = [i for i in banned if 0 <= i < logits.shape[-1]]
  if not banned:
    return logits
  return logits.at[..., jnp.asarray(banned, jnp.int32)].set(-jnp.inf)


def penalize_repetition(logits: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
  """CTRL's repetition penalty (Keskar et al., 2019) as Hugging Face applies it: [..., V]
  logits of the `seen` ids ([..., V] bool) divided by `penalty` when positive, multiplied
  by it when negative."""
  hit = jnp.where(logits < 0, logits * penalty, logits / penalty)
  return jnp.where(seen, hit, logits)


def _seen_in(tokens: jax.Array, valid: jax.Array | None, vocab: int) -> jax.Array:
  """[B, V] bool: which ids occur among the valid [B, L] tokens."""
  ids = tokens if valid is None else jnp.where(valid, tokens, vocab)  # vocab: dropped
  rows = jnp.arange(tokens.shape[0])[:, None]
  return jnp.zeros((tokens.shape[0], vocab), bool).at[rows, ids].set(True, mode='drop')


def _mark(seen: jax.Array, token: jax.Array) -> jax.Array:
  """[B, V] seen with each row's [B] token added."""
  return seen.at[jnp.arange(token.shape[0]), token].set(True, mode='drop')


def _prepare(logits, seen, *, vocab, banned, penalty):
  """[B, V'] step logits -> [B, V] float32: cut to the vocabulary, penalised, banned."""
  logits = logits[..., :vocab].astype(jnp.float32)
  if penalty != 1.0:
    logits = penalize_repetition(logits, seen, penalty)
  return _ban(logits, banned)


def _choose(logits, keys, i, temperature, top_k, top_p):
  """[B, V] logits -> [B] tokens: argmax at temperature 0, else a filtered sample drawn
  with each row's key folded with the step index i."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
  keys = jax.vmap(jax.random.fold_in, (0, None))(keys, i)  # [B]
  return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)


# Streaming receivers by number: the compiled loop carries the number (a traced scalar),
# not the function, so a new callback does not compile the loop again.
_RECEIVERS: dict[int, TokenCallback] = {}


def _deliver(receiver, token) -> None:
  _RECEIVERS[int(receiver)](np.asarray(token))


def _emit(receiver: jax.Array | None, token: jax.Array) -> None:
  if receiver is not None:
    jax.debug.callback(_deliver, receiver, token, ordered=True)


def _as_pytree_fn(step: StepFn) -> jax.tree_util.Partial:
  return step if isinstance(step, jax.tree_util.Partial) else jax.tree_util.Partial(step)


def _prefill(step, cache, prompt, valid):
  """The prompt fed at once; `valid` is passed only for ragged (left-padded) prompts."""
  return step(cache, prompt) if valid is None else step(cache, prompt, valid)


def _check_prompt(prompt: jax.Array, max_new_tokens: int, valid=None) -> None:
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f'prompt must be [B, P] tokens with P >= 1, got shape {prompt.shape}')
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be at least 1, got {max_new_tokens}')
  if valid is not None and np.shape(valid) != prompt.shape:
    raise ValueError(f'prompt_valid must be [B, P] like the prompt, got {np.shape(valid)}')


def _check_penalty(penalty: float) -> float:
  if not penalty > 0:
    raise ValueError(f'repetition_penalty must be > 0 (1.0 = off), got {penalty}')
  return float(penalty)


def _vocab(vocab_size: int | None) -> int | None:
  if vocab_size is not None and vocab_size < 1:
    raise ValueError(f'vocab_size must be at least 1, got {vocab_size}')
  return None if vocab_size is None else int(vocab_size)


def _valid(valid) -> jax.Array | None:
  return None if valid is None else jnp.asarray(valid, bool)


def row_keys(rng: PRNGKey, batch: int) -> jax.Array:
  """[B] typed keys, one per row: one key is split into B; B keys are kept as they are."""
  rng = jnp.asarray(rng)
  if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)  # a raw uint32 key, jax.random.PRNGKey's
  if rng.ndim == 0:
    return jax.random.split(rng, batch)
  if rng.shape != (batch,):
    raise ValueError(f'rng must be one key or {batch} keys (one per row), got shape {rng.shape}')
  return rng


# ------------------------------------------------------------------- greedy and sampling
@functools.partial(
  jax.jit,
  static_argnames=(
    'max_new_tokens',
    'temperature',
    'top_k',
    'top_p',
    'stops',
    'fill',
    'banned',
    'penalty',
    'vocab',
  ),
)
def _sample_loop(
  step,
  cache,
  prompt,
  valid,
  keys,
  receiver,
  *,
  max_new_tokens,
  temperature,
  top_k,
  top_p,
  stops,
  fill,
  banned,
  penalty,
  vocab,
):
  batch = prompt.shape[0]
  logits, cache = _prefill(step, cache, prompt, valid)  # [B, P, V']
  vocab = min(vocab or logits.shape[-1], logits.shape[-1])
  prepare = functools.partial(_prepare, vocab=vocab, banned=banned, penalty=penalty)
  seen = _seen_in(prompt, valid, vocab) if penalty != 1.0 else None
  token = _choose(prepare(logits[:, -1], seen), keys, 0, temperature, top_k, top_p)  # [B]
  _emit(receiver, token)
  stop = jnp.asarray(stops, jnp.int32)
  finished = jnp.isin(token, stop) if stops else jnp.zeros((batch,), bool)
  out = jnp.full((batch, max_new_tokens), fill, jnp.int32).at[:, 0].set(token)
  seen = _mark(seen, token) if seen is not None else None

  def cond(state):
    i, _, finished, _, _, _ = state
    return (i < max_new_tokens) & ~finished.all()

  def body(state):
    i, token, finished, out, cache, seen = state
    logits, cache = step(cache, token[:, None])  # [B, 1, V']
    token = _choose(prepare(logits[:, -1], seen), keys, i, temperature, top_k, top_p)
    token = jnp.where(finished, fill, token)
    _emit(receiver, token)
    out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
    if stops:
      finished = finished | jnp.isin(token, stop)
    seen = _mark(seen, token) if seen is not None else None
    return i + 1, token, finished, out, cache, seen

  state = (jnp.array(1, jnp.int32), token, finished, out, cache, seen)
  if not stops:  # no row can stop early: N - 1 steps, one lax.scan (fori_loop, static bounds)
    return jax.lax.fori_loop(1, max_new_tokens, lambda _, s: body(s), state)[3]
  return jax.lax.while_loop(cond, body, state)[3]


def _sample_call(step, cache, prompt, rng, *, prompt_valid, eos_id, pad_id, banned_ids, **kw):
  prompt = jnp.asarray(prompt, jnp.int32)
  stops = stop_ids(eos_id)
  kw['penalty'] = _check_penalty(kw.pop('repetition_penalty'))
  kw['vocab'] = _vocab(kw.pop('vocab_size'))
  on_token = kw.pop('on_token')
  receiver = None
  if on_token is not None:
    receiver = max(_RECEIVERS, default=0) + 1
    _RECEIVERS[receiver] = on_token
    # Ordered callbacks run on one device only: a streamed loop runs on the first local
    # device (a model restored from a multi-device run holds sharded variables).
    step, cache, prompt, prompt_valid, rng = jax.device_put(
      (_as_pytree_fn(step), cache, prompt, prompt_valid, rng), jax.local_devices()[0]
    )
  try:
    out = _sample_loop(
      _as_pytree_fn(step),
      cache,
      prompt,
      _valid(prompt_valid),
      row_keys(rng, prompt.shape[0]),
      None if receiver is None else jnp.asarray(receiver, jnp.int32),
      stops=stops,
      fill=_fill_id(pad_id, stops),
      banned=_banned(pad_id, banned_ids, stops),
      **kw,
    )
    if receiver is not None:
      jax.effects_barrier()  # every callback has run when the tokens are returned
  finally:
    _RECEIVERS.pop(receiver, None)
  return out


def greedy(
  step: StepFn,
  cache: PyTree,
  prompt: jax.Array,
  *,
  max_new_tokens: int,
  eos_id: int | Sequence[int] | None = None,
  pad_id: int | None = PAD_ID,
  banned_ids: tuple[int, ...] = (),
  repetition_penalty: float = 1.0,
  vocab_size: int | None = None,
  prompt_valid: jax.Array | None = None,
  on_token: TokenCallback | None = None,
) -> jax.Array:
  """Argmax decoding after the [B, P] prompt -> [B, N] new tokens (fill after a stop).

  prompt_valid: [B, P] bool for left-padded prompts (passed to the prefill step).
  pad_id and banned_ids are never generated; see the module docstring for the rest."""
  _check_prompt(prompt, max_new_tokens, prompt_valid)
  return _sample_call(
    step,
    cache,
    prompt,
    jax.random.key(0),  # unused
    prompt_valid=prompt_valid,
    eos_id=eos_id,
    pad_id=pad_id,
    banned_ids=banned_ids,
    max_new_tokens=max_new_tokens,
    temperature=0.0,
    top_k=0,
    top_p=1.0,
    repetition_penalty=repetition_penalty,
    vocab_size=vocab_size,
    on_token=on_token,
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
  eos_id: int | Sequence[int] | None = None,
  pad_id: int | None = PAD_ID,
  banned_ids: tuple[int, ...] = (),
  repetition_penalty: float = 1.0,
  vocab_size: int | None = None,
  prompt_valid: jax.Array | None = None,
  on_token: TokenCallback | None = None,
) -> jax.Array:
  """Ancestral sampling from softmax(logits / temperature), optionally restricted to the
  top-k tokens and/or the top-p nucleus -> [B, N] new tokens. temperature=0 is greedy.

  rng: one key (split into one key per row) or [B] keys. pad_id and banned_ids are never
  generated; see the module docstring for the rest."""
  _check_prompt(prompt, max_new_tokens, prompt_valid)
  if temperature < 0:
    raise ValueError(f'temperature must be >= 0, got {temperature}')
  _check_filter(top_k, top_p)
  return _sample_call(
    step,
    cache,
    prompt,
    rng,
    prompt_valid=prompt_valid,
    eos_id=eos_id,
    pad_id=pad_id,
    banned_ids=banned_ids,
    max_new_tokens=max_new_tokens,
    temperature=float(temperature),
    top_k=int(top_k),
    top_p=float(top_p),
    repetition_penalty=repetition_penalty,
    vocab_size=vocab_size,
    on_token=on_token,
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
    'stops',
    'fill',
    'banned',
    'penalty',
    'vocab',
    'axes',
  ),
)
def _beam_loop(
  step,
  cache,
  prompt,
  valid,
  *,
  beam_size,
  max_new_tokens,
  alpha,
  stops,
  fill,
  banned,
  penalty,
  vocab,
  axes,
):
  batch, width, n = prompt.shape[0], beam_size, max_new_tokens
  logits, cache = _prefill(step, cache, prompt, valid)  # once per row, then copied per beam
  vocab = min(vocab or logits.shape[-1], logits.shape[-1])
  cache = axes.map(lambda x, a: jnp.repeat(x, width, axis=a), cache)
  logits = jnp.repeat(logits[:, -1, :vocab], width, axis=0)  # [B*W, V]
  seen = jnp.repeat(_seen_in(prompt, valid, vocab), width, 0) if penalty != 1.0 else None
  stop = jnp.asarray(stops, jnp.int32)
  ranks = jnp.arange(2 * width)

  def cond(state):
    i, done = state[0], state[7]
    return (i < n) & ~done.all()

  def body(state):
    i, logits, cache, seen, alive_seq, alive_logp, fin, done = state
    fin_seq, fin_score = fin
    logp = jax.nn.log_softmax(_ban(logits.astype(jnp.float32), banned))  # [B*W, V]
    if seen is not None:  # on the log-probabilities, as Hugging Face's beam search
      logp = penalize_repetition(logp, seen, penalty)
    cand = (alive_logp[..., None] + logp.reshape(batch, width, vocab)).reshape(batch, -1)
    top_logp, top_idx = jax.lax.top_k(cand, 2 * width)  # [B, 2W] of [B, W*V]
    parent, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seqs = jnp.take_along_axis(alive_seq, parent[..., None], axis=1)  # [B, 2W, N]
    seqs = jax.lax.dynamic_update_slice(seqs, token[..., None], (0, 0, i))
    is_eos = jnp.isin(token, stop) if stops else jnp.zeros_like(token, bool)

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
    token = jnp.take_along_axis(token, keep, axis=1).reshape(-1)  # [B*W]
    rows = (jnp.arange(batch)[:, None] * width + parent).reshape(-1)  # [B*W]
    cache = axes.map(lambda x, a: jnp.take(x, rows, axis=a), cache)
    if seen is not None:
      seen = _mark(seen[rows], token)
    logits, cache = step(cache, token[:, None])
    state = (i + 1, logits[:, -1, :vocab], cache, seen, alive_seq, alive_logp)
    return *state, (fin_seq, fin_score), done

  alive_seq = jnp.full((batch, width, n), fill, jnp.int32)
  # Only beam 0 is live at first, so the first step expands one hypothesis per row.
  alive_logp = jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf)[None].repeat(batch, 0)
  fin = (alive_seq, jnp.full((batch, width), -jnp.inf))
  done = jnp.zeros((batch,), bool)
  state = (jnp.array(0, jnp.int32), logits, cache, seen, alive_seq, alive_logp, fin, done)
  i, _, _, _, alive_seq, alive_logp, (fin_seq, fin_score), done = jax.lax.while_loop(
    cond, body, state
  )
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
  eos_id: int | Sequence[int] | None = None,
  pad_id: int | None = PAD_ID,
  banned_ids: tuple[int, ...] = (),
  repetition_penalty: float = 1.0,
  vocab_size: int | None = None,
  prompt_valid: jax.Array | None = None,
  cache_batch_axes: PyTree | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Beam search with the GNMT length penalty: score = log P(Y) / ((5 + |Y|) / 6)^alpha.

  `cache` is sized for the B prompt rows; it is copied to B*W rows after the prefill,
  along each leaf's batch axis: `cache_batch_axes` (a pytree like the cache, int or None
  per leaf), else the axes the adapters attach to their step functions, else axis 0 of
  every leaf of rank >= 1. pad_id and banned_ids are never generated; the repetition
  penalty applies to the log-probabilities (Hugging Face's beam search does the same).
  Returns ([B, W, N] hypotheses, best first, fill after a stop id; [B, W] scores).
  alpha=0.6 is the value of Vaswani et al. (2017) for WMT.
  """
  _check_prompt(prompt, max_new_tokens, prompt_valid)
  if beam_size < 1:
    raise ValueError(f'beam_size must be at least 1, got {beam_size}')
  prompt = jnp.asarray(prompt, jnp.int32)
  stops = stop_ids(eos_id)
  return _beam_loop(
    _as_pytree_fn(step),
    cache,
    prompt,
    _valid(prompt_valid),
    beam_size=int(beam_size),
    max_new_tokens=max_new_tokens,
    alpha=float(alpha),
    stops=stops,
    fill=_fill_id(pad_id, stops),
    banned=_banned(pad_id, banned_ids, stops),
    penalty=_check_penalty(repetition_penalty),
    vocab=_vocab(vocab_size),
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
  """step(variables, cache, tokens[, valid]) for a decoder-only model; `valid` [B, L]
  reaches the model as segment_ids (1 = real token, 0 = padding)."""

  def __call__(self, variables, cache, tokens, valid=None):
    extra = () if valid is None else (valid.astype(jnp.int32),)
    out, mutated = self.model.apply(
      {**variables, 'cache': cache}, tokens, *extra, mutable=['cache']
    )
    return logits_of(out), mutated['cache']


class _ConditionedLMStep(_Step):
  """step(variables, (cache, conditioning), tokens[, valid]) for a decoder-only model that
  reads keyword inputs at every step (`conditioning`: name -> [B, ...], e.g. WaveNet's
  label). They ride in the decoding state, so beam search reorders them with the cache."""

  def __call__(self, variables, state, tokens, valid=None):
    cache, conditioning = state
    extra = () if valid is None else (valid.astype(jnp.int32),)
    out, mutated = self.model.apply(
      {**variables, 'cache': cache}, tokens, *extra, **conditioning, mutable=['cache']
    )
    return logits_of(out), (mutated['cache'], conditioning)


class _Seq2SeqStep(_Step):
  """step(variables, (cache, encoded), tokens) for an encoder-decoder."""

  def __call__(self, variables, state, tokens):
    cache, encoded = state
    out, mutated = self.model.apply(
      {**variables, 'cache': cache}, encoded, tokens, method='decode_targets', mutable=['cache']
    )
    return logits_of(out), (mutated['cache'], encoded)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=('method',))
def _init_cache(model, *args, method=None, **kwargs):
  # Only the cache is returned, so XLA drops the parameter initialisers and the forward.
  return model.init(jax.random.key(0), *args, method=method, **kwargs)['cache']


@functools.partial(jax.jit, static_argnums=(0,))
def _encode(model, variables, src):
  return model.apply(variables, src, method='encode')


def lm_decoder(
  model: nn.Module,
  variables: PyTree,
  batch_size: int,
  max_len: int,
  conditioning: dict[str, jax.Array] | None = None,
) -> tuple[jax.tree_util.Partial, PyTree]:
  """(step, cache) for a decoder-only model, with room for max_len = P + N tokens.

  conditioning: keyword inputs of the model, name -> [B, ...] (WaveNet's `label` and
  `audio`), given to the call that creates the cache and to every step; the state is then
  (cache, conditioning)."""
  model = _decoding_clone(model, encoder_decoder=False)
  if not conditioning:
    make = lambda b: _init_cache(model, jnp.zeros((b, max_len), jnp.int32))  # noqa: E731
    axes = _Axes.of(cache_batch_axes(make))
    step = jax.tree_util.Partial(_LMStep(model, axes), _without_cache(variables))
    return step, make(batch_size)
  conditioning = {k: jnp.asarray(v) for k, v in conditioning.items()}
  for name, value in conditioning.items():
    if value.ndim < 1 or value.shape[0] != batch_size:
      raise ValueError(
        f'conditioning {name!r} must have the batch ({batch_size}) first, got {value.shape}'
      )

  def state(cond):  # (cache, cond): the cache is created from the conditioning
    b = next(iter(cond.values())).shape[0]
    return _init_cache(model, jnp.zeros((b, max_len), jnp.int32), **cond), cond

  def resized(b):
    return {k: jnp.zeros((b, *v.shape[1:]), v.dtype) for k, v in conditioning.items()}

  axes = _Axes.of(cache_batch_axes(lambda b: state(resized(b))))
  step = jax.tree_util.Partial(_ConditionedLMStep(model, axes), _without_cache(variables))
  return step, state(conditioning)


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


def left_pad(prompts, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
  """Prompts -> ([B, P] int32 tokens, [B, P] bool validity or None).

  A [B, P] array, or 1-D sequences all of one length, is taken as it is (validity None:
  every token is real). Sequences of different lengths are left-padded with `pad_id` to
  the longest, so every row's last column is its last real token."""
  if isinstance(prompts, (np.ndarray, jax.Array)) and np.ndim(prompts) == 2:
    return np.asarray(prompts, np.int32), None
  rows = [np.asarray(p) for p in prompts]
  if not rows or any(r.ndim != 1 for r in rows):
    raise ValueError('prompts must be a [B, P] array or a non-empty list of 1-D id sequences')
  if any(r.size == 0 for r in rows):
    raise ValueError('a prompt is empty: give every prompt at least one token')
  length = max(r.size for r in rows)
  if all(r.size == length for r in rows):
    return np.stack(rows).astype(np.int32), None
  tokens = np.full((len(rows), length), pad_id, np.int32)
  valid = np.zeros((len(rows), length), bool)
  for b, r in enumerate(rows):
    tokens[b, length - r.size :], valid[b, length - r.size :] = r, True
  return tokens, valid


def _takes_segment_ids(model: nn.Module) -> bool:
  return 'segment_ids' in inspect.signature(type(model).__call__).parameters


def _run(
  step,
  cache,
  prompt,
  *,
  method,
  max_new_tokens,
  rng,
  eos_id,
  pad_id,
  banned_ids=(),
  prompt_valid=None,
  on_token=None,
  **options,
):
  common = dict(
    max_new_tokens=max_new_tokens,
    eos_id=eos_id,
    pad_id=pad_id,
    banned_ids=banned_ids,
    prompt_valid=prompt_valid,
    **{k: options[k] for k in ('repetition_penalty', 'vocab_size') if k in options},
  )
  if method == 'greedy':
    return greedy(step, cache, prompt, **common, on_token=on_token)
  if method == 'sample':
    keys = ('temperature', 'top_k', 'top_p')
    return sample(
      step,
      cache,
      prompt,
      jax.random.key(0) if rng is None else rng,
      **common,
      on_token=on_token,
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
    best = seqs[:, 0]
    if on_token is not None:  # the best hypothesis is known only now
      _replay(on_token, np.asarray(best), stop_ids(eos_id))
    return best
  raise ValueError(f"unknown decoding method {method!r}; choose 'greedy', 'sample' or 'beam'")


def _replay(on_token: TokenCallback, tokens: np.ndarray, stops: tuple[int, ...]) -> None:
  """Calls on_token with each [B] column up to the step where the last row stopped."""
  stopped = np.isin(tokens, stops)
  ends = np.where(stopped.any(1), stopped.argmax(1), tokens.shape[1] - 1)
  for column in tokens.T[: ends.max() + 1]:
    on_token(column)


def generate_lm(
  model: nn.Module,
  variables: PyTree,
  prompts: jax.Array | Sequence[Sequence[int]],
  *,
  max_new_tokens: int,
  method: str = 'greedy',
  rng: PRNGKey | None = None,
  eos_id: int | Sequence[int] | None = None,
  pad_id: int | None = PAD_ID,
  banned_ids: tuple[int, ...] = (),
  repetition_penalty: float = 1.0,
  on_token: TokenCallback | None = None,
  conditioning: dict[str, jax.Array] | None = None,
  **options: Any,
) -> jax.Array:
  """Continues prompts with an LM -> [B, N] tokens (the fill id after a stop id).

  prompts: a [B, P] array, or a list of 1-D id sequences of different lengths (left-padded;
  the prefill passes segment_ids, so the model must take them). Each row gets what its
  prompt alone would get (sampling: with its own key, see `row_keys`). options:
  temperature, top_k, top_p (sample), beam_size, alpha (beam; the best hypothesis is
  returned). eos_id: a stop id or a tuple of them. pad_id and banned_ids (e.g. the
  tokenizer's `reserved_ids`) are never generated; pad_id=None bans nothing. Only the
  model's first `vocab_size` logits (if it has that attribute) are candidates.
  on_token: called with the [B] numpy tokens of each step (see the module docstring).
  conditioning: the model's keyword inputs, name -> [B, ...], fed at every step (see
  `lm_decoder`)."""
  prompt, valid = left_pad(prompts)
  _check_prompt(prompt, max_new_tokens)
  if valid is not None and not _takes_segment_ids(model):
    raise ValueError(
      f'{type(model).__name__} takes no segment_ids, so it cannot read left-padded prompts: '
      'give prompts of one length'
    )
  vocab_size = getattr(model, 'vocab_size', None)
  step, cache = lm_decoder(
    model, variables, prompt.shape[0], prompt.shape[1] + max_new_tokens, conditioning
  )
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
    prompt_valid=valid,
    on_token=on_token,
    repetition_penalty=repetition_penalty,
    vocab_size=vocab_size if isinstance(vocab_size, int) else None,
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
  eos_id: int | Sequence[int] | None = None,
  pad_id: int | None = PAD_ID,
  banned_ids: tuple[int, ...] = (),
  repetition_penalty: float = 1.0,
  on_token: TokenCallback | None = None,
  **options: Any,
) -> jax.Array:
  """Translates [B, S] sources -> [B, N] target tokens (after BOS; fill after a stop id).

  pad_id and banned_ids (e.g. the tokenizer's `reserved_ids`) are never generated; the
  repetition penalty counts the target tokens (BOS included), not the source."""
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
    on_token=on_token,
    repetition_penalty=repetition_penalty,
    **options,
  )
