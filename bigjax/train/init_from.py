"""Fine-tuning from a checkpoint: `config.init_from = PATH`, for every family.

PATH is a bigjax workdir (config.json + checkpoints/: the parameters and model state of its
latest step, read with Orbax; never its optimiser state or data iterator) or a Hugging Face
style folder (config.json + *.safetensors, read by `bigjax.from_pretrained`). The run's
parameters, and its model state such as BatchNorm statistics (named 'batch_stats/...'), are
matched against the source's by '/'-joined name and shape:

  loaded   in both, same shape: restored from PATH
  new      only in the run: initialised fresh
  skipped  in both, but `config.init_from_skip` (a regex, re.search) matches the name:
           initialised fresh
  dropped  only in the source: not used

Heads are parameters like any other: a classifier of another size under the same name is a
shape error that names it, never a silent fresh start. To fine-tune on a new label set, say
so: `init_from_skip='^head/'` (ViT, ResNet) or leave the head out of the source's model.
A head under another name (BERT's `classifier` after `mlm` / `nsp` pre-training) is simply
new, and the source's heads are dropped.

Every error is one line, raised by `build_run` before anything is written into the workdir:
PATH missing or neither kind of folder, a workdir without a checkpoint, a source of another
architecture (its model class differs from the run's), a name in both with different shapes,
and a source of which nothing loads. On a fresh run the match is printed through the run's
logger and written to `<workdir>/init_from.json`; the weights are loaded by `Run.on_init`,
which never runs on resume, so a workdir that already holds a checkpoint ignores init_from.

`config.freeze_loaded = True` trains only the parameters that were not loaded (no update,
no optimiser state, no weight decay for the others; see `bigjax.train.optim.freeze`); the
frozen names are kept in init_from.json so that a resumed run rebuilds the same optimiser.
"""

import dataclasses
import json
import os
import re
from typing import Callable

import jax
import ml_collections
import numpy as np

from bigjax.registry import model_spec
from bigjax.train.checkpoint import Checkpointer
from bigjax.train.optim import param_path
from bigjax.typing import PyTree

REPORT_FILE = 'init_from.json'


@dataclasses.dataclass
class Source:
  """What a checkpoint holds: `shapes` maps each name to its shape (parameters by path,
  model state as 'collection/path'); `read(wanted)` returns {name: numpy array} for the
  names in `wanted` ({name: dtype}) and reads nothing else."""

  path: str
  kind: str  # 'bigjax workdir' | 'Hugging Face folder'
  model: str  # the registered model name, or config.json's model_type
  model_class: str
  step: int | None
  shapes: dict[str, tuple[int, ...]]
  read: Callable[[dict[str, np.dtype]], dict[str, np.ndarray]]


