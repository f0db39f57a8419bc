"""Orbax checkpoints of the train state, the data iterator and a model fingerprint.

Each step's checkpoint has three items: `state` (the TrainState), `data` (the Grain
iterator state, one file per process) and `meta` (model name and parameter shapes, used to
refuse a workdir that holds another model's checkpoints before anything is written).
"""

import os

import grain
import jax
import orbax.checkpoint as ocp

from bigjax.train.state import TrainState
from bigjax.typing import PyTree


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
    self.manager = ocp.CheckpointManager(
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

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
