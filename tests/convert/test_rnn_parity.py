"""bigjax RNN / LSTM / GRU against torch.nn with the same weights (float32, 1e-5)."""

import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='parity tests need torch (the parity extra)')

import jax.numpy as jnp  # noqa: E402

from bigjax.convert.torch_rnn import (  # noqa: E402
  carries_from_torch,
  carries_to_torch,
  rnn_from_torch,
  rnn_to_torch,
)
from bigjax.models.rnn import RNN  # noqa: E402

pytestmark = pytest.mark.parity

B, T, D_IN, H = 3, 7, 5, 6
TORCH = {'rnn': torch.nn.RNN, 'lstm': torch.nn.LSTM, 'gru': torch.nn.GRU}


def _run_both(cell, num_layers, bidirectional, seed=0, initial_state=False):
  """torch and bigjax on the same weights and input (and the same random initial state)."""
  torch.manual_seed(seed)
  ref = TORCH[cell](D_IN, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, T, D_IN)).astype(np.float32)
  n = num_layers * (2 if bidirectional else 1)
  state0 = None
  if initial_state:  # torch's layout: h_0 (and c_0) [L*N, B, H]
    state0 = [
      rng.normal(size=(n, B, H)).astype(np.float32) for _ in range(2 if cell == 'lstm' else 1)
    ]
  with torch.no_grad():
    if state0 is None:
      out, state = ref(torch.from_numpy(x))
    else:
      torch_state0 = tuple(map(torch.from_numpy, state0))
      out, state = ref(torch.from_numpy(x), torch_state0 if cell == 'lstm' else torch_state0[0])
  state_dict = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  variables = rnn_from_torch(state_dict)
  model = RNN(cell, H, num_layers, bidirectional)
  carry = None if state0 is None else carries_from_torch(*state0)
  y, finals = model.apply(variables, jnp.asarray(x), initial_carry=carry)
  return out.numpy(), state, np.asarray(y), finals, state_dict, variables


@pytest.mark.parametrize('bidirectional', [False, True], ids=['uni', 'bi'])
@pytest.mark.parametrize('num_layers', [1, 2])
@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_matches_torch(cell, num_layers, bidirectional):
  out, state, y, finals, _, _ = _run_both(cell, num_layers, bidirectional)
  np.testing.assert_allclose(y, out, atol=1e-5, rtol=0)
  _assert_same_state(cell, finals, state)


def _assert_same_state(cell, finals, state):
  # torch's h_n / c_n are [L*N, B, H], ordered layer-major like bigjax's carries; an LSTM
  # carry is (c, h), torch's LSTM state (h_n, c_n).
  if cell == 'lstm':
    h_n, c_n = state
    np.testing.assert_allclose(np.stack([f[1] for f in finals]), h_n.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.stack([f[0] for f in finals]), c_n.numpy(), atol=1e-5)
    got_h, got_c = carries_to_torch(finals, cell)
    np.testing.assert_allclose(got_h, h_n.numpy(), atol=1e-5)
    np.testing.assert_allclose(got_c, c_n.numpy(), atol=1e-5)
  else:
    np.testing.assert_allclose(np.stack(finals), state.numpy(), atol=1e-5)
    np.testing.assert_allclose(carries_to_torch(finals, cell), state.numpy(), atol=1e-5)


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_initial_state_in_torch_layout(cell):
  out, state, y, finals, _, _ = _run_both(cell, 2, True, seed=2, initial_state=True)
  np.testing.assert_allclose(y, out, atol=1e-5, rtol=0)
  _assert_same_state(cell, finals, state)


def test_elman_matches_torch():
  out, state, y, finals, _, _ = _run_both('rnn', 2, True, seed=1)
  np.testing.assert_allclose(y, out, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.stack(finals), state.numpy(), atol=1e-5)


def test_round_trip_to_torch():
  *_, state_dict, variables = _run_both('gru', 2, True)
  assert set(variables) == {'params'}
  back = rnn_to_torch(variables)
  assert sorted(back) == sorted(state_dict)
  for k, v in state_dict.items():
    np.testing.assert_array_equal(back[k], v)


def test_rejects_a_state_dict_without_rnn_weights():
  with pytest.raises(ValueError, match='weight_ih_l0'):
    rnn_from_torch({'fc.weight': np.zeros((2, 2))})
