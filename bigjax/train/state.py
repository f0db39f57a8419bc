"""The train state: step, parameters, optimiser state and other model collections."""

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from bigjax.typing import PRNGKey, PyTree

# The key of `params` that holds the trainable parameters of loss terms (a distillation
# hint's projection, `bigjax.train.step.LossTerm.init`): trained and checkpointed with the
# model's, never passed to the model.
TERM_PARAMS_KEY = 'loss_terms'


def model_params(params: PyTree) -> PyTree:
  """`params` without the loss terms' own parameters: what the model is applied with."""
  if isinstance(params, dict) and TERM_PARAMS_KEY in params:
    return {k: v for k, v in params.items() if k != TERM_PARAMS_KEY}
  return params


class TrainState(flax.struct.PyTreeNode):
  """Everything a train step changes. `model_state` holds non-parameter collections
  that training updates (`batch_stats`). `params` may also hold, under TERM_PARAMS_KEY, the
  parameters of extra loss terms; `variables` is what the model is applied with."""

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  model_state: dict[str, Any]

  @property
  def variables(self) -> dict[str, Any]:
    return {'params': model_params(self.params), **self.model_state}


# Collections that `init` may create but that are never trained state: sown activations,
# decoding caches, and partitioning metadata.
_TRANSIENT = ('intermediates', 'cache', 'params_axes')
# Collections that a training apply updates in place.
_STATE = ('batch_stats',)


def _same_structure(a: PyTree, b: PyTree) -> bool:
  shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
  return jax.tree.structure(a) == jax.tree.structure(b) and shapes(a) == shapes(b)


def split_variables(model: nn.Module, variables: dict, rng: PRNGKey, inputs: tuple):
  """`init`'s variables -> (params, model_state), both unboxed (no partitioning metadata).

  model_state keeps `batch_stats` and any other collection that a training apply returns
  with the same structure (state updated in place); collections a model only writes into
  (values it `sow`s, which grow on every apply) and the transient ones are dropped.
  """
  variables = nn.meta.unbox(dict(variables))
  params = variables.pop('params', {})
  model_state = {k: v for k, v in variables.items() if k in _STATE}
  others = {k: v for k, v in variables.items() if k not in _STATE and k not in _TRANSIENT}
  if others:

    def train_apply():
      return model.apply(
        {'params': params, **model_state, **others},
        *inputs,
        train=True,
        rngs={'dropout': rng},
        mutable=[*model_state, *others],
      )[1]

    updated = jax.eval_shape(train_apply)
    for k, v in others.items():
      if k in updated and _same_structure(v, updated[k]):
        model_state[k] = v
  return params, model_state


def init_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  rng: PRNGKey,
  inputs: tuple,
  term_init=None,
) -> TrainState:
  """Initialises parameters from example inputs (shapes only matter); `term_init(rng)`
  makes the loss terms' own parameters (`params[TERM_PARAMS_KEY]`), if any."""
  variables = model.init({'params': rng, 'dropout': rng}, *inputs, train=False)
  params, model_state = split_variables(model, variables, rng, inputs)
  if term_init is not None:
    extra = term_init(jax.random.fold_in(rng, 1))
    if extra:
      params = {**params, TERM_PARAMS_KEY: extra}
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    model_state=model_state,
  )