def _flat(tree: PyTree) -> dict[str, object]:
  return {param_path(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def latest_step(workdir: str) -> int | None:
  """The latest committed checkpoint step of `workdir`, None if it has none (or no folder)."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    return None
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    return checkpointer.latest_step()
  finally:
    checkpointer.close()


def _workdir_source(path: str) -> Source:
  step = latest_step(path)
  if step is None:
    raise FileNotFoundError(
      f'init_from {path!r} is a bigjax workdir without a checkpoint: train it first, or point '
      'init_from at one that has checkpoints/'
    )
  checkpointer = Checkpointer(path, read_only=True)
  try:
    meta = checkpointer.meta(step)
    shapes = checkpointer.state_shapes(step)
  finally:
    checkpointer.close()
  name = meta.get('model', '')
  try:
    cls, _ = model_spec(name)
  except ValueError:
    raise ValueError(
      f'init_from {path!r} holds a checkpoint of model {name!r}, which this bigjax does not '
      'register: fine-tune from a checkpoint of a registered model'
    ) from None
  keys = {'/'.join(k): ('params', *k) for k in shapes['params']}
  keys.update({'/'.join(k): ('model_state', *k) for k in shapes['model_state']})
  flat_shapes = {**shapes['params'], **shapes['model_state']}
  flat_shapes = {'/'.join(k): v for k, v in flat_shapes.items()}

  def read(wanted: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    target: dict = {}
    for name, dtype in wanted.items():
      *parents, last = keys[name]
      node = target
      for part in parents:
        node = node.setdefault(part, {})
      node[last] = jax.ShapeDtypeStruct(flat_shapes[name], dtype)
    reader = Checkpointer(path, read_only=True)
    try:
      restored = reader.restore_subset(step, target)
    finally:
      reader.close()
    out = {}
    for name in wanted:
      node = restored
      for part in keys[name]:
        node = node[part]
      out[name] = np.asarray(node)
    return out

  return Source(path, 'bigjax workdir', name, cls.__name__, step, flat_shapes, read)


def _pretrained_source(path: str) -> Source:
  from bigjax.convert import from_pretrained

  model, variables = from_pretrained(path)
  variables = dict(variables)
  arrays = _flat(variables.pop('params', {}))
  arrays.update(_flat(variables))  # other collections: 'batch_stats/...'
  with open(os.path.join(path, 'config.json')) as f:
    model_type = json.load(f).get('model_type', '?')

  def read(wanted: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    return {name: np.asarray(arrays[name], dtype) for name, dtype in wanted.items()}

  shapes = {k: tuple(np.shape(v)) for k, v in arrays.items()}
  return Source(path, 'Hugging Face folder', model_type, type(model).__name__, None, shapes, read)


def folder_kind(path: str) -> str | None:
  """'workdir' for a bigjax workdir (config.json + checkpoints/), 'pretrained' for a Hugging
  Face style folder (config.json + model.safetensors, or its sharded index), else None."""
  has = lambda name: os.path.exists(os.path.join(path, name))  # noqa: E731
  if not (os.path.isdir(path) and has('config.json')):
    return None
  if has('checkpoints'):
    return 'workdir'
  if has('model.safetensors') or has('model.safetensors.index.json'):
    return 'pretrained'
  return None


def open_source(path: str) -> Source:
  """Reads what PATH holds (names, shapes, model class); raises a one-line error for a
  missing path or a folder that is neither a bigjax workdir nor a Hugging Face folder."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'init_from {path!r} does not exist: pass a bigjax workdir or a Hugging Face style '
      'folder (config.json + model.safetensors)'
    )
  kind = folder_kind(path)
  if kind == 'workdir':
    return _workdir_source(path)
  if kind == 'pretrained':
    return _pretrained_source(path)
  raise FileNotFoundError(
    f'init_from {path!r} is neither a bigjax workdir (config.json + checkpoints/) nor a '
    'Hugging Face style folder (config.json + model.safetensors): point it at one of those'
  )


def _groups(names: list[str]) -> str:
  """'block_0 (16), cls, head/bias, head/kernel': names grouped by their top-level prefix,
  listed in full for groups of at most two."""
  if not names:
    return '-'
  groups: dict[str, list[str]] = {}
  for name in sorted(names):
    groups.setdefault(name.split('/')[0], []).append(name)
  parts = []
  for prefix, members in groups.items():
    if len(members) <= 2:
      parts.extend(members)
    else:
      parts.append(f'{prefix} ({len(members)})')
  return ', '.join(parts)


@dataclasses.dataclass
class FineTune:
  """The fine-tuning decisions of one run, made by `build_run` before it writes anything."""

  source: Source | None = None
  skip: str = ''
  freeze: bool = False
  loaded: list[str] = dataclasses.field(default_factory=list)
  new: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)
  dropped: list[str] = dataclasses.field(default_factory=list)
  frozen: list[str] = dataclasses.field(default_factory=list)  # parameter names, sorted
  notes: list[str] = dataclasses.field(default_factory=list)  # logged at the start
  _dtypes: dict[str, np.dtype] = dataclasses.field(default_factory=dict)

  def match(self, params: PyTree, model_state: PyTree) -> None:
    """Matches the source against the run's (abstract) parameters and model state."""
    source = self.source
    if source is None:
      return
    self.loaded, self.new, self.skipped, self._dtypes = [], [], [], {}
    target = {k: (tuple(v.shape), v.dtype) for k, v in _flat(params).items()}
    param_names = set(target)
    target.update({k: (tuple(v.shape), v.dtype) for k, v in _flat(model_state).items()})
    regex = re.compile(self.skip) if self.skip else None
    mismatched = []
    for name in sorted(target):
      shape, dtype = target[name]
      if name not in source.shapes:
        self.new.append(name)
      elif regex is not None and regex.search(name):
        self.skipped.append(name)
      elif tuple(source.shapes[name]) != shape:
        mismatched.append((name, tuple(source.shapes[name]), shape))
      else:
        self.loaded.append(name)
        self._dtypes[name] = dtype
    self.dropped = sorted(set(source.shapes) - set(target))
    where = f'init_from {source.path!r}'
    if mismatched:
      name, theirs, ours = mismatched[0]
      more = f' ({len(mismatched) - 1} more differ)' if len(mismatched) > 1 else ''
      raise ValueError(
        f'{where}: parameter {name!r} has shape {theirs} there but {ours} in this run{more}: '
        'give the run the model options that produced it (e.g. the same vocab_size or '
        f'num_classes), or initialise it fresh with '
        f"--config.init_from_skip='^{re.escape(name.split('/')[0])}/'"
      )
    if not param_names & set(self.loaded):
      if self.skipped:
        reason = f'init_from_skip={self.skip!r} skips every parameter the two share'
      else:
        theirs = ', '.join(sorted(source.shapes)[:2])
        ours = ', '.join(sorted(param_names)[:2])
        reason = f'no parameter name is shared (it has {theirs}, ...; this run has {ours}, ...)'
      raise ValueError(
        f'{where} ({source.model}): nothing to load, {reason}: point init_from at a '
        'checkpoint of this model'
      )
    if self.freeze:
      self.frozen = [n for n in self.loaded if n in param_names]
    self.notes = self.report_lines()

  def report_lines(self) -> list[str]:
    s = self.source
    at = f', step {s.step}' if s.step is not None else ''
    lines = [
      f'init_from {s.path} ({s.kind}, {s.model}{at}): loaded {len(self.loaded)}, '
      f'new {len(self.new)}, skipped {len(self.skipped)}, dropped {len(self.dropped)}',
      f'  loaded: {_groups(self.loaded)}',
      f'  new: {_groups(self.new)}',
    ]
    if self.skipped:
      lines.append(f'  skipped (init_from_skip={self.skip!r}): {_groups(self.skipped)}')
    lines.append(f'  dropped: {_groups(self.dropped)}')
    if self.frozen:
      lines.append(f'  freeze_loaded: {len(self.frozen)} loaded parameters get no updates')
    return lines

  def write(self, workdir: str) -> None:
    """init_from.json in the workdir (fresh runs only)."""
    if self.source is None or jax.process_index() != 0:
      return
    s = self.source
    report = {
      'init_from': s.path,
      'kind': s.kind,
      'model': s.model,
      'model_class': s.model_class,
      'step': s.step,
      'init_from_skip': self.skip,
      'freeze_loaded': self.freeze,
      **{k: getattr(self, k) for k in ('loaded', 'new', 'skipped', 'dropped', 'frozen')},
    }
    with open(os.path.join(workdir, REPORT_FILE), 'w') as f:
      json.dump(report, f, indent=2)

  def load(self, state, run):
    """`Run.on_init`: the fresh state with the loaded names replaced by the source's."""
    if self.source is None:
      return state
    arrays = self.source.read(self._dtypes)

    def put(path, leaf, prefix=''):
      name = prefix + param_path(path)
      if name not in arrays:
        return leaf
      value = arrays[name]
      return jax.make_array_from_callback(value.shape, leaf.sharding, lambda i: value[i])

    params = jax.tree_util.tree_map_with_path(put, state.params)
    model_state = jax.tree_util.tree_map_with_path(put, state.model_state)
    return state.replace(params=params, model_state=model_state)


