"""One device mesh for the run: axes ('data', 'fsdp', 'tensor'); the batch is sharded
over data x fsdp, parameters are replicated (FSDP / tensor rules come later)."""

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bigjax.typing import Batch, PyTree

AXES = ('data', 'fsdp', 'tensor')


def make_mesh(mesh: ml_collections.ConfigDict, devices=None) -> Mesh:
  """Builds the mesh; `data=-1` takes every device the other axes leave."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  fsdp, tensor = int(mesh.get('fsdp', 1)), int(mesh.get('tensor', 1))
  data = int(mesh.get('data', -1))
  if data == -1:
    data = devices.size // (fsdp * tensor)
  if data * fsdp * tensor != devices.size:
    raise ValueError(
      f'mesh data={data} x fsdp={fsdp} x tensor={tensor} does not cover the '
      f'{devices.size} devices: set --config.mesh.data=-1 or sizes whose product is '
      f'{devices.size}'
    )
  return Mesh(devices.reshape(data, fsdp, tensor), AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(('data', 'fsdp')))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_shards(mesh: Mesh) -> int:
  return mesh.shape['data'] * mesh.shape['fsdp']


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
