"""Optax chains and learning-rate schedules built from the `optim` and `schedule` configs.

Every step count (train.steps, schedule.warmup_steps, the log / eval / checkpoint intervals)
counts optimiser updates. Gradient accumulation (`optim.grad_accum_steps`) happens inside
the train step (`bigjax.train.step`), not in the optimiser.
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bigjax.typing import PyTree

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'lamb')
SCHEDULES = ('constant', 'cosine', 'linear', 'rsqrt')


def make_schedule(
  schedule: ml_collections.ConfigDict, lr: float, total_steps: int
) -> optax.Schedule:
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


def make_optimizer(
  optim: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """clip -> optimiser, with weight decay on the parameters `optim.decay_pattern` matches."""
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


def from_config(config: ml_collections.ConfigDict):
  """(schedule, optimiser) for a run; the schedule spans train.steps optimiser updates."""
  schedule = make_schedule(config.schedule, config.optim.lr, config.train.steps)
  return schedule, make_optimizer(config.optim, schedule)
