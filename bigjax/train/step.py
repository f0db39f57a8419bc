"""Pure train and eval steps.

`train_step(state, batch, rng, frozen=None) -> (state, metrics)` is one optimiser update
over the whole global batch. With `optim.grad_accum_steps = k` the batch is split into k
micro-batches that run one after another inside the same jitted step (`lax.scan`, carrying
the gradient sum and the model state such as `batch_stats`), so memory scales with the
micro-batch while every step setting still counts updates. The objective is normalised
over the whole update batch, sum(w * l) / sum(w) with the task's weights, so k micro-batches
of B examples give the gradient of one batch of k * B.

Seams for objectives that need more than the task:
  frozen        a pytree passed to every step and never updated or donated (a teacher's
                variables); `frozen_forward(frozen, micro_batch)` turns it into
                `frozen_outputs` (default: the pytree itself), under stop_gradient.
  loss_terms    `LossTerm(name, weight, fn)`: fn(outputs, micro_batch, frozen_outputs) ->
                a per-element loss shaped like `task.weights(batch)`; it adds
                weight * sum(w * fn) / sum(w) to the objective and is reported under `name`.
                A term with `init` has trainable parameters of its own (a hint's projection):
                `init(rng)` makes them, they live in `state.params[TERM_PARAMS_KEY][name]` (so
                the optimiser, checkpoints and resume treat them like the model's) and `fn`
                gets them as a fourth argument. A term with `intermediates=True` sees the
                student's sown intermediates in `outputs.features[INTERMEDIATES]`.
  task_weight   scales the task's own loss (distillation's 1 - alpha); the model's own
                `aux_losses` (a mixture of experts' balance loss) keep their full weight.

Non-finite values (`train.nonfinite`, 'skip' or 'halt'; 'off' applies every update): an
update whose loss or gradients are not finite is not applied (parameters, optimiser and
model state stay as they were; only `step` advances), and `metrics[NONFINITE]` says what went
bad (0 nothing, 1 the loss, 2 the gradients, 3 both). The loop reads those flags at its
logging steps, never in between, so the check costs no host sync per step.

Metrics of a run are totals: `add_metrics` sums each step's (sum, count) pairs and raw
totals (a confusion matrix) and keeps the eval step's per-example values; `summarize` turns
(sum, count) into sum / count and hands raw totals and per-example values (padding dropped)
to the task's `finalize` for what is not a mean over examples (F1, correlations).
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigjax.outputs import ModelOutput, as_output
from bigjax.train.state import TERM_PARAMS_KEY, TrainState, model_params
from bigjax.train.tasks import Task
from bigjax.typing import Batch, Config, PRNGKey, PyTree

# The eval step's key for per-example values (`Task.collect`), gathered by `summarize`.
COLLECTED = 'collected'
# Where a term that asks for them finds the student's sown intermediates.
INTERMEDIATES = 'intermediates'
# The train step's flag of a skipped non-finite update (see the module docstring).
NONFINITE = 'nonfinite'
NONFINITE_MODES = ('off', 'skip', 'halt')


@dataclasses.dataclass(frozen=True)
class LossTerm:
  """An extra term of the objective (see the module docstring)."""

  name: str
  weight: float
  fn: Callable[..., jax.Array]
  init: Callable[[PRNGKey], PyTree] | None = None  # its own trainable parameters
  intermediates: bool = False  # fn reads outputs.features[INTERMEDIATES]


def init_term_params(loss_terms: tuple[LossTerm, ...], rng: PRNGKey) -> PyTree:
  """{name: params} of the terms that have parameters ({} when none has)."""
  with_params = [t for t in loss_terms if t.init is not None]
  keys = jax.random.split(rng, max(len(with_params), 1))
  return {t.name: t.init(k) for t, k in zip(with_params, keys)}


def _float32(tree):
  return jax.tree.map(
    lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


def split_micro_batches(batch: Batch, k: int) -> Batch:
  """[B, ...] leaves -> [k, B / k, ...]; micro-batch i holds examples i, i + k, i + 2k, ...

  Taking every k-th example keeps each micro-batch spread over all devices (the batch is
  sharded in contiguous blocks), so no micro-batch moves between devices.
  """

  def split(x):
    if x.shape[0] % k:
      raise ValueError(
        f'a batch of {x.shape[0]} does not split into optim.grad_accum_steps={k} '
        f'micro-batches: use a train.batch_size that is a multiple of {k}'
      )
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:])  # [B / k, k, ...]
    return jnp.swapaxes(x, 0, 1)  # [k, B / k, ...]

  return jax.tree.map(split, batch)


def make_train_step(
  model: nn.Module,
  task: Task,
  config: Config,
  schedule: optax.Schedule,
  tx: optax.GradientTransformation,
  *,
  loss_terms: tuple[LossTerm, ...] = (),
  frozen_forward: Callable[[PyTree, Batch], Any] | None = None,
  task_weight: float = 1.0,
):
  """Returns train_step(state, batch, rng, frozen=None) -> (state, metrics); jit it once,
  donating `state` only."""
  accum = int(config.optim.get('grad_accum_steps', 1))
  if accum < 1:
    raise ValueError(f'optim.grad_accum_steps must be >= 1, got {accum}')
  names = [t.name for t in loss_terms]
  if len(set(names)) != len(names):
    raise ValueError(f'loss term names must be unique, got {names}')
  want_intermediates = any(t.intermediates for t in loss_terms)
  nonfinite = config.get('train', {}).get('nonfinite', 'off')
  if nonfinite not in NONFINITE_MODES:
    raise ValueError(
      f'unknown train.nonfinite {nonfinite!r}: choose one of {", ".join(NONFINITE_MODES)}'
    )

  def train_step(state: TrainState, batch: Batch, rng: PRNGKey, frozen: PyTree = None):
    rng = jax.random.fold_in(rng, state.step)  # per-step key: exact resume
    aug_rng, dropout_rng = jax.random.split(rng)
    batch = task.augment(batch, aug_rng)  # on the whole update batch
    total_weight = jnp.maximum(jnp.sum(task.weights(batch)), 1e-8)
    mutable = list(state.model_state) + ([INTERMEDIATES] if want_intermediates else [])

    def micro_step(model_state, micro, dropout_key):
      """Gradient of this micro-batch's share of the objective, and its metrics."""
      frozen_outputs = None
      if loss_terms:
        forward = frozen_forward or (lambda f, b: f)
        frozen_outputs = jax.lax.stop_gradient(forward(frozen, micro))
      w = task.weights(micro)

      def weighted_sum(per_element):
        return jnp.sum(jnp.where(w > 0, per_element, 0.0) * w)

      def loss_fn(params):
        out = model.apply(
          {'params': model_params(params), **model_state},
          *task.inputs(micro),
          train=True,
          rngs={'dropout': dropout_key},
          mutable=mutable or False,
        )
        outputs, new_model_state = out if mutable else (out, {})
        outputs = as_output(outputs)
        if want_intermediates:
          new_model_state = dict(new_model_state)
          sown = new_model_state.pop(INTERMEDIATES, {})
          outputs = outputs.replace(features={**outputs.features, INTERMEDIATES: sown})
        part = jnp.sum(w) / total_weight  # this micro-batch's part of the update
        objective = weighted_sum(task.loss(outputs, micro)) / total_weight
        if task_weight != 1.0:  # scale the task's loss, not the model's own losses in it
          own = sum((v.astype(jnp.float32) for v in outputs.aux_losses.values()), 0.0)
          objective = task_weight * objective + (1.0 - task_weight) * own * part
        terms = {}
        for term in loss_terms:
          args = (outputs, micro, frozen_outputs)
          if term.init is not None:
            args = (*args, params[TERM_PARAMS_KEY][term.name])
          terms[term.name] = weighted_sum(term.fn(*args)) / total_weight
          objective = objective + term.weight * terms[term.name]
        return objective, (outputs, new_model_state, terms)

      (objective, (outputs, new_model_state, terms)), grads = jax.value_and_grad(
        loss_fn, has_aux=True
      )(state.params)
      metrics = task.metrics(_float32(outputs), micro)
      share = jnp.full((), 1.0 / accum, jnp.float32)  # k shares make one update
      metrics['objective'] = (objective, share)
      for name, value in terms.items():
        metrics[name] = (value, share)
      return grads, {**model_state, **new_model_state}, metrics

    if accum == 1:
      grads, model_state, metrics = micro_step(state.model_state, batch, dropout_rng)
    else:

      def body(carry, xs):
        grad_sum, model_state = carry
        micro, i = xs
        grads, model_state, metrics = micro_step(
          model_state, micro, jax.random.fold_in(dropout_rng, i)
        )
        return (jax.tree.map(jnp.add, grad_sum, grads), model_state), metrics

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      xs = (split_micro_batches(batch, accum), jnp.arange(accum))
      (grads, model_state), stacked = jax.lax.scan(body, (zeros, state.model_state), xs)
      metrics = jax.tree.map(lambda x: jnp.sum(x, 0), stacked)

    def apply(grads, params, opt_state):
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    one = jnp.ones((), jnp.float32)
    grad_norm = optax.global_norm(grads)
    metrics['grad_norm'] = (grad_norm, one)
    metrics['learning_rate'] = (schedule(state.step), one)
    if nonfinite == 'off':
      params, opt_state = apply(grads, state.params, state.opt_state)
    else:
      bad_loss = ~jnp.isfinite(metrics['objective'][0])
      bad_grads = ~jnp.isfinite(grad_norm)
      ok = ~(bad_loss | bad_grads)
      # A conditional, not a select over every leaf: the skipped branch passes the donated
      # buffers through, so the guard costs no copy of the state.
      params, opt_state, model_state = jax.lax.cond(
        ok,
        lambda g, p, o, m, old_m: (*apply(g, p, o), m),
        lambda g, p, o, m, old_m: (p, o, old_m),
        grads,
        state.params,
        state.opt_state,
        model_state,
        state.model_state,
      )
      metrics[NONFINITE] = bad_loss.astype(jnp.int32) + 2 * bad_grads.astype(jnp.int32)
    new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
    )
    return new_state, metrics

  return train_step


