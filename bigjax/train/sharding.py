"""One device mesh for the run: axes ('data', 'fsdp', 'expert', 'tensor'); the batch is
sharded over data x fsdp x expert.

The train state's shardings come from the logical axis names of the parameters and the
rules preset `config.mesh.rules` (`bigjax.layers.partitioning`): `state_shardings` gives
the parameters their rule shardings, every optimiser-state leaf the sharding of the
parameter it mirrors, and the step, `batch_stats` and everything else a replicated one.
`under_rules(fn, mesh, table)` is what the steps are traced with, so that the activation
constraints of the models (`partitioning.constrain`) apply.
"""

import contextlib
import functools

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bigjax.layers import partitioning
from bigjax.typing import Batch, PyTree

AXES = ('data', 'fsdp', 'expert', 'tensor')
BATCH_AXES = ('data', 'fsdp', 'expert')


def make_mesh(mesh: ml_collections.ConfigDict, devices=None) -> Mesh:
  """Builds the mesh; `data=-1` takes every device the other axes leave."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  sizes = {axis: int(mesh.get(axis, 1)) for axis in AXES[1:]}
  others = int(np.prod(list(sizes.values())))
  data = int(mesh.get('data', -1))
  if min(sizes.values()) < 1 or data == 0 or data < -1:
    raise ValueError(
      f'mesh sizes must be positive (data may be -1): got data={data}, '
      + ', '.join(f'{k}={v}' for k, v in sizes.items())
    )
  if data == -1:
    data = devices.size // others
  if data * others != devices.size:
    shape = ' x '.join(f'{k}={v}' for k, v in {'data': data, **sizes}.items())
    raise ValueError(
      f'mesh {shape} does not cover the {devices.size} devices: set --config.mesh.data=-1 '
      f'or sizes whose product is {devices.size}'
    )
  return Mesh(devices.reshape(data, *sizes.values()), AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_shards(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = 'train.batch_size') -> None:
  shards = batch_shards(mesh) * 1
  if batch_size % shards or batch_size % jax.process_count():
    raise ValueError(
      f'{what}={batch_size} does not divide over {shards} devices: use a multiple of '
      f'{shards}, e.g. --config.{what}={max(shards, batch_size // shards * shards)}'
    )


def global_batch(local: Batch, mesh: Mesh) -> PyTree:
  """Host-local numpy batch -> global jax.Arrays sharded along the batch axis."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local
  )


def _keys(path) -> tuple[str, ...]:
  """The dict keys of a tree path (optax states add attributes and indices around them)."""
  return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def param_shardings(params: PyTree, mesh: Mesh, table: partitioning.Rules) -> PyTree:
  """NamedShardings of `params` (arrays or ShapeDtypeStructs) under the rules `table`."""
  axes = partitioning.logical_axes(params, strict=False)
  names = jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, tuple))
  leaves, treedef = jax.tree.flatten(params)
  return treedef.unflatten(
    [
      NamedSharding(mesh, partitioning.spec_of(n, x.shape, table, mesh.shape))
      for n, x in zip(names, leaves, strict=True)
    ]
  )


def state_shardings(state, mesh: Mesh, table: partitioning.Rules):
  """Shardings of a TrainState (of arrays or ShapeDtypeStructs), as a tree like it: params
  by the rules, optimiser-state leaves as the parameter they mirror (the longest parameter
  path that ends their dict keys, same shape: Adam's moments, a masked or multi-transform
  inner state, MultiSteps' accumulated gradients), everything else replicated."""
  repl = replicated(mesh)
  params = param_shardings(state.params, mesh, table)
  by_path = {
    _keys(path): (x.shape, sh)
    for (path, x), sh in zip(
      jax.tree_util.tree_leaves_with_path(state.params), jax.tree.leaves(params)
    )
  }

  def mirror(path, x):
    keys = _keys(path)
    for start in range(len(keys)):
      found = by_path.get(keys[start:])
      if found is not None and found[0] == tuple(x.shape):
        return found[1]
    return repl

  return state.replace(
    step=repl,
    params=params,
    opt_state=jax.tree_util.tree_map_with_path(mirror, state.opt_state),
    model_state=jax.tree.map(lambda _: repl, state.model_state),
  )


def under_rules(fn, mesh: Mesh, table: partitioning.Rules):
  """`fn` traced with the mesh and the logical axis rules in context, so that the models'
  activation constraints (`partitioning.constrain`) apply inside a jitted `fn`."""

  @functools.wraps(fn)
  def traced(*args, **kwargs):
    with contextlib.ExitStack() as stack:
      stack.enter_context(jax.sharding.use_abstract_mesh(mesh.abstract_mesh))
      stack.enter_context(nn.logical_axis_rules(table))
      return fn(*args, **kwargs)

  return traced
