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


# Collections that `init` creates but that are not trained state.
_TRANSIENT = ('intermediates', 'cache')


def init_state(
  model: nn.Module, tx: optax.GradientTransformation, rng: PRNGKey, inputs: tuple
) -> TrainState:
  """Initialises parameters from example inputs (shapes only matter)."""
  variables = model.init({'params': rng, 'dropout': rng}, *inputs, train=False)
  params = variables['params']
  model_state = {k: v for k, v in variables.items() if k != 'params' and k not in _TRANSIENT}
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    model_state=model_state,
  )
