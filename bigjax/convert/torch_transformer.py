"""`torch.nn.Transformer` <-> the encoder and decoder stacks of `bigjax.models.transformer`.

Legend: D width (d_model), H heads, K head dim (D / H), F feed-forward width.

torch packs the query, key and value projections of `MultiheadAttention` into
`in_proj_weight` [3D, D] (rows q | k | v) and `in_proj_bias` [3D]; bigjax keeps
`query`, `key`, `value` with kernels [D, H, K] and biases [H, K], and `out` [H, K, D].
torch names its norms by position: encoder `norm1` (attention), `norm2` (MLP); decoder
`norm1` (self-attention), `norm2` (cross-attention), `norm3` (MLP); `encoder.norm` and
`decoder.norm` end each stack.

A bigjax model with the same computation: `Transformer(hidden_size=D, num_heads=H,
mlp_dim=F, pre_norm=norm_first, final_norm=True, layer_norm_eps=1e-5, activation='relu')`.
`torch.nn.Transformer` has no embeddings and no output layer, so `transformer_from_torch`
returns the variables of the two stacks (`{'params': {'encoder': ..., 'decoder': ...}}`),
or, given `into` (the variables of a whole bigjax `Transformer`, e.g. from `init`), that
tree with both stacks replaced, which is complete.
Numpy arrays in and out (call `.detach().numpy()` on torch tensors).
"""

import re
from typing import Any, Mapping

import flax
import numpy as np


class _Reader:
  """Reads tensors by name from a state dict and remembers which were used."""

  def __init__(self, state_dict: Mapping[str, Any], prefix: str):
    self.sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    self.used: set[str] = set()

  def __call__(self, name: str) -> np.ndarray:
    if name not in self.sd:
      raise ValueError(f'the torch.nn.Transformer state dict has no tensor {name!r}')
    self.used.add(name)
    return np.asarray(self.sd[name], np.float32)

  def layers(self, stack: str) -> int:
    found = {int(m.group(1)) for k in self.sd if (m := re.match(rf'{stack}\.layers\.(\d+)\.', k))}
    return max(found) + 1 if found else 0


def _attention(read: _Reader, prefix: str, num_heads: int) -> dict:
  w = read(f'{prefix}.in_proj_weight')  # [3D, D], rows q | k | v
  b = read(f'{prefix}.in_proj_bias')  # [3D]
  d = w.shape[1]
  if d % num_heads:
    raise ValueError(f'd_model {d} is not divisible by num_heads {num_heads}')
  k = d // num_heads
  params = {}
  for i, name in enumerate(('query', 'key', 'value')):
    params[name] = {
      'kernel': w[i * d : (i + 1) * d].T.reshape(d, num_heads, k),  # [D, H, K]
      'bias': b[i * d : (i + 1) * d].reshape(num_heads, k),  # [H, K]
    }
  params['out'] = {
    'kernel': read(f'{prefix}.out_proj.weight').T.reshape(num_heads, k, d),  # [H, K, D]
    'bias': read(f'{prefix}.out_proj.bias'),
  }
  return params


def _dense(read: _Reader, prefix: str) -> dict:
  return {'kernel': read(f'{prefix}.weight').T, 'bias': read(f'{prefix}.bias')}  # [in, out]


def _norm(read: _Reader, prefix: str) -> dict:
  return {'scale': read(f'{prefix}.weight'), 'bias': read(f'{prefix}.bias')}


def _mlp(read: _Reader, prefix: str) -> dict:
  return {'fc1': _dense(read, f'{prefix}.linear1'), 'fc2': _dense(read, f'{prefix}.linear2')}


