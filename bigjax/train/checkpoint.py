"""Orbax checkpoints of the train state, the data iterator and a model fingerprint.

Each step's checkpoint has three items: `state` (the TrainState), `data` (the Grain
iterator state, one file per process) and `meta` (model name and parameter shapes, used to
refuse a workdir that holds another model's checkpoints before anything is written).

Integrity: once a step's save has committed, process 0 writes `<step>/checksums.json` (the
size and CRC-32 of every file in it). Before a resume, `readable_step` walks the steps from
the newest, skips any whose files are missing, truncated or changed (or whose metadata
cannot be read), moves it out of the way to `<workdir>/checkpoints.damaged/` (never
deleting or overwriting it) and says so; a step whose checksums were never written (a run
killed between commit and checksum) is tried as it is, and a failed restore falls back the
same way.
"""

import contextlib
import json
import logging
import os
import shutil
import zlib

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


class CheckpointError(OSError):
  """A checkpoint could not be written (a full disk, a read-only folder, ...); the message
  names the step and the newest committed one, which is intact."""


CHECKSUMS = 'checksums.json'
DAMAGED = 'checkpoints.damaged'


def _crc32(path: str) -> int:
  crc = 0
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 22):
      crc = zlib.crc32(chunk, crc)
  return crc


def file_checksums(folder: str) -> dict[str, list[int]]:
  """{relative path: [size, crc32]} of every file under `folder` but the checksum file."""
  sums = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, folder)
      if name not in (CHECKSUMS, f'.{CHECKSUMS}.tmp'):
        sums[rel] = [os.path.getsize(path), _crc32(path)]
  return dict(sorted(sums.items()))


def damage(folder: str) -> str | None:
  """Why the checkpoint folder differs from its checksums at commit, or None if it does not
  (or if it has no checksums to compare with)."""
  path = os.path.join(folder, CHECKSUMS)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      expected = json.load(f)
  except (OSError, ValueError):
    return f'its {CHECKSUMS} is unreadable'
  for rel, (size, crc) in expected.items():
    file = os.path.join(folder, rel)
    if not os.path.isfile(file):
      return f'{rel} is missing'
    found = os.path.getsize(file)
    if found != size:
      return f'{rel} has {found} bytes, {size} at commit (truncated or overwritten)'
    if _crc32(file) != crc:
      return f'{rel} differs from its checksum at commit (corrupted)'
  return None


