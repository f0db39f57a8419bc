"""Optax chains and learning-rate schedules built from the `optim` and `schedule` configs.

Every step count (train.steps, schedule.warmup_steps, the log / eval / checkpoint intervals)
counts optimiser updates. Gradient accumulation (`optim.grad_accum_steps`) happens inside
the train step (`bigjax.train.step`), not in the optimiser.

Fine-tuning adds two wrappers around the chain: frozen parameters (`frozen`, the names
`init_from` loaded when `freeze_loaded` is set) get a zero update and no optimiser state,
and `optim.layer_decay` scales each parameter's update (so its learning rate) by its depth
(`layer_depths`).

Weight averaging (`train.ema_decay` > 0): `with_ema` wraps the whole chain and keeps an
exponential moving average of the parameters in the optimiser state (`EmaState.ema`), so it
is sharded like the parameters, checkpointed beside them, restored on resume and kept as it
was on a skipped non-finite update; `ema_params(opt_state)` finds it.
"""

import re
from collections.abc import Collection
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigjax.layers.stack import SCAN_NAME
from bigjax.typing import Config, PyTree

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'lamb')
SCHEDULES = ('constant', 'cosine', 'linear', 'rsqrt')


def make_schedule(schedule: Config, lr: float, total_steps: int) -> optax.Schedule:
  """Linear warmup to `lr`, then constant / cosine / linear decay / inverse square root.

  rsqrt is the "Attention Is All You Need" schedule: lr * min(s / w, sqrt(w / s)), which
  peaks at `lr` at step w (set lr = D^-0.5 * w^-0.5 for the paper's exact values).
  """
  name = schedule.name
  warmup = int(schedule.get('warmup_steps', 0))
  end = lr * schedule.get('end_factor', 0.0)
  if name not in SCHEDULES:
    raise ValueError(f'unknown schedule {name!r}; choose one of {", ".join(SCHEDULES)}')
  if name == 'rsqrt':
    w = max(warmup, 1)

    def rsqrt(step):
      s = jnp.maximum(step, 1).astype(jnp.float32)
      return lr * jnp.minimum(s / w, jnp.sqrt(w / s))

    return rsqrt
  decay_steps = max(total_steps - warmup, 1)
  if name == 'constant':
    main = optax.constant_schedule(lr)
  elif name == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
  else:
    main = optax.linear_schedule(lr, end, decay_steps)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


# Decay kernels only (dense, conv and attention weights): biases, norm scales, embedding
# tables, position embeddings and class tokens are not decayed, as in big_vision, timm's
# DeiT (`no_weight_decay`) and the "no bias decay" of He et al. (2019).
DEFAULT_DECAY_PATTERN = r'(^|/)kernel$'


