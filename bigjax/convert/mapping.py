"""Fills a bigjax variable tree from named source tensors, with full accounting.

A converter declares, for every leaf of the target tree (`params/block_0/attn/query/kernel`),
which source tensor fills it and how its layout changes. `WeightMap.build` then checks
that every target leaf was filled exactly once, with the right shape, and that every
source tensor was used or deliberately skipped, so a renamed or missing tensor cannot
silently leave a randomly initialised weight behind.

Layouts: torch Linear [out, in] -> Dense [in, out]; Conv2d [O, I, kh, kw] -> Conv
[kh, kw, I, O]; a fused-heads Linear [H*K, D] -> DenseGeneral [D, H, K]; an output
projection [D, H*K] -> [H, K, D].
"""

import re
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.typing import PyTree

Transform = Callable[[np.ndarray], np.ndarray]


def identity(w: np.ndarray) -> np.ndarray:
  return w


def linear(w: np.ndarray) -> np.ndarray:
  """torch Linear weight [out, in] -> Dense kernel [in, out]."""
  return w.T


def conv(w: np.ndarray) -> np.ndarray:
  """torch Conv2d weight [O, I, kh, kw] -> Flax Conv kernel [kh, kw, I, O]."""
  return w.transpose(2, 3, 1, 0)


def heads_in(num_heads: int) -> Transform:
  """q/k/v Linear weight [H*K, D] -> DenseGeneral kernel [D, H, K]; bias [H*K] -> [H, K]."""

  def f(w: np.ndarray) -> np.ndarray:
    if w.ndim == 1:
      return w.reshape(num_heads, -1)  # [H, K]
    return w.T.reshape(w.shape[1], num_heads, -1)  # [D, H, K]

  return f


def heads_out(num_heads: int) -> Transform:
  """Output Linear weight [D, H*K] -> DenseGeneral kernel [H, K, D]."""

  def f(w: np.ndarray) -> np.ndarray:
    return w.T.reshape(num_heads, -1, w.shape[0])  # [H, K, D]

  return f


class WeightMap:
  """Maps source tensors onto the leaves of an abstract variable tree.

  source: name -> array (from safetensors). target: the tree of `jax.eval_shape(model.init,
  ...)` (leaves with `.shape`); only the collections present in it are filled.
  """

  def __init__(self, source: dict[str, np.ndarray], target: PyTree, what: str):
    self.source = source
    self.what = what  # e.g. 'ViTForImageClassification checkpoint', for error messages
    flat = flax.traverse_util.flatten_dict(target, sep='/')
    self.shapes: dict[str, tuple[int, ...]] = {k: tuple(v.shape) for k, v in flat.items()}
    self.filled: dict[str, np.ndarray] = {}
    self.used: set[str] = set()

  def set(self, path: str, name: str, transform: Transform = identity) -> None:
    """Fills target leaf `path` ('params/head/kernel') from source tensor `name`."""
    if path not in self.shapes:
      raise AssertionError(f'converter bug: the model has no variable {path}')
    if path in self.filled:
      raise AssertionError(f'converter bug: {path} is filled twice')
    if name not in self.source:
      raise ValueError(
        f'the {self.what} has no tensor {name!r} (needed for {path}): the weights are '
        'incomplete or do not match config.json; re-save them with save_pretrained'
      )
    value = np.asarray(transform(np.asarray(self.source[name])))
    if value.shape != self.shapes[path]:
      raise ValueError(
        f'tensor {name!r} has shape {tuple(self.source[name].shape)} '
        f'(-> {value.shape}), but the model built from config.json expects '
        f'{self.shapes[path]} at {path}: config.json does not match the weights'
      )
    if not np.issubdtype(value.dtype, np.floating):
      raise ValueError(f'tensor {name!r} has dtype {value.dtype}, expected a float tensor')
    self.filled[path] = value
    self.used.add(name)

  def skip(self, pattern: str) -> None:
    """Marks every source tensor whose name fully matches regex `pattern` as deliberately unused."""
    self.used.update(n for n in self.source if re.fullmatch(pattern, n))

  def build(self) -> dict[str, Any]:
    """Checks the accounting and returns the float32 variable tree."""
    missing = sorted(set(self.shapes) - set(self.filled))
    if missing:
      raise AssertionError(f'converter bug: variables left unfilled: {", ".join(missing)}')
    unused = sorted(set(self.source) - self.used)
    if unused:
      shown = ', '.join(unused[:8]) + (f', ... ({len(unused)} in all)' if len(unused) > 8 else '')
      raise ValueError(
        f'the {self.what} has tensors this converter does not use: {shown}; '
        'config.json does not match the weights, or the checkpoint is of another architecture'
      )
    flat = {k: jnp.asarray(v, jnp.float32) for k, v in self.filled.items()}
    return flax.traverse_util.unflatten_dict(flat, sep='/')


def abstract_variables(model: nn.Module, *inputs: jax.ShapeDtypeStruct) -> PyTree:
  """The variable tree `model.init` would build, as shapes only (nothing is computed)."""
  variables = jax.eval_shape(lambda *xs: model.init(jax.random.key(0), *xs, train=False), *inputs)
  return {k: v for k, v in variables.items() if k != 'intermediates'}


def hf_num_labels(config: dict) -> int:
  """Classes of a Hugging Face config (`num_labels` is not always saved; `id2label` is)."""
  if 'num_labels' in config:
    return int(config['num_labels'])
  return len(config.get('id2label') or {0: 'LABEL_0', 1: 'LABEL_1'})  # HF's default is 2
