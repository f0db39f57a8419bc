"""One device mesh for the run: axes ('data', 'fsdp', 'expert', 'tensor'); the batch is
sharded over data x fsdp x expert."""

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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