def eval_metrics(task: Task, outputs: ModelOutput, batch: Batch) -> dict[str, Any]:
  """What one eval step reports: the task's metrics and, when the task collects per-example
  values, `metrics[COLLECTED]` = those [B] arrays plus the batch's `mask`."""
  outputs = _float32(as_output(outputs))
  metrics = dict(task.metrics(outputs, batch))
  if task.collect is not None:
    n = jax.tree.leaves(batch)[0].shape[0]
    mask = batch['mask'] if 'mask' in batch else jnp.ones((n,), bool)
    metrics[COLLECTED] = {**task.collect(outputs, batch), 'mask': mask}
  return metrics


def make_eval_step(model: nn.Module, task: Task):
  """Returns eval_step(state, batch) -> metrics: (sum, count) pairs, raw totals and, for a
  task with `collect`, the per-example values under COLLECTED (see `eval_metrics`)."""

  inputs = task.eval_inputs or task.inputs

  def eval_step(state: TrainState, batch: Batch):
    outputs = model.apply(state.variables, *inputs(batch), train=False)
    return eval_metrics(task, outputs, batch)

  return eval_step


def add_metrics(total, metrics):
  """Adds one step's metrics to the running total (None at first): pairs and raw totals
  are summed on the device; per-example values under COLLECTED are kept, one entry a step."""
  metrics = dict(metrics)
  collected = metrics.pop(COLLECTED, None)
  if total is None:
    total, gathered = metrics, []
  else:
    total = dict(total)
    gathered = total.pop(COLLECTED, [])
    total = jax.tree.map(jnp.add, total, metrics)
  if collected is not None:
    total[COLLECTED] = [*gathered, collected]
  return total


def _gather(steps: list[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Per-step {name: [B]} dicts -> {name: [N]} over the real examples (padding dropped)."""
  if not steps:
    return {}
  mask = np.concatenate([np.asarray(s['mask'], bool) for s in steps])
  return {
    k: np.concatenate([np.asarray(s[k]) for s in steps])[mask] for k in steps[0] if k != 'mask'
  }


def summarize(metrics, task: Task | None = None) -> dict[str, float]:
  """Totals -> plain floats (host sync): each (sum, count) pair becomes sum / count; with a
  `task` that has `finalize`, its values over the raw totals and the gathered per-example
  values are added. Without one (the train logs), raw totals are left out."""
  metrics = jax.device_get(metrics)
  collected = _gather(metrics.pop(COLLECTED, []))
  result, raw = {}, {}
  for k, v in metrics.items():
    if isinstance(v, tuple):
      s, c = v
      result[k] = float(s) / max(float(c), 1e-12)
    else:
      raw[k] = np.asarray(v)
  if task is not None and task.finalize is not None:
    result.update({k: float(v) for k, v in task.finalize(raw, collected).items()})
  return result