def transformer_from_torch(
  state_dict: Mapping[str, Any],
  num_heads: int,
  *,
  prefix: str = '',
  into: Mapping[str, Any] | None = None,
) -> dict:
  """A `torch.nn.Transformer` state dict (numpy values) -> bigjax variables.

  Returns `{'params': {'encoder': ..., 'decoder': ...}}`; with `into` (a whole bigjax
  `Transformer` variable tree), a copy of `into` whose two stacks are replaced, after
  checking that every replaced leaf has the same shape. `prefix` selects the entries of a
  bigger state dict (e.g. 'transformer.'). Every tensor under `prefix` must be used.
  """
  read = _Reader(state_dict, prefix)
  n_enc, n_dec = read.layers('encoder'), read.layers('decoder')
  if not n_enc or not n_dec:
    raise ValueError(
      f'no torch.nn.Transformer weights (encoder.layers.0..., decoder.layers.0...) with prefix '
      f'{prefix!r} in the state dict; keys start with: {sorted(state_dict)[:5]}'
    )
  encoder, decoder = {}, {}
  for i in range(n_enc):
    p = f'encoder.layers.{i}'
    encoder[f'block_{i}'] = {
      'attn': _attention(read, f'{p}.self_attn', num_heads),
      'attn_norm': _norm(read, f'{p}.norm1'),
      'mlp': _mlp(read, p),
      'mlp_norm': _norm(read, f'{p}.norm2'),
    }
  for i in range(n_dec):
    p = f'decoder.layers.{i}'
    decoder[f'block_{i}'] = {
      'self_attn': _attention(read, f'{p}.self_attn', num_heads),
      'self_norm': _norm(read, f'{p}.norm1'),
      'cross_attn': _attention(read, f'{p}.multihead_attn', num_heads),
      'cross_norm': _norm(read, f'{p}.norm2'),
      'mlp': _mlp(read, p),
      'mlp_norm': _norm(read, f'{p}.norm3'),
    }
  if 'encoder.norm.weight' in read.sd:
    encoder['norm'] = _norm(read, 'encoder.norm')
  if 'decoder.norm.weight' in read.sd:
    decoder['norm'] = _norm(read, 'decoder.norm')
  unused = sorted(set(read.sd) - read.used)
  if unused:
    raise ValueError(f'tensors of the state dict this converter does not use: {unused[:8]}')
  stacks = {'encoder': encoder, 'decoder': decoder}
  if into is None:
    return {'params': stacks}
  return _merge(into, stacks)


def _merge(into: Mapping[str, Any], stacks: dict) -> dict:
  """`into` with params/encoder and params/decoder replaced by `stacks` (same shapes)."""
  if 'params' not in into:
    raise ValueError(f"`into` must be a variable tree {{'params': ...}}, got keys {sorted(into)}")
  params = dict(into['params'])
  for stack, tree in stacks.items():
    want = flax.traverse_util.flatten_dict(dict(params.get(stack, {})), sep='/')
    got = flax.traverse_util.flatten_dict(tree, sep='/')
    if set(want) != set(got):
      raise ValueError(
        f'the torch {stack} does not match the bigjax model: missing {sorted(set(want) - set(got))}'
        f', extra {sorted(set(got) - set(want))}; check the layer count and final_norm=True'
      )
    for path, value in got.items():
      if tuple(want[path].shape) != value.shape:
        raise ValueError(
          f'{stack}/{path}: torch gives shape {value.shape}, the bigjax model has '
          f'{tuple(want[path].shape)}; check hidden_size, num_heads and mlp_dim'
        )
    params[stack] = tree
  return {**into, 'params': params}


def transformer_to_torch(variables: Mapping[str, Any], prefix: str = '') -> dict[str, np.ndarray]:
  """The inverse: bigjax variables (their encoder and decoder) -> a torch state dict."""
  params = variables['params']
  out: dict[str, np.ndarray] = {}

  def attention(p, name):
    qkv = [np.asarray(p[n]['kernel']) for n in ('query', 'key', 'value')]  # [D, H, K] each
    d = qkv[0].shape[0]
    out[f'{name}.in_proj_weight'] = np.concatenate([w.reshape(d, -1).T for w in qkv])  # [3D, D]
    out[f'{name}.in_proj_bias'] = np.concatenate(
      [np.asarray(p[n]['bias']).reshape(-1) for n in ('query', 'key', 'value')]
    )
    out[f'{name}.out_proj.weight'] = np.asarray(p['out']['kernel']).reshape(-1, d).T  # [D, D]
    out[f'{name}.out_proj.bias'] = np.asarray(p['out']['bias'])

  def dense(p, name):
    out[f'{name}.weight'] = np.asarray(p['kernel']).T
    out[f'{name}.bias'] = np.asarray(p['bias'])

  def norm(p, name):
    out[f'{name}.weight'] = np.asarray(p['scale'])
    out[f'{name}.bias'] = np.asarray(p['bias'])

  names = {
    'encoder': {'attn': 'self_attn', 'attn_norm': 'norm1', 'mlp_norm': 'norm2'},
    'decoder': {
      'self_attn': 'self_attn',
      'self_norm': 'norm1',
      'cross_attn': 'multihead_attn',
      'cross_norm': 'norm2',
      'mlp_norm': 'norm3',
    },
  }
  for stack, table in names.items():
    for block, p in params[stack].items():
      if block == 'norm':
        norm(p, f'{prefix}{stack}.norm')
        continue
      base = f'{prefix}{stack}.layers.{int(block.removeprefix("block_"))}'
      for ours, theirs in table.items():
        (norm if ours.endswith('norm') else attention)(p[ours], f'{base}.{theirs}')
      dense(p['mlp']['fc1'], f'{base}.linear1')
      dense(p['mlp']['fc2'], f'{base}.linear2')
  return out