class Checkpointer:
  """Async, keep-N checkpoints under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 3, *, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.read_only = read_only
    self._unsealed: list[int] = []  # saved steps whose checksums are not written yet
    self._verified: set[int] = set()  # steps whose files matched their checksums (read once)
    with _quiet() if read_only else contextlib.nullcontext():
      self.manager = self._manager(keep, read_only)

  def _manager(self, keep: int, read_only: bool) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        enable_async_checkpointing=True,
        # Orbax creates a step's folders in a background thread by default; when that fails
        # (a read-only folder, a full disk) the thread that waits for them is never told and
        # the save blocks for the 20-minute timeout. Created here, the error surfaces at once.
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
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

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _seal(self) -> None:
    """Writes the checksums of the steps saved since the last call (their saves finished)."""
    steps, self._unsealed = self._unsealed, []
    if jax.process_index() != 0:
      return
    for step in steps:
      folder = self.step_dir(step)
      if not os.path.isdir(folder):  # already removed by keep-N
        continue
      tmp = os.path.join(folder, f'.{CHECKSUMS}.tmp')
      with open(tmp, 'w') as f:
        json.dump(file_checksums(folder), f)
      os.replace(tmp, os.path.join(folder, CHECKSUMS))

  def _set_aside(self, step: int, reason: str) -> str:
    """Moves a damaged step out of the manager's folder (kept, never deleted); a warning."""
    target = os.path.join(os.path.dirname(self.directory), DAMAGED, str(step))
    if jax.process_index() == 0 and os.path.isdir(self.step_dir(step)):
      n = 1
      while os.path.exists(target):
        n += 1
        target = os.path.join(os.path.dirname(self.directory), DAMAGED, f'{step}.{n}')
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(self.step_dir(step), target)
    return f'skipped the checkpoint at step {step}: {reason}; moved it to {target}'

  def _sync(self, name: str) -> None:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(name)

  def readable_step(
    self, expected: dict | None = None, abstract_state: TrainState | None = None
  ) -> tuple[int | None, list[str]]:
    """(the newest step whose files match their checksums and whose metadata reads, or None;
    warnings naming each newer step set aside and why). Raises ValueError if the workdir
    holds checkpoints but none is readable (nothing is moved then), or if `expected` (a
    fingerprint) names another model than the readable one, or its state's arrays differ
    from `abstract_state`'s."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    bad: list[tuple[int, str]] = []
    found, different = None, None
    for step in steps:
      # build_run verifies before anything is written and the restore verifies again:
      # every file of a large checkpoint is read for its checksum once, not twice.
      reason = None if step in self._verified else damage(self.step_dir(step))
      if reason is None:
        self._verified.add(step)
      different = None
      if reason is None:
        try:
          self.meta(step)
          if abstract_state is not None:
            different = self.state_difference(step, abstract_state)
        except Exception as e:  # noqa: BLE001 - any reader error means unreadable
          reason = f'its metadata cannot be read ({type(e).__name__})'
      if reason is None:
        found = step
        break
      bad.append((step, reason))
    if steps and found is None:
      listed = '; '.join(f'step {s}: {r}' for s, r in bad)
      raise ValueError(
        f'no readable checkpoint in {self.directory} ({listed}): move that folder away to '
        'start afresh, or restore it from a backup (nothing was changed)'
      )
    if found is not None and expected is not None:
      self.check_compatible(found, expected)
    if different:
      raise ValueError(different)
    warnings = []
    if bad and self.read_only:
      warnings = [f'skipped the checkpoint at step {step}: {reason}' for step, reason in bad]
    elif bad:
      self._sync('checkpoints_verified')
      warnings = [self._set_aside(step, reason) for step, reason in bad]
      self._sync('checkpoints_set_aside')
      self.manager.reload()
    return found, warnings

  def state_difference(self, step: int, abstract_state: TrainState) -> str | None:
    """How the train state saved at `step` differs from `abstract_state` in its arrays'
    number and shapes (read from metadata only), or None if it does not: another optimiser
    or model setting, not damage."""
    tree = self.manager.item_metadata(step)['state']
    tree = getattr(tree, 'tree', tree)
    saved = sorted(tuple(x.shape) for x in jax.tree.leaves(tree))
    wanted = sorted(tuple(x.shape) for x in jax.tree.leaves(abstract_state))
    if saved == wanted:
      return None
    return (
      f'the checkpoint at step {step} in {self.directory} holds a train state of '
      f'{len(saved)} arrays, this config makes {len(wanted)} '
      f'{"of other shapes" if len(saved) == len(wanted) else ""}'.rstrip()
      + ' (another optimiser or model setting?): use the config that wrote it or another '
      '--workdir (nothing was changed)'
    )

  def restore_latest(self, abstract_state: TrainState, data_iter=None):
    """(state, step, warnings) from the newest checkpoint that restores, falling back past
    any that fail (set aside as in `readable_step`); (None, None, warnings) if none is left."""
    warnings: list[str] = []
    while True:
      step, skipped = self.readable_step()
      warnings += skipped
      if step is None:
        return None, None, warnings
      try:
        different = self.state_difference(step, abstract_state)
      except Exception:  # noqa: BLE001 - unreadable metadata: damage, handled below
        different = None
      if different:
        raise ValueError(different)
      try:
        return self.restore(step, abstract_state, data_iter), step, warnings
      except Exception as e:  # noqa: BLE001 - a damaged file surfaces as any reader error
        if self.read_only:
          raise
        message = str(e).strip().splitlines()[0][:200] if str(e).strip() else ''
        if os.path.isfile(os.path.join(self.step_dir(step), CHECKSUMS)):
          # Its files are as committed (readable_step checked them): not damage, but a run
          # that reads it otherwise. Never set a sound checkpoint aside.
          raise ValueError(
            f'the checkpoint at step {step} in {self.directory} is intact but does not restore '
            f'into this run ({type(e).__name__}: {message}): resume with the settings that '
            "wrote it (the data pipeline's, e.g. data.workers, included) or use another "
            '--workdir (nothing was changed)'
          ) from None
        self._sync('checkpoint_restore_failed')
        warnings.append(
          self._set_aside(step, f'it failed to restore ({type(e).__name__}: {message})')
        )
        self._sync('checkpoint_restore_failed_set_aside')
        self.manager.reload()

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
    self._finish()
    self._verified.discard(step)  # its files are about to be replaced (force=True)
    with self._failure(step):
      self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._unsealed.append(step)

  def committed_steps(self) -> list[int]:
    """The steps whose folders are committed on disk (not the manager's cached list)."""
    try:
      names = os.listdir(self.directory)
    except OSError:
      return []
    return sorted(int(n) for n in names if n.isdigit())

  @contextlib.contextmanager
  def _failure(self, step: int | None):
    """Any error of a save becomes one CheckpointError that says what is safe."""
    try:
      yield
    except CheckpointError:
      raise
    except Exception as e:  # noqa: BLE001 - Orbax and the filesystem raise many types
      saved = [s for s in self.committed_steps() if s != step]
      which = f'at step {step} ' if step is not None else ''
      safe = f'the checkpoint at step {saved[-1]} is intact' if saved else 'none was committed'
      why = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
      raise CheckpointError(
        f'could not save the checkpoint {which}in {self.directory} ({why}); {safe}: free disk '
        'space or make the folder writable, then run the same command to resume'
      ) from e

  def _finish(self) -> None:
    """Waits for the save in flight and writes its checksums; a failure raises."""
    with self._failure(self._unsealed[-1] if self._unsealed else None):
      self.manager.wait_until_finished()
      self._seal()

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
    self._finish()

  def close(self) -> None:
    self._finish()
    self.manager.close()
