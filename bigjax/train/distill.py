"""Knowledge distillation: a frozen teacher as one more input of the one train step.

`config.distill.teacher = PATH` turns any run into a distillation run. PATH is

  a bigjax workdir        its latest checkpoint (config.json + checkpoints/)
  a checkpoint folder     <workdir>/checkpoints/<step>: that step of that workdir
  a Hugging Face folder   config.json + model.safetensors, read by `bigjax.from_pretrained`

The teacher may be of another family than the student (a ResNet for an MLP, a GPT for an
LSTM) as long as both read the task's inputs and their logits share a label space (a
vocabulary padded further on one side is cut to the shorter; the padding columns carry no
probability). It is frozen: its variables are the step's `frozen` argument (placed on the
mesh once, never donated, updated or checkpointed, no optimiser state), it runs with
`train=False` (no dropout, batch-norm statistics read, not updated) inside the same jitted
step as the student, on the same sharded batch after the same augmentation, and no
gradient reaches it.

The objective is (1 - alpha) * task loss + alpha * soft loss + hints, each a `LossTerm`:

  distill.loss          'kl' (Hinton et al., 2015: T^2 KL(teacher || student) at
                        temperature T), 'reverse_kl', 'mse' (logit matching) or 'topk' (the
                        teacher's top_k classes plus a remainder bucket, for large
                        vocabularies); per token for sequence models, padding excluded by the
                        task's weights. Reported as `distill`.
  distill.hints         FitNets hints (Romero et al., 2015): 'student_path:teacher_path'
                        pairs (comma separated) of sown intermediates (e.g. 'features:features'
                        for the pooled features every classifier sows), each student feature
                        mapped to the teacher's width by a learned linear projection (trained
                        and checkpointed with the student, `TrainState.params['loss_terms']`,
                        never part of the exported model); weight `hint_weight`. Reported as
                        `hint`.
  distill.attention_weight  attention-map distillation between Transformers of different
                        head counts and depths (per-layer maps, heads grouped): student layer
                        i learns teacher layer j for each 'i:j' of `attention_layers` ('' =
                        spread evenly, last to last). Reported as `attention`.

With `distill.precompute = True` the teacher never runs during training: its logits (or,
with top_k > 0, its top-k log-probabilities and indices) over the whole train split, without
augmentation, are written once into <workdir>/teacher_store (`bigjax.train.teacher_store`)
and read by example index in the pipeline, so resume stays exact.

The student may start from a checkpoint too (`init_from`); checkpoints, resume and
metrics are the trainer's own. Only the student's parameters (and the hints' projections)
are in its checkpoints.
"""

import dataclasses
import os
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigjax import losses
from bigjax.outputs import ModelOutput, as_output
from bigjax.train import init_from
from bigjax.train.step import INTERMEDIATES, LossTerm
from bigjax.train.tasks import Task
from bigjax.train.workdir import restore_from_workdir
from bigjax.typing import Batch, PyTree

LOSSES = ('kl', 'reverse_kl', 'mse', 'topk')
STORE_DIR = 'teacher_store'


@dataclasses.dataclass
class Teacher:
  model: nn.Module
  variables: PyTree
  description: str  # 'gpt2_small from /path (step 2200)'


def _checkpoint_folder(path: str) -> tuple[str, int] | None:
  """(workdir, step) when `path` is <workdir>/checkpoints/<step>."""
  parent, step = os.path.split(os.path.normpath(path))
  workdir, name = os.path.split(parent)
  if name == 'checkpoints' and step.isdigit():
    return workdir, int(step)
  return None


