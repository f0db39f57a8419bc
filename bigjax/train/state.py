"""The train state: step, parameters, optimiser state and other model collections."""

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from bigjax.typing import PRNGKey, PyTree


class TrainState(flax.struct.PyTreeNode):
  """Everything a train step changes. `model_state` holds non-parameter collections
  that training updates (`batch_stats`)."""

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  model_state: dict[str, Any]

  @property
  def variables(self) -> dict[str, Any]:
    return {'params': self.params, **self.model_state}


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
  model: nn.Module, tx: optax.GradientTransformation, rng: PRNGKey, inputs: tuple
) -> TrainState:
  """Initialises parameters from example inputs (shapes only matter)."""
  variables = model.init({'params': rng, 'dropout': rng}, *inputs, train=False)
  params, model_state = split_variables(model, variables, rng, inputs)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    model_state=model_state,
  )
