"""One table per architecture, read in both directions: import and export of weights.

A converter declares a `Table` of rules once; each rule says which source tensor (a
Hugging Face / torch name, `vit.encoder.layer.0.attention.attention.query.weight`) holds
which bigjax variable (`params/block_0/attn/query/kernel`) and how the layout changes
(`Layout`, a reversible pair of functions). `Table.import_variables` fills a bigjax
variable tree from the source tensors and `Table.export_tensors` writes the source
tensors back from a variable tree, both with full accounting: every bigjax variable is
covered by exactly one rule, and on import every source tensor is used or deliberately
skipped, so a renamed or missing tensor cannot silently leave a randomly initialised
weight behind, nor a forgotten variable silently stay out of an export.

Layouts (source <-> bigjax): torch Linear [out, in] <-> Dense [in, out]; Conv2d
[O, I, kh, kw] <-> Conv [kh, kw, I, O]; a fused-heads Linear [H*K, D] <-> DenseGeneral
[D, H, K] (bias [H*K] <-> [H, K]); an output projection [D, H*K] <-> [H, K, D]; GPT-2's
Conv1D [in, out] kept as is or split into heads; vocabulary rows padded with zeros to the
model's padded vocabulary (`pad_rows`). Layouts compose with `chain`.

Some sources fuse several bigjax variables into one tensor (GPT-2's `c_attn`: q, k and v
side by side) or split one variable into many (Mixtral's experts, one tensor per expert).
`Table.split` and `Table.stack` declare those groupings; the rules then name the parts
(`...c_attn.weight[q]`) or the group (`...experts.w1`), and the accounting stays exact.
Legend: D width, H heads, K head dim, O/I output/input channels, kh/kw kernel size,
E experts, V vocabulary.
"""

import dataclasses
import re
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.typing import PyTree


@dataclasses.dataclass(frozen=True)
class Layout:
  """A reversible change of layout between a source (torch) tensor and a bigjax variable."""

  name: str
  to_flax: Callable[[np.ndarray], np.ndarray]
  to_torch: Callable[[np.ndarray], np.ndarray]


IDENTITY = Layout('identity', lambda w: w, lambda w: w)
# torch Linear weight [out, in] <-> Dense kernel [in, out].
LINEAR = Layout('linear', lambda w: w.T, lambda w: w.T)
# torch Conv2d weight [O, I, kh, kw] <-> Flax Conv kernel [kh, kw, I, O].
CONV = Layout('conv', lambda w: w.transpose(2, 3, 1, 0), lambda w: w.transpose(3, 2, 0, 1))


def heads_in(num_heads: int) -> Layout:
  """q/k/v Linear weight [H*K, D] <-> DenseGeneral kernel [D, H, K]; bias [H*K] <-> [H, K]."""

  def to_flax(w: np.ndarray) -> np.ndarray:
    if w.ndim == 1:
      return w.reshape(num_heads, -1)  # [H, K]
    return w.T.reshape(w.shape[1], num_heads, -1)  # [D, H, K]

  def to_torch(w: np.ndarray) -> np.ndarray:
    if w.ndim == 2:
      return w.reshape(-1)  # [H*K]
    return w.reshape(w.shape[0], -1).T  # [H*K, D]

  return Layout(f'heads_in({num_heads})', to_flax, to_torch)


def heads_out(num_heads: int) -> Layout:
  """Output Linear weight [D, H*K] <-> DenseGeneral kernel [H, K, D]."""

  def to_flax(w: np.ndarray) -> np.ndarray:
    return w.T.reshape(num_heads, -1, w.shape[0])  # [H, K, D]

  def to_torch(w: np.ndarray) -> np.ndarray:
    return w.reshape(-1, w.shape[-1]).T  # [D, H*K]

  return Layout(f'heads_out({num_heads})', to_flax, to_torch)


def conv1d_heads_in(num_heads: int) -> Layout:
  """GPT-2 Conv1D q/k/v weight [D, H*K] <-> DenseGeneral kernel [D, H, K]; bias [H*K] <-> [H, K]."""

  def to_flax(w: np.ndarray) -> np.ndarray:
    if w.ndim == 1:
      return w.reshape(num_heads, -1)  # [H, K]
    return w.reshape(w.shape[0], num_heads, -1)  # [D, H, K]

  def to_torch(w: np.ndarray) -> np.ndarray:
    return w.reshape(-1) if w.ndim == 2 else w.reshape(w.shape[0], -1)

  return Layout(f'conv1d_heads_in({num_heads})', to_flax, to_torch)


def conv1d_heads_out(num_heads: int) -> Layout:
  """GPT-2 Conv1D output weight [H*K, D] <-> DenseGeneral kernel [H, K, D]."""
  return Layout(
    f'conv1d_heads_out({num_heads})',
    lambda w: w.reshape(num_heads, -1, w.shape[-1]),  # [H, K, D]
    lambda w: w.reshape(-1, w.shape[-1]),  # [H*K, D]
  )


# Stacked per-expert Linear weights [E, out, in] <-> kernels [E, in, out].
EXPERTS = Layout('experts', lambda w: w.transpose(0, 2, 1), lambda w: w.transpose(0, 2, 1))


