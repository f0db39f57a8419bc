"""Orbax checkpoints of the train state, the data iterator and a model fingerprint.

Each step's checkpoint has three items: `state` (the TrainState), `data` (the Grain
iterator state, one file per process) and `meta` (model name and parameter shapes, used to
refuse a workdir that holds another model's checkpoints before anything is written).
"""

import contextlib
import logging
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from bigjax.train.state import TrainState
from bigjax.typing import PyTree


@contextlib.contextmanager
def _quiet():
  """Silences Orbax's warnings that a read-only manager does not save (it is meant not to)."""
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def fingerprint(model_name: str, params: PyTree) -> dict:
  shapes = {
    jax.tree_util.keystr(path): list(leaf.shape)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
  }
  return {'model': model_name, 'param_shapes': shapes}


class Checkpointer:
  """Async, keep-N checkpoints under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 3, *, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    with _quiet() if read_only else contextlib.nullcontext():
      self.manager = self._manager(keep, read_only)

  def _manager(self, keep: int, read_only: bool) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        enable_async_checkpointing=True,
        read_only=read_only,
      ),
      item_handlers={
        'state': ocp.StandardCheckpointHandler(),
        'data': grain.checkpoint.CheckpointHandler(),
        'meta': ocp.JsonCheckpointHandler(),
      },
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def check_compatible(self, step: int, expected: dict) -> None:
    """Raises ValueError if the checkpoint at `step` is of a different model."""
    found = self.meta(step)
    if found.get('model') != expected['model']:
      raise ValueError(
        f'{self.directory} holds checkpoints of model {found.get("model")!r} (step {step}), '
        f'not {expected["model"]!r}: use another --workdir (nothing was changed)'
      )
    if found.get('param_shapes') != expected['param_shapes']:
      diff = sorted(
        k
        for k in set(found['param_shapes']) | set(expected['param_shapes'])
        if found['param_shapes'].get(k) != expected['param_shapes'].get(k)
      )
      raise ValueError(
        f'{self.directory} holds a {expected["model"]!r} checkpoint with other parameter '
        f'shapes ({", ".join(diff[:3])}...): use another --workdir or the config that '
        f'wrote it (nothing was changed)'
      )

  def save(self, step: int, state: TrainState, data_iter, meta: dict) -> None:
    items = {'state': ocp.args.StandardSave(state), 'meta': ocp.args.JsonSave(meta)}
    if data_iter is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: TrainState, data_iter=None) -> TrainState:
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iter)
    return self.manager.restore(step, args=ocp.args.Composite(**items))['state']

  def state_shapes(self, step: int) -> dict[str, dict[tuple, tuple[int, ...]]]:
    """{'params': {path: shape}, 'model_state': {path: shape}} of the state saved at `step`,
    from the checkpoint's metadata (no array is read); paths are tuples of keys."""
    tree = self.manager.item_metadata(step)['state']
    tree = getattr(tree, 'tree', tree)
    return {
      part: {
        tuple(str(getattr(k, 'key', k)) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree.get(part, {}))
      }
      for part in ('params', 'model_state')
    }

  def restore_subset(self, step: int, target: dict) -> dict:
    """Reads only the leaves named by `target` (a nested dict like the saved TrainState's,
    e.g. {'params': {...}}, leaves jax.ShapeDtypeStruct) as numpy arrays: no optimiser
    state, no data iterator."""
    with _quiet():
      manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
        item_handlers={'state': ocp.PyTreeCheckpointHandler()},
      )
    restore_args = jax.tree.map(
      lambda x: ocp.RestoreArgs(restore_type=np.ndarray, dtype=x.dtype), target
    )
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    try:
      return manager.restore(step, args=ocp.args.Composite(state=args))['state']
    finally:
      manager.close()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
