"""Weight averaging (train.ema_decay): the moving average of the parameters rides in the
optimiser state, so it is sharded, checkpointed and restored like the parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigjax.train import optim


def test_with_ema_averages_the_updated_parameters():
  tx = optim.with_ema(optax.sgd(0.5), 0.9)
  params = {'w': jnp.array([1.0, -2.0])}
  state = tx.init(params)
  np.testing.assert_array_equal(optim.ema_params(state)['w'], params['w'])
  expected = np.array(params['w'])
  for grad in ([1.0, 1.0], [0.0, 2.0]):
    updates, state = tx.update({'w': jnp.array(grad)}, state, params)
    params = optax.apply_updates(params, updates)
    expected = 0.9 * expected + 0.1 * np.array(params['w'])
  np.testing.assert_allclose(optim.ema_params(state)['w'], expected, rtol=1e-6)
  assert optim.ema_params(optax.sgd(0.1).init(params)) is None


def test_the_average_is_found_as_a_parameter_tree_of_the_optimiser_state():
  """optax.tree_map_params sees it, so the sharding rules give it the parameters' layout."""
  tx = optim.with_ema(optax.adam(1e-3), 0.99)
  params = {'a': jnp.zeros((2, 3)), 'b': jnp.zeros((4,))}
  state = tx.init(params)
  marked = optax.tree_map_params(tx, lambda p: 'param', state, transform_non_params=lambda _: '-')
  assert optim.ema_params(marked) == {'a': 'param', 'b': 'param'}
  assert set(jax.tree.leaves(marked)) == {'param', '-'}
