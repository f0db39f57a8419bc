"""`torch.nn.RNN` / `LSTM` / `GRU` <-> `bigjax.models.rnn.RNN`: variables and carries.

Legend: L layers, N directions (1, or 2 when bidirectional), B batch, I input width,
H hidden width, G gates per cell (1 Elman, 4 LSTM, 3 GRU).

Weights. torch stores `weight_ih_l{k}[_reverse]` [G*H, I], `weight_hh_l{k}[_reverse]`
[G*H, H] and the biases `bias_ih_l{k}`, `bias_hh_l{k}` [G*H] with bigjax's gate order, so
the copy is a transpose: `params/layer_{k}/{fwd,bwd}/ih/kernel = weight_ih.T`,
`.../hh/kernel = weight_hh.T` (`_reverse` is `bwd`). `rnn_from_torch` returns the complete
variable tree of `RNN` (`{'params': ...}`); an `RNN` inside a bigger model sits under its
name (the language model's is `rnn`: `variables['params']['rnn'] = converted['params']`).

Carries (the recurrent state). bigjax's `RNN` takes `initial_carry` and returns its final
carries as one tuple of L*N entries, ordered layer-major as torch orders its state:
(layer 0 fwd, layer 0 bwd, layer 1 fwd, ...). An entry is h [B, H] for Elman and GRU,
and the pair (c, h) -- cell state first -- for an LSTM; carries are float32.
torch's state is `h_n` [L*N, B, H], plus `c_n` [L*N, B, H] for an LSTM, returned as the
pair (h_n, c_n) -- hidden state first. So for an LSTM, entry i is (c_n[i], h_n[i]);
`carries_from_torch` and `carries_to_torch` do this conversion.

Numpy arrays in and out (call `.detach().numpy()` on torch tensors).
"""

import re
from typing import Any, Mapping, Sequence

import numpy as np

_KEY = re.compile(r'^(weight|bias)_(ih|hh)_l(\d+)(_reverse)?$')


def rnn_from_torch(state_dict: Mapping[str, Any], prefix: str = '') -> dict:
  """A torch RNN/LSTM/GRU state dict (numpy values) -> the variables of `RNN`.

  Returns `{'params': {'layer_{k}': {'fwd': ..., 'bwd': ...}}}`. `prefix` selects the
  entries of a bigger state dict (e.g. 'lstm.'). Missing biases (torch `bias=False`)
  become zeros.
  """
  found: dict[tuple[int, str], dict[str, np.ndarray]] = {}
  for key, value in state_dict.items():
    if not key.startswith(prefix):
      continue
    match = _KEY.match(key[len(prefix) :])
    if match is None:
      continue
    kind, part, layer, rev = match.groups()
    found.setdefault((int(layer), 'bwd' if rev else 'fwd'), {})[f'{kind}_{part}'] = np.asarray(
      value, np.float32
    )
  if not found:
    raise ValueError(
      f'no torch RNN weights (weight_ih_l0, ...) with prefix {prefix!r} in the state dict; '
      f'keys start with: {sorted(state_dict)[:5]}'
    )
  params: dict[str, dict] = {}
  for (layer, direction), w in sorted(found.items()):
    if 'weight_ih' not in w or 'weight_hh' not in w:
      raise ValueError(f'layer {layer} {direction} lacks weight_ih or weight_hh')
    width = w['weight_ih'].shape[0]
    zeros = np.zeros((width,), np.float32)
    params.setdefault(f'layer_{layer}', {})[direction] = {
      'ih': {'kernel': w['weight_ih'].T.copy(), 'bias': w.get('bias_ih', zeros)},
      'hh': {'kernel': w['weight_hh'].T.copy(), 'bias': w.get('bias_hh', zeros)},
    }
  return {'params': params}


def rnn_to_torch(variables: Mapping[str, Any], prefix: str = '') -> dict[str, np.ndarray]:
  """The inverse: the variables of `RNN` (`{'params': ...}`) -> a torch state dict."""
  if 'params' not in variables:
    raise ValueError(
      f"expected a variable tree {{'params': ...}} of RNN, got keys {sorted(variables)}"
    )
  out = {}
  for name, layer in variables['params'].items():
    k = int(name.removeprefix('layer_'))
    for direction, p in layer.items():
      suffix = '_reverse' if direction == 'bwd' else ''
      for part in ('ih', 'hh'):
        out[f'{prefix}weight_{part}_l{k}{suffix}'] = np.asarray(p[part]['kernel']).T.copy()
        out[f'{prefix}bias_{part}_l{k}{suffix}'] = np.asarray(p[part]['bias'])
  return out


def carries_from_torch(h_n: Any, c_n: Any | None = None) -> tuple:
  """torch's state -> bigjax carries.

  h_n [L*N, B, H] (and c_n [L*N, B, H] for an LSTM) -> L*N carries: h [B, H] each, or
  (c, h) for an LSTM; pass the result as `RNN(...)(x, initial_carry=...)`.
  """
  h_n = np.asarray(h_n, np.float32)
  if h_n.ndim != 3:
    raise ValueError(f'h_n must be [L*N, B, H], got shape {h_n.shape}')
  if c_n is None:
    return tuple(h_n)
  c_n = np.asarray(c_n, np.float32)
  if c_n.shape != h_n.shape:
    raise ValueError(f'c_n {c_n.shape} and h_n {h_n.shape} must have the same shape')
  return tuple(zip(c_n, h_n))


def carries_to_torch(carries: Sequence[Any], cell: str) -> Any:
  """bigjax carries -> torch's state: h_n [L*N, B, H], or the pair (h_n, c_n) for 'lstm'."""
  if cell == 'lstm':
    return (
      np.stack([np.asarray(h) for _, h in carries]),
      np.stack([np.asarray(c) for c, _ in carries]),
    )
  return np.stack([np.asarray(h) for h in carries])
