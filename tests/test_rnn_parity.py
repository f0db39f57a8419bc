"""bigjax RNN / LSTM / GRU against torch.nn with the same weights (float32, 1e-5)."""

import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='parity tests need torch (the parity extra)')

import jax.numpy as jnp  # noqa: E402

from bigjax.convert.torch_rnn import rnn_params_from_torch, rnn_params_to_torch  # noqa: E402
from bigjax.models.rnn import RNN  # noqa: E402

pytestmark = pytest.mark.parity

B, T, D_IN, H = 3, 7, 5, 6
TORCH = {'rnn': torch.nn.RNN, 'lstm': torch.nn.LSTM, 'gru': torch.nn.GRU}


def _run_both(cell, num_layers, bidirectional, seed=0):
  torch.manual_seed(seed)
  ref = TORCH[cell](D_IN, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
  x = np.random.default_rng(seed).normal(size=(B, T, D_IN)).astype(np.float32)
  with torch.no_grad():
    out, state = ref(torch.from_numpy(x))
  state_dict = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  params = rnn_params_from_torch(state_dict)
  model = RNN(cell, H, num_layers, bidirectional)
  y, finals = model.apply({'params': params}, jnp.asarray(x))
  return out.numpy(), state, np.asarray(y), finals, state_dict, params


@pytest.mark.parametrize('bidirectional', [False, True], ids=['uni', 'bi'])
@pytest.mark.parametrize('num_layers', [1, 2])
@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_matches_torch(cell, num_layers, bidirectional):
  out, state, y, finals, _, _ = _run_both(cell, num_layers, bidirectional)
  np.testing.assert_allclose(y, out, atol=1e-5, rtol=0)
  # torch's h_n / c_n are [L*N, B, H], ordered layer-major like bigjax's carries.
  if cell == 'lstm':
    h_n, c_n = state
    np.testing.assert_allclose(np.stack([f[1] for f in finals]), h_n.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.stack([f[0] for f in finals]), c_n.numpy(), atol=1e-5)
  else:
    np.testing.assert_allclose(np.stack(finals), state.numpy(), atol=1e-5)


def test_elman_matches_torch():
  out, state, y, finals, _, _ = _run_both('rnn', 2, True, seed=1)
  np.testing.assert_allclose(y, out, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.stack(finals), state.numpy(), atol=1e-5)


def test_round_trip_to_torch():
  *_, state_dict, params = _run_both('gru', 2, True)
  back = rnn_params_to_torch(params)
  assert sorted(back) == sorted(state_dict)
  for k, v in state_dict.items():
    np.testing.assert_array_equal(back[k], v)


def test_rejects_a_state_dict_without_rnn_weights():
  with pytest.raises(ValueError, match='weight_ih_l0'):
    rnn_params_from_torch({'fc.weight': np.zeros((2, 2))})