def load_teacher(path: str, *, ema: bool = False) -> Teacher:
  """The teacher named by `distill.teacher`; one-line errors for anything else. `ema`
  (distill.teacher_ema): a bigjax run's moving average of its parameters."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'distill.teacher {path!r} does not exist: point it at a bigjax workdir, one of its '
      'checkpoints/<step> folders or a Hugging Face folder'
    )
  at = _checkpoint_folder(path)
  if at is not None:
    config, model, variables = restore_from_workdir(*at, ema=ema)
    what = f'{config.model.name}{" (moving average)" if ema else ""}'
    return Teacher(model, variables, f'{what} from {at[0]} (step {at[1]})')
  kind = init_from.folder_kind(path)
  if kind == 'workdir':
    config, model, variables = restore_from_workdir(path, ema=ema)
    what = f'{config.model.name}{" (moving average)" if ema else ""}'
    return Teacher(model, variables, f'{what} from {path} (latest checkpoint)')
  if kind == 'pretrained':
    if ema:
      raise ValueError(
        f'distill.teacher_ema needs a bigjax run as the teacher, not the Hugging Face folder '
        f'{path!r}: set --config.distill.teacher_ema=false'
      )
    from bigjax.convert import from_pretrained

    model, variables = from_pretrained(path)
    return Teacher(model, variables, f'{type(model).__name__} from {path} (Hugging Face)')
  raise FileNotFoundError(
    f'distill.teacher {path!r} is neither a bigjax workdir (config.json + checkpoints/), a '
    'checkpoint folder (<workdir>/checkpoints/<step>) nor a Hugging Face folder '
    '(config.json + model.safetensors)'
  )


# --- reading sown intermediates ---------------------------------------------------------


def _natural(text: str) -> list:
  return [int(p) if p.isdigit() else p for p in re.split(r'(\d+)', text)]


def sown_paths(tree: PyTree) -> dict[str, Any]:
  """{'/'-joined path: value} of sown intermediates (each sown tuple's last value)."""
  found = {}

  def walk(node, prefix):
    if isinstance(node, tuple):
      found[prefix] = node[-1]
    elif isinstance(node, dict) or hasattr(node, 'items'):
      for k, v in node.items():
        walk(v, f'{prefix}/{k}' if prefix else str(k))

  walk(tree, '')
  return found


def _pick(tree: PyTree, path: str, who: str) -> jax.Array:
  found = sown_paths(tree)
  if path not in found:
    names = ', '.join(sorted(found, key=_natural)[:8]) or 'none'
    raise ValueError(
      f'distill: the {who} sows no intermediate {path!r}; it sows {names}: fix distill.hints'
    )
  return found[path]


def attention_paths(tree: PyTree) -> list[str]:
  """The paths of sown attention maps, layer by layer (natural order)."""
  return sorted((p for p in sown_paths(tree) if p.endswith('attention_weights')), key=_natural)


def _to_weights_shape(per_element: jax.Array, like: tuple[int, ...]) -> jax.Array:
  """A per-position loss [B, ...] averaged down to the task's weights shape [B] or [B, T]."""
  extra = tuple(range(len(like), per_element.ndim))
  if per_element.shape[: len(like)] != tuple(like):
    raise ValueError(
      f'distill: a loss of shape {per_element.shape} does not line up with the task weights '
      f'{tuple(like)}'
    )
  return per_element.mean(extra) if extra else per_element


# --- the loss terms ---------------------------------------------------------------------


def _common_classes(student: jax.Array, teacher: jax.Array) -> tuple[jax.Array, jax.Array]:
  v = min(student.shape[-1], teacher.shape[-1])
  return student[..., :v], teacher[..., :v]


def soft_loss_fn(config: ml_collections.ConfigDict, task: Task) -> Callable:
  """fn(outputs, batch, teacher) -> the soft loss per element of task.weights(batch)."""
  d = config.distill
  kind, temperature, top_k = d.loss, float(d.temperature), int(d.top_k)

  def fn(outputs: ModelOutput, batch: Batch, teacher: Any) -> jax.Array:
    shape = task.weights(batch).shape
    student = outputs.logits
    if isinstance(teacher, dict) and 'teacher_topk_logprobs' in teacher:  # from the store
      logprobs, indices = teacher['teacher_topk_logprobs'], teacher['teacher_topk_indices']
      loss = losses.topk_distillation_loss(student, logprobs, indices, temperature=temperature)
      return _to_weights_shape(loss, shape)
    t_logits = teacher['teacher_logits'] if isinstance(teacher, dict) else teacher.logits
    student, t_logits = _common_classes(student, t_logits)
    if kind == 'kl':
      loss = losses.distillation_loss(student, t_logits, temperature=temperature)
    elif kind == 'reverse_kl':
      loss = losses.reverse_kl_loss(student, t_logits, temperature=temperature)
    elif kind == 'mse':
      loss = losses.logit_mse_loss(student, t_logits)
    else:
      k = min(top_k or t_logits.shape[-1], t_logits.shape[-1])
      logprobs, indices = losses.teacher_topk(t_logits, k, temperature=temperature)
      loss = losses.topk_distillation_loss(student, logprobs, indices, temperature=temperature)
    return _to_weights_shape(loss, shape)

  return fn


def parse_pairs(spec: str, what: str) -> list[tuple[str, str]]:
  pairs = []
  for item in filter(None, (p.strip() for p in spec.split(','))):
    if item.count(':') != 1:
      raise ValueError(
        f'distill.{what} {spec!r}: each pair is student:teacher, comma separated, e.g. '
        "'features:features' or '0:1,1:3'"
      )
    a, b = item.split(':')
    pairs.append((a.strip(), b.strip()))
  return pairs


def hint_terms(config, task, student_sown, teacher_sown) -> list[LossTerm]:
  """One `hint` term over all pairs of distill.hints, with its projections."""
  d = config.distill
  pairs = parse_pairs(d.hints, 'hints')
  if not pairs or not d.hint_weight:
    return []
  shapes = []
  for s_path, t_path in pairs:
    s, t = _pick(student_sown, s_path, 'student'), _pick(teacher_sown, t_path, 'teacher')
    if s.shape[:-1] != t.shape[:-1]:
      raise ValueError(
        f'distill.hints {s_path}:{t_path}: the student feature is {s.shape} and the '
        f"teacher's {t.shape}; only the last (feature) axis may differ: pair features of the "
        'same spatial size'
      )
    shapes.append((s.shape[-1], t.shape[-1]))
  kernel_init = nn.initializers.lecun_normal()

  def init(rng):
    keys = jax.random.split(rng, len(pairs))
    return {
      f'pair_{i}': {
        'kernel': kernel_init(k, (ds, dt), jnp.float32),
        'bias': jnp.zeros((dt,), jnp.float32),
      }
      for i, (k, (ds, dt)) in enumerate(zip(keys, shapes))
    }

  def fn(outputs, batch, teacher, params):
    shape = task.weights(batch).shape
    total = 0.0
    for i, (s_path, t_path) in enumerate(pairs):
      s = _pick(outputs.features[INTERMEDIATES], s_path, 'student')
      t = _pick(teacher.features[INTERMEDIATES], t_path, 'teacher')
      p = params[f'pair_{i}']
      total = total + _to_weights_shape(losses.hint_loss(s, t, p['kernel'], p['bias']), shape)
    return total / len(pairs)

  return [LossTerm('hint', float(d.hint_weight), fn, init=init, intermediates=True)]


def layer_pairs(spec: str, num_student: int, num_teacher: int) -> list[tuple[int, int]]:
  """Student:teacher layer pairs: parsed from `spec`, or student layer i -> teacher layer
  ceil((i + 1) * Lt / Ls) - 1 (spread evenly, the last to the last)."""
  if not spec:
    return [(i, -(-(i + 1) * num_teacher // num_student) - 1) for i in range(num_student)]
  pairs = []
  for a, b in parse_pairs(spec, 'attention_layers'):
    if not (a.lstrip('-').isdigit() and b.lstrip('-').isdigit()):
      raise ValueError(f"distill.attention_layers {spec!r}: layers are integers, e.g. '0:1,1:3'")
    i, j = int(a), int(b)
    if not (-num_student <= i < num_student and -num_teacher <= j < num_teacher):
      raise ValueError(
        f'distill.attention_layers {spec!r}: the student has {num_student} attention layers '
        f'and the teacher {num_teacher}'
      )
    pairs.append((i % num_student, j % num_teacher))
  return pairs


def attention_terms(config, task, student_sown, teacher_sown) -> list[LossTerm]:
  d = config.distill
  if not d.attention_weight:
    return []
  s_paths, t_paths = attention_paths(student_sown), attention_paths(teacher_sown)
  if not s_paths or not t_paths:
    who = 'student' if not s_paths else 'teacher'
    raise ValueError(
      f'distill.attention_weight needs attention maps, and the {who} sows none: distil '
      'attention between Transformers (unrolled layers), or set distill.attention_weight=0'
    )
  for path in (*s_paths, *t_paths):
    found = sown_paths(student_sown if path in s_paths else teacher_sown)[path]
    if found.ndim != 4:
      raise ValueError(
        f'distill: attention maps {path!r} are {found.shape}, not [B, H, T, S] (layers under '
        'nn.scan are stacked): set --config.model.scan_layers=False for attention distillation'
      )
  pairs = [
    (s_paths[i], t_paths[j]) for i, j in layer_pairs(d.attention_layers, len(s_paths), len(t_paths))
  ]

  def fn(outputs, batch, teacher):
    shape = task.weights(batch).shape
    s_all, t_all = (
      sown_paths(outputs.features[INTERMEDIATES]),
      sown_paths(teacher.features[INTERMEDIATES]),
    )
    total = 0.0
    for s_path, t_path in pairs:
      loss = losses.attention_map_loss(s_all[s_path], t_all[t_path])  # [B, T]
      total = total + _to_weights_shape(loss, shape)
    return total / len(pairs)

  return [LossTerm('attention', float(d.attention_weight), fn, intermediates=True)]


# --- the setup build_run calls ----------------------------------------------------------


@dataclasses.dataclass
class Setup:
  """What `build_run` needs from a distillation config."""

  loss_terms: tuple[LossTerm, ...]
  frozen: PyTree  # the teacher's variables ({} with a precomputed store)
  frozen_forward: Callable[[PyTree, Batch], Any]
  task_weight: float
  notes: tuple[str, ...]
  teacher: Teacher | None = None


def check(config: ml_collections.ConfigDict) -> None:
  """Config errors before anything is opened or written."""
  d = config.get('distill')
  if d is None or not d.get('teacher'):
    return
  if d.loss not in LOSSES:
    raise ValueError(f'unknown distill.loss {d.loss!r}: choose one of {", ".join(LOSSES)}')
  if not 0.0 <= float(d.alpha) <= 1.0:
    raise ValueError(f'distill.alpha must be in [0, 1], got {d.alpha}')
  if float(d.temperature) <= 0:
    raise ValueError(f'distill.temperature must be positive, got {d.temperature}')
  if int(d.top_k) < 0:
    raise ValueError(f'distill.top_k must be >= 0 (0 = every class), got {d.top_k}')
  if d.precompute and (d.hint_weight or d.attention_weight):
    raise ValueError(
      'distill.precompute stores logits only: hints and attention maps need the teacher '
      'online (set distill.precompute=False)'
    )
  if d.precompute and d.loss == 'mse' and int(d.top_k):
    raise ValueError('distill.loss=mse needs full logits: set distill.top_k=0 to precompute')
  parse_pairs(d.hints, 'hints')


def _check_outputs(task: Task, student: nn.Module, s_vars, teacher: Teacher, inputs) -> None:
  """The teacher's logits must line up with the student's: the same shape, except that a
  language model's vocabulary may be padded further on one side (cut to the shorter)."""

  def logits(model, variables):
    return as_output(model.apply(variables, *inputs, train=False)).logits

  s = jax.eval_shape(lambda v: logits(student, v), s_vars).shape
  t = jax.eval_shape(lambda v: logits(teacher.model, v), teacher.variables).shape
  padded_vocab = task.name in ('lm', 'seq2seq')
  if s[:-1] != t[:-1] or (s[-1] != t[-1] and not padded_vocab):
    raise ValueError(
      f'distill: the teacher ({teacher.description}) gives logits {t[1:]} per example and the '
      f'student {s[1:]}: distil from a teacher of the same task and label space'
    )


def _sown(model, variables, inputs) -> PyTree:
  """The intermediates `model` sows on `inputs` (shapes only)."""

  def run(v):
    _, state = model.apply(v, *inputs, train=False, mutable=[INTERMEDIATES])
    return state.get(INTERMEDIATES, {})

  return jax.eval_shape(run, variables)


def setup(
  config: ml_collections.ConfigDict,
  task: Task,
  student: nn.Module,
  inputs: tuple,
  teacher: Teacher | None = None,
) -> Setup | None:
  """The loss terms, frozen teacher and forward of `config.distill` (None when off).
  `inputs` are example student inputs (shapes only); `teacher` is loaded when not given."""
  d = config.get('distill')
  if d is None or not d.get('teacher'):
    return None
  check(config)
  precompute = bool(d.precompute)
  teacher = teacher or load_teacher(d.teacher, ema=bool(d.get('teacher_ema', False)))
  want = bool(d.hint_weight and d.hints) or bool(d.attention_weight)
  terms = [LossTerm('distill', float(d.alpha), soft_loss_fn(config, task))]
  s_vars = jax.eval_shape(  # the student's variables, shapes only
    lambda r: student.init({'params': r, 'dropout': r}, *inputs, train=False),
    jax.random.key(0),
  )
  if want:
    student_sown = _sown(student, s_vars, inputs)
    teacher_sown = _sown(teacher.model, teacher.variables, inputs)
    terms += hint_terms(config, task, student_sown, teacher_sown)
    terms += attention_terms(config, task, student_sown, teacher_sown)
  _check_outputs(task, student, s_vars, teacher, inputs)
  model = teacher.model

  def forward(frozen, batch):
    if precompute:  # the pipeline attached the stored outputs
      return {k: v for k, v in batch.items() if k.startswith('teacher_')}
    args = task.inputs(batch)
    if want:
      out, state = model.apply(frozen, *args, train=False, mutable=[INTERMEDIATES])
      out = as_output(out)
      return out.replace(features={**out.features, INTERMEDIATES: state.get(INTERMEDIATES, {})})
    return as_output(model.apply(frozen, *args, train=False))

  notes = [
    f'distilling from {teacher.description}: loss={d.loss} alpha={d.alpha} '
    f'temperature={d.temperature}'
    + (f' top_k={d.top_k}' if d.loss == 'topk' else '')
    + (f' hints={d.hints!r} x{d.hint_weight}' if d.hint_weight and d.hints else '')
    + (f' attention x{d.attention_weight}' if d.attention_weight else '')
    + (' (precomputed)' if precompute else '')
  ]
  frozen = {} if precompute else teacher.variables
  return Setup(tuple(terms), frozen, forward, 1.0 - float(d.alpha), tuple(notes), teacher)


def teacher_logits_fn(teacher: Teacher, task: Task) -> Callable[[Batch], np.ndarray]:
  """A jitted host-batch -> teacher logits function (for the precomputed store)."""
  model, variables = teacher.model, teacher.variables

  @jax.jit
  def run(variables, batch):
    logits = as_output(model.apply(variables, *task.inputs(batch), train=False)).logits
    return logits.astype(jnp.float32)

  return lambda batch: np.asarray(run(variables, batch))
