"""`torch.nn.RNN` / `LSTM` / `GRU` weights <-> `bigjax.models.rnn.RNN` params.

torch stores `weight_ih_l{k}[_reverse]` [G*H, I], `weight_hh_l{k}[_reverse]` [G*H, H] and
the biases `bias_ih_l{k}`, `bias_hh_l{k}` [G*H] with the same gate order as bigjax, so the
copy is a transpose: `layer_{k}/{fwd,bwd}/ih/kernel = weight_ih.T`, `.../hh/kernel =
weight_hh.T`. Numpy arrays in and out (call `.detach().numpy()` on torch tensors).
"""

import re
from typing import Any, Mapping

import numpy as np

_KEY = re.compile(r'^(weight|bias)_(ih|hh)_l(\d+)(_reverse)?$')


def rnn_params_from_torch(state_dict: Mapping[str, Any], prefix: str = '') -> dict:
  """A torch RNN/LSTM/GRU state dict (numpy values) -> params of `RNN` (`layer_{k}/...`).

  `prefix` selects the entries of a bigger state dict (e.g. 'lstm.'). Missing biases
  (torch `bias=False`) become zeros.
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
  return params


def rnn_params_to_torch(params: Mapping[str, Any], prefix: str = '') -> dict[str, np.ndarray]:
  """The inverse: params of `RNN` -> a torch state dict of numpy arrays."""
  out = {}
  for name, layer in params.items():
    k = int(name.removeprefix('layer_'))
    for direction, p in layer.items():
      suffix = '_reverse' if direction == 'bwd' else ''
      for part in ('ih', 'hh'):
        out[f'{prefix}weight_{part}_l{k}{suffix}'] = np.asarray(p[part]['kernel']).T.copy()
        out[f'{prefix}bias_{part}_l{k}{suffix}'] = np.asarray(p[part]['bias'])
  return out