def pad_rows(rows: int, padded: int) -> Layout:
  """A [V, ...] table (embedding, output layer) <-> [padded, ...]: import appends zero rows
  up to the model's padded vocabulary, export keeps the first `rows` (the real vocabulary)."""

  def to_flax(w: np.ndarray) -> np.ndarray:
    if w.shape[0] != rows:
      return w  # a wrong size is reported by the shape check, against the model's
    return np.concatenate([w, np.zeros((padded - rows, *w.shape[1:]), w.dtype)])

  return Layout(f'pad_rows({rows}, {padded})', to_flax, lambda w: w[:rows])


def chain(*layouts: Layout) -> Layout:
  """The layouts applied one after another on import (in reverse order on export)."""

  def to_flax(w: np.ndarray) -> np.ndarray:
    for layout in layouts:
      w = layout.to_flax(w)
    return w

  def to_torch(w: np.ndarray) -> np.ndarray:
    for layout in reversed(layouts):
      w = layout.to_torch(w)
    return w

  return Layout(' then '.join(x.name for x in layouts), to_flax, to_torch)


# (bigjax path 'params/block_0/attn/query/kernel', source tensor name, layout)
Rule = tuple[str, str, Layout]


def _flatten(tree: PyTree) -> dict[str, Any]:
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep='/')


