"""Pure train and eval steps: (state, batch, rng) -> (state, metrics)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from bigjax.train.state import TrainState
from bigjax.train.tasks import Task, main_logits
from bigjax.typing import Batch, PRNGKey


def make_train_step(
  model: nn.Module,
  task: Task,
  config: ml_collections.ConfigDict,
  schedule: optax.Schedule,
  tx: optax.GradientTransformation,
):
  """Returns train_step(state, batch, rng) -> (state, metrics); jit it once."""
  accum = int(config.optim.get('grad_accum_steps', 1))

  def train_step(state: TrainState, batch: Batch, rng: PRNGKey):
    rng = jax.random.fold_in(rng, state.step)  # per-step key: exact resume
    aug_rng, dropout_rng = jax.random.split(rng)
    batch = task.augment(batch, aug_rng, config)
    mutable = list(state.model_state)

    def loss_fn(params):
      out = model.apply(
        {'params': params, **state.model_state},
        *task.inputs(batch),
        train=True,
        rngs={'dropout': dropout_rng},
        mutable=mutable or False,
      )
      outputs, new_model_state = out if mutable else (out, {})
      per_example, weight = task.loss(outputs, batch, config)
      loss = jnp.sum(per_example * weight) / jnp.maximum(jnp.sum(weight), 1e-8)
      return loss, (outputs, new_model_state)

    (_, (outputs, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = task.metrics(jax.tree.map(lambda x: x.astype(jnp.float32), outputs), batch)
    one = jnp.ones((), jnp.float32)
    metrics['grad_norm'] = (optax.global_norm(grads), one)
    metrics['learning_rate'] = (schedule(state.step // accum), one)
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      model_state={**state.model_state, **new_model_state},
    )
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, task: Task):
  """Returns eval_step(state, batch) -> metrics as (sum, count) pairs."""

  def eval_step(state: TrainState, batch: Batch):
    outputs = model.apply(state.variables, *task.inputs(batch), train=False)
    return task.metrics(main_logits(outputs).astype(jnp.float32), batch)

  return eval_step


def add_metrics(a, b):
  return b if a is None else jax.tree.map(jnp.add, a, b)


def summarize(metrics) -> dict[str, float]:
  """(sum, count) pairs -> plain floats (host sync)."""
  metrics = jax.device_get(metrics)
  return {k: float(s) / max(float(c), 1e-12) for k, (s, c) in metrics.items()}