def param_path(path) -> str:
  """A tree path as 'block_0/attn/query/kernel'."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def _compile(pattern: str) -> re.Pattern:
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ValueError(
      f'optim.decay_pattern {pattern!r} is not a regular expression ({e}): fix or unset it'
    ) from None


def decay_mask(params: PyTree, pattern: str = DEFAULT_DECAY_PATTERN) -> PyTree:
  """True where weight decay applies: parameters whose '/'-joined path matches `pattern`
  (`re.search`; the default matches every parameter named `kernel`)."""
  regex = _compile(pattern)
  return jax.tree_util.tree_map_with_path(
    lambda path, _: bool(regex.search(param_path(path))), params
  )


# Layer-wise learning-rate decay. A "stack" is the run of blocks under one parent: `block_{i}`
# submodules, or one scanned `layers` subtree whose leaves carry a leading [L] axis. Stacks
# are laid end to end, encoder before decoder, others in natural order of their names (so
# ResNet's stage_0/block_*, stage_1/block_*, ...).
_BLOCK = re.compile(r'^block_(\d+)$')
# Top-level modules before the first block: token / patch / position embeddings, class
# tokens, convolutional stems. Every other parameter outside the blocks (final norm, pooler,
# heads) sits after the last block.
_INPUT_SIDE = re.compile(r'embed|^cls(_token)?$|^stem')
_STACK_ORDER = {'encoder': 0, 'decoder': 1}


def _natural(text: str) -> list:
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', text)]


def _stack_of(parts: list[str], shape: tuple) -> tuple[tuple[str, ...], int | None, int] | None:
  """(stack prefix, block index or None when scanned, blocks seen) of a parameter, or None."""
  for i, part in enumerate(parts[:-1]):
    m = _BLOCK.match(part)
    if m:
      return tuple(parts[:i]), int(m[1]), int(m[1]) + 1
    if part == SCAN_NAME and shape:
      return tuple(parts[:i]), None, int(shape[0])
  return None


def layer_depths(params: PyTree) -> tuple[PyTree, int]:
  """(depth of every parameter, L): the tree of depths, shaped like `params`, and the number
  of blocks L. Input side (embeddings, class token, stem) 0, block i of the model i + 1,
  everything after the last block L + 1; a scanned `layers` leaf gets an int array [L'],
  one depth per slice. Works on arrays and on shape structs.
  """
  leaves = [
    (param_path(path).split('/'), tuple(leaf.shape))
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
  ]
  sizes: dict[tuple[str, ...], int] = {}
  for parts, shape in leaves:
    found = _stack_of(parts, shape)
    if found:
      sizes[found[0]] = max(sizes.get(found[0], 0), found[2])
  offsets, total = {}, 0
  for stack in sorted(sizes, key=lambda s: [(_STACK_ORDER.get(c, 2), _natural(c)) for c in s]):
    offsets[stack], total = total, total + sizes[stack]

  def depth(path, leaf):
    parts = param_path(path).split('/')
    found = _stack_of(parts, tuple(leaf.shape))
    if found is None:
      return 0 if _INPUT_SIDE.search(parts[0]) else total + 1
    stack, index, size = found
    if index is None:  # scanned: one depth per slice
      return offsets[stack] + np.arange(size) + 1
    return offsets[stack] + index + 1

  return jax.tree_util.tree_map_with_path(depth, params), total


def layer_decay_scales(params: PyTree, decay: float) -> PyTree:
  """The learning-rate factor of every parameter, decay^(L + 1 - depth) (`layer_depths`),
  as float32 arrays that broadcast against the parameter ([L', 1, ...] for scanned ones)."""
  depths, total = layer_depths(params)
  if not total:
    raise ValueError(
      f'optim.layer_decay={decay} needs a model made of blocks (block_{{i}} submodules or '
      'scanned layers/); this model has none: set optim.layer_decay=1.0'
    )

  def scale(d, leaf):
    s = np.float32(decay) ** (total + 1 - np.asarray(d)).astype(np.float32)
    return s.reshape(s.shape + (1,) * (len(leaf.shape) - 1)) if s.ndim else s

  return jax.tree.map(scale, depths, params)


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
  """Multiplies each update by `layer_decay_scales`: the same as scaling its learning rate
  (and, with AdamW, its decoupled weight decay, which the learning rate multiplies too)."""

  def init(params):
    layer_decay_scales(params, decay)  # a model without blocks fails when the state is built
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    scales = layer_decay_scales(updates, decay)
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

  return optax.GradientTransformation(init, update)


def freeze(
  tx: optax.GradientTransformation, frozen: Collection[str]
) -> optax.GradientTransformation:
  """`tx` on every parameter except those named in `frozen` ('/'-joined paths), which get a
  zero update and no optimiser state (so weight decay cannot move them either)."""
  frozen = frozenset(frozen)

  def labels(params):
    return jax.tree_util.tree_map_with_path(
      lambda path, _: 'frozen' if param_path(path) in frozen else 'train', params
    )

  return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)


def make_optimizer(
  optim: Config,
  schedule: optax.Schedule,
  *,
  frozen: Collection[str] = (),
) -> optax.GradientTransformation:
  """clip -> optimiser, with weight decay on the parameters `optim.decay_pattern` matches;
  the parameters named in `frozen` are not trained, and `optim.layer_decay` < 1 scales the
  learning rate by depth (see the module docstring)."""
  layer_decay = float(optim.get('layer_decay', 1.0))
  if not 0.0 < layer_decay <= 1.0:
    raise ValueError(
      f'optim.layer_decay must be in (0, 1] (1.0 = off, 0.65-0.9 is usual), got {layer_decay}'
    )
  tx = _base_optimizer(optim, schedule)
  if frozen:
    tx = freeze(tx, frozen)
  if layer_decay != 1.0:  # outside `freeze`, so depths are counted on the whole model
    tx = optax.chain(tx, scale_by_layer_decay(layer_decay))
  return tx


def _base_optimizer(optim: Config, schedule: optax.Schedule) -> optax.GradientTransformation:
  name = optim.name
  wd = optim.get('weight_decay', 0.0)
  pattern = optim.get('decay_pattern', '') or DEFAULT_DECAY_PATTERN
  _compile(pattern)  # a bad pattern fails before training starts
  mask = lambda params: decay_mask(params, pattern)  # noqa: E731
  if name not in OPTIMIZERS:
    raise ValueError(f'unknown optimizer {name!r}; choose one of {", ".join(OPTIMIZERS)}')
  # Adam's moments; LAMB (You et al., 2020) defaults to eps 1e-6.
  betas = dict(b1=optim.get('b1', 0.9), b2=optim.get('b2', 0.999))
  eps = optim.get('eps', 1e-6 if name == 'lamb' else 1e-8)
  if name in ('adamw', 'lamb'):  # decoupled decay, inside the optimiser
    make = optax.adamw if name == 'adamw' else optax.lamb
    core = make(schedule, **betas, eps=eps, weight_decay=wd, mask=mask)
  else:
    # Coupled L2 decay (the ResNet recipe, and Adam's original): added to the gradient.
    if name == 'adam':
      inner = optax.adam(schedule, **betas, eps=eps)
    else:
      momentum = None if name == 'sgd' else optim.get('momentum', 0.9)
      inner = optax.sgd(schedule, momentum=momentum, nesterov=name == 'nesterov')
    core = optax.chain(optax.add_decayed_weights(wd, mask=mask) if wd else optax.identity(), inner)
  clip = optim.get('clip_norm', 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), core) if clip else core


class EmaState(NamedTuple):
  inner: optax.OptState
  ema: PyTree  # the averaged parameters


def with_ema(tx: optax.GradientTransformation, decay: float) -> optax.GradientTransformation:
  """`tx`, plus ema <- decay * ema + (1 - decay) * params after each update (ema starts
  at the initial parameters)."""
  if not 0.0 < decay < 1.0:
    raise ValueError(f'train.ema_decay must be in (0, 1) to average, got {decay}')

  def init(params):
    return EmaState(inner=tx.init(params), ema=jax.tree.map(lambda p: jnp.array(p), params))

  def update(updates, state, params=None):
    updates, inner = tx.update(updates, state.inner, params)
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), state.ema, new)
    return updates, EmaState(inner=inner, ema=ema)

  return optax.GradientTransformation(init, update)


def ema_params(opt_state: optax.OptState) -> PyTree | None:
  """The averaged parameters of a `with_ema` state, or None."""
  return opt_state.ema if isinstance(opt_state, EmaState) else None


def from_config(config: Config, *, frozen: Collection[str] = ()):
  """(schedule, optimiser) for a run; the schedule spans train.steps optimiser updates;
  `frozen` names the parameters that are not trained; train.ema_decay > 0 adds `with_ema`."""
  schedule = make_schedule(config.schedule, config.optim.lr, config.train.steps)
  tx = make_optimizer(config.optim, schedule, frozen=frozen)
  decay = float(config.train.get('ema_decay', 0.0))
  return schedule, (with_ema(tx, decay) if decay else tx)