def frozen_in(workdir: str) -> list[str]:
  """The parameter names a run in `workdir` froze at its fresh start (init_from.json)."""
  path = os.path.join(workdir, REPORT_FILE)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return list(json.load(f).get('frozen', []))


def prepare(config: ml_collections.ConfigDict, workdir: str, model) -> FineTune:
  """Phase one, before the workdir is touched: opens `config.init_from` and checks the
  architecture; on resume, notes that init_from is ignored and recalls the frozen names."""
  path = config.get('init_from', '') or ''
  skip = config.get('init_from_skip', '') or ''
  freeze = bool(config.get('freeze_loaded', False))
  if skip:
    try:
      re.compile(skip)
    except re.error as e:
      raise ValueError(
        f'init_from_skip {skip!r} is not a regular expression ({e}): fix or unset it'
      ) from None
  step = latest_step(workdir)
  if step is not None:
    plan = FineTune(frozen=frozen_in(workdir))
    if path:
      plan.notes.append(
        f'init_from {path} ignored: resuming from the checkpoint at step {step} in this workdir'
      )
    if plan.frozen and not freeze:
      plan.notes.append(
        f'freeze_loaded was set at the fresh start: {len(plan.frozen)} parameters stay frozen'
      )
    return plan
  if not path:
    if freeze:
      raise ValueError('freeze_loaded=True needs init_from: set --config.init_from=PATH')
    return FineTune()
  source = open_source(path)
  ours = type(model).__name__
  if source.model_class != ours:
    raise ValueError(
      f'init_from {source.path!r} holds a {source.model_class} ({source.model}), but this run '
      f'trains a {ours} ({config.model.name}): fine-tune from a checkpoint of the same '
      'architecture'
    )
  return FineTune(source=source, skip=skip, freeze=freeze)


TOKENIZER_FILES = ('tokenizer.json', 'vocab.txt')


def tokenizer_of(path: str) -> str:
  """`path` when that folder (a bigjax workdir, a Hugging Face folder) holds a tokenizer
  (tokenizer.json or vocab.txt), else ''. A run whose `data.tokenizer` is empty and which
  starts from such a folder reads its vocabulary: the ids the loaded embeddings were
  trained on."""
  if path and any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
    return path
  return ''