@dataclasses.dataclass
class Table:
  """The name and layout mapping of one architecture, used by import and export alike.

  rules: one per bigjax variable (every collection but 'intermediates': `params`,
    `batch_stats`, ...). skip: regexes (full match) of source tensors deliberately unused
    on import (a pooler no bigjax head reads, training bookkeeping); export does not write them.

  splits: source tensors that hold several parts side by side (`split`); stacks: groups of
    source tensors read as one stacked tensor (`stack`).
  """

  rules: list[Rule] = dataclasses.field(default_factory=list)
  skip: list[str] = dataclasses.field(default_factory=list)
  splits: list[tuple[str, tuple[str, ...], int]] = dataclasses.field(default_factory=list)
  stacks: list[tuple[str, tuple[str, ...]]] = dataclasses.field(default_factory=list)

  def add(self, path: str, name: str, layout: Layout = IDENTITY) -> None:
    """bigjax variable `path` ('params/head/kernel') <-> source tensor `name`."""
    self.rules.append((path, name, layout))

  def dense(self, path: str, name: str, kernel: Layout = LINEAR, bias: Layout = IDENTITY) -> None:
    """`path`/kernel <-> `name`.weight, `path`/bias <-> `name`.bias."""
    self.add(f'{path}/kernel', f'{name}.weight', kernel)
    self.add(f'{path}/bias', f'{name}.bias', bias)

  def norm(self, path: str, name: str) -> None:
    """`path`/scale <-> `name`.weight, `path`/bias <-> `name`.bias (LayerNorm, BatchNorm)."""
    self.add(f'{path}/scale', f'{name}.weight')
    self.add(f'{path}/bias', f'{name}.bias')

  def split(self, name: str, parts: list[str], axis: int) -> list[str]:
    """Source tensor `name` holds `parts` (equal sizes) concatenated along `axis`: the rules
    name the parts, `name[part]` (returned), and import splits, export concatenates."""
    names = [f'{name}[{p}]' for p in parts]
    self.splits.append((name, tuple(names), axis))
    return names

  def stack(self, name: str, parts: list[str]) -> str:
    """The source tensors `parts` (equal shapes) are read as one tensor `name` stacked on a
    new leading axis (one tensor per expert -> [E, ...]); the rules name `name`."""
    self.stacks.append((name, tuple(parts)))
    return name

  def _group(self, source: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """The source tensors with the splits split and the stacks stacked (import)."""
    source = dict(source)
    for name, parts, axis in self.splits:
      if name in source:
        value = np.asarray(source.pop(name))
        if value.shape[axis] % len(parts):
          raise ValueError(
            f'tensor {name!r} of the {what} has shape {value.shape}, which does not split into '
            f'{len(parts)} equal parts on axis {axis}: config.json does not match the weights'
          )
        source.update(zip(parts, np.split(value, len(parts), axis=axis)))
    for name, parts in self.stacks:
      present = [p for p in parts if p in source]
      if not present:
        continue
      if len(present) < len(parts):
        missing = next(p for p in parts if p not in source)
        raise ValueError(
          f'the {what} has no tensor {missing!r}: the weights are incomplete or do not match '
          'config.json; re-save them with save_pretrained'
        )
      shapes = {tuple(source[p].shape) for p in parts}
      if len(shapes) > 1:
        raise ValueError(f'the tensors {parts[0]!r}, ... of the {what} differ in shape: {shapes}')
      source[name] = np.stack([np.asarray(source.pop(p)) for p in parts])
    return source

  def _ungroup(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reverse of `_group` (export)."""
    for name, parts in self.stacks:
      value = tensors.pop(name)
      tensors.update({p: np.ascontiguousarray(v) for p, v in zip(parts, value)})
    for name, parts, axis in self.splits:
      value = np.concatenate([tensors.pop(p) for p in parts], axis=axis)
      tensors[name] = np.ascontiguousarray(value)
    return tensors

  def _check_rules(self, leaves: dict[str, Any]) -> None:
    """Converter invariants: the rules are one-to-one and cover exactly `leaves`."""
    paths, names = set(), set()
    for path, name, _ in self.rules:
      if path in paths:
        raise AssertionError(f'converter bug: {path} has two rules')
      if name in names:
        raise AssertionError(f'converter bug: source tensor {name} has two rules')
      if path not in leaves:
        raise AssertionError(f'converter bug: the model has no variable {path}')
      paths.add(path)
      names.add(name)
    missing = sorted(set(leaves) - paths)
    if missing:
      raise AssertionError(f'converter bug: variables with no rule: {", ".join(missing)}')

  def import_variables(
    self, source: dict[str, np.ndarray], abstract: PyTree, what: str
  ) -> dict[str, Any]:
    """Fills the tree shaped like `abstract` (e.g. `abstract_variables(model, ...)`) from
    `source` (name -> array, from safetensors); returns it float32.

    `what` names the checkpoint in error messages ('ViTForImageClassification checkpoint').
    """
    shapes = {k: tuple(v.shape) for k, v in _flatten(abstract).items()}
    self._check_rules(shapes)
    source = self._group(source, what)
    filled: dict[str, np.ndarray] = {}
    for path, name, layout in self.rules:
      if name not in source:
        raise ValueError(
          f'the {what} has no tensor {name!r} (needed for {path}): the weights are '
          'incomplete or do not match config.json; re-save them with save_pretrained'
        )
      value = np.asarray(layout.to_flax(np.asarray(source[name])))
      if value.shape != shapes[path]:
        raise ValueError(
          f'tensor {name!r} has shape {tuple(source[name].shape)} '
          f'(-> {value.shape}), but the model built from config.json expects '
          f'{shapes[path]} at {path}: config.json does not match the weights'
        )
      if not np.issubdtype(value.dtype, np.floating):
        raise ValueError(f'tensor {name!r} has dtype {value.dtype}, expected a float tensor')
      filled[path] = value
    used = {name for _, name, _ in self.rules}
    unused = sorted(
      n for n in source if n not in used and not any(re.fullmatch(p, n) for p in self.skip)
    )
    if unused:
      shown = ', '.join(unused[:8]) + (f', ... ({len(unused)} in all)' if len(unused) > 8 else '')
      raise ValueError(
        f'the {what} has tensors this converter does not use: {shown}; '
        'config.json does not match the weights, or the checkpoint is of another architecture'
      )
    flat = {k: jnp.asarray(v, jnp.float32) for k, v in filled.items()}
    return flax.traverse_util.unflatten_dict(flat, sep='/')

  def export_tensors(
    self, variables: PyTree, abstract: PyTree | None = None
  ) -> dict[str, np.ndarray]:
    """The source tensors (name -> contiguous float32 numpy array) of `variables`.

    Every variable (every collection but 'intermediates') must have exactly one rule.
    Given `abstract` (the model's `abstract_variables`), `variables` must have exactly its
    leaves and shapes, so variables of another model are a ValueError naming the variable.
    """
    leaves = _flatten({k: v for k, v in variables.items() if k != 'intermediates'})
    if abstract is not None:
      shapes = {k: tuple(v.shape) for k, v in _flatten(abstract).items()}
      for path in sorted(set(shapes) | set(leaves)):
        got = tuple(np.shape(leaves[path])) if path in leaves else None
        if got != shapes.get(path):
          want = f'shape {shapes[path]}' if path in shapes else 'no such variable'
          have = f'have shape {got}' if got is not None else 'lack it'
          raise ValueError(
            f'the variables do not fit the model at {path} (the model has {want}, the '
            f'variables {have}): pass the complete variables of this model'
          )
    self._check_rules(leaves)
    tensors: dict[str, np.ndarray] = {}
    for path, name, layout in self.rules:
      value = np.asarray(jax.device_get(leaves[path])).astype(np.float32)
      # np.array, not np.ascontiguousarray: that makes a scalar (CLIP's logit_scale) [1].
      out = np.array(layout.to_torch(value), dtype=np.float32, order='C')
      if layout.to_flax(out).shape != value.shape:
        raise AssertionError(f'converter bug: layout {layout.name} of {path} does not invert')
      tensors[name] = out
    return self._ungroup(tensors)


def abstract_variables(model: nn.Module, *inputs: jax.ShapeDtypeStruct) -> PyTree:
  """The variable tree `model.init` would build, as shapes only (nothing is computed)."""
  variables = jax.eval_shape(lambda *xs: model.init(jax.random.key(0), *xs, train=False), *inputs)
  return {k: v for k, v in variables.items() if k != 'intermediates'}


def hf_num_labels(config: dict) -> int:
  """Classes of a Hugging Face config (`num_labels` is not always saved; `id2label` is)."""
  if 'num_labels' in config:
    return int(config['num_labels'])
  return len(config.get('id2label') or {0: 'LABEL_0', 1: 'LABEL_1'})  # HF's default is 2
