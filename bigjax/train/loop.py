"""The training loop: data, model, optimiser, mesh, checkpoints, evaluation, reporting.

`train_and_evaluate(config, workdir)` is what `train.py` runs: `build_run` assembles a `Run`
(mesh, model, task, data, state, jitted steps, checkpointer) and `train(run)` runs the loop.
Re-running with the same workdir resumes from the latest committed checkpoint, data iterator
included, so the final parameters equal those of an uninterrupted run. Every step count is
in optimiser updates of train.batch_size examples.
"""

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from bigjax.data.pipeline import Data
from bigjax.layers import partitioning
from bigjax.train import (
  distill,
  flops,
  init_from,
  lock,
  memory,
  optim,
  runtime,
  sharding,
  validate,
)
from bigjax.train.checkpoint import DAMAGED, Checkpointer, fingerprint
from bigjax.train.report import Reporter, plot_curves
from bigjax.train.state import TrainState, init_state
from bigjax.train.step import (
  NONFINITE,
  LossTerm,
  add_metrics,
  init_term_params,
  make_eval_step,
  make_train_step,
  summarize,
)
from bigjax.train.tasks import Task, get_task, task_for
from bigjax.train.workdir import DTYPES, build_model, restore_from_workdir  # noqa: F401
from bigjax.typing import PRNGKey, PyTree


def check_workdir(workdir: str) -> None:
  """Creates the workdir, or raises a clear error if it cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise PermissionError(
      f'workdir {workdir!r} is not writable ({e.strerror}): pass --workdir DIR with a '
      f'folder you can write'
    ) from None


def _abstract_state(model, tx, inputs, mesh, term_init=None, rules='auto') -> TrainState:
  """Shapes, dtypes and shardings of the state, without allocating it: every leaf a
  ShapeDtypeStruct whose sharding is the one the rules preset `rules` (config.mesh.rules)
  gives it (`sharding.state_shardings`)."""
  shapes = jax.eval_shape(
    lambda rng: init_state(model, tx, rng, inputs, term_init), jax.random.key(0)
  )
  shardings = sharding.state_shardings(shapes, mesh, partitioning.rules(rules))
  return jax.tree.map(
    lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), shapes, shardings
  )


def state_shardings(abstract: TrainState) -> TrainState:
  """The shardings of an abstract state's leaves, as a tree like it."""
  return jax.tree.map(lambda x: x.sharding, abstract)


class StopSignals:
  """Turns SIGTERM / SIGINT into a stop decision taken at step boundaries.

  With one process the decision is local, at every step. With many, every process must
  stop after the same step and save the same checkpoint, or one ends up in the save while
  another waits in the next step's collectives. So every `every` steps all processes
  exchange their flags (`process_allgather`, itself a collective at a step every process
  reaches) and all stop if any received a signal.
  """

  def __init__(self, every: int = 1):
    self.received: int = 0  # the signal number, 0 for none
    self.every = max(int(every), 1)
    self.reason: str | None = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    self.received = int(signum)

  def should_stop(self, step: int) -> bool:
    """Whether to stop after `step`; identical on every process."""
    if jax.process_count() == 1:
      signum = self.received
    elif step % self.every:
      return False
    else:
      signum = int(np.max(multihost_utils.process_allgather(np.int32(self.received))))
    if signum:
      name = signal.Signals(signum).name
      self.reason = name if self.received else f'{name} on another process'
    return bool(signum)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class NonFiniteError(RuntimeError):
  """Training halted on a non-finite loss or gradients (`train.nonfinite`), after saving the
  last good state; `train.py` exits with code 3."""


class NonFiniteWatch:
  """The host side of `train.nonfinite`: the step's flags (device scalars, see
  bigjax.train.step.NONFINITE) are kept as they come and read at logging steps only."""

  WHAT = {1: 'the loss', 2: 'the gradients', 3: 'the loss and the gradients'}

  def __init__(self, mode: str, max_in_a_row: int):
    self.mode, self.max_in_a_row = mode, max(int(max_in_a_row), 1)
    self.pending: list[tuple[int, jax.Array]] = []
    self.in_a_row, self.total = 0, 0

  def add(self, step: int, metrics: dict) -> None:
    flag = metrics.pop(NONFINITE, None)
    if flag is not None:
      self.pending.append((step, flag))

  def check(self) -> tuple[int, str | None]:
    """(updates skipped since the last check, why to halt or None)."""
    steps = [s for s, _ in self.pending]
    flags = [int(f) for f in jax.device_get([f for _, f in self.pending])]
    self.pending = []
    skipped, why = 0, None
    for step, flag in zip(steps, flags):
      if not flag:
        self.in_a_row = 0
        continue
      skipped += 1
      self.total += 1
      self.in_a_row += 1
      if why is None and self.mode == 'halt':
        why = f'{self.WHAT[flag]} went non-finite at step {step}'
      elif why is None and self.in_a_row >= self.max_in_a_row:
        why = (
          f'{self.in_a_row} updates in a row had a non-finite loss or gradients (the last, at '
          f'step {step}: {self.WHAT[flag]})'
        )
    return skipped, why


def _format(metrics: dict[str, float]) -> str:
  return ' '.join(f'{k}={v:.4f}' for k, v in metrics.items())


def identity_init(state: TrainState, run: 'Run') -> TrainState:
  del run
  return state


@dataclasses.dataclass
class Run:
  """Everything one training run is made of, built by `build_run`; `train(run)` runs it.

  `train_step(state, batch, rng, frozen)` and `eval_step(state, batch)` are jitted over the
  mesh; `frozen` (a teacher's variables, or {}) is placed once, passed to every step and
  never donated or updated. `on_init(state, run) -> state` runs on a freshly initialised
  state only, never on resume: loading pre-trained weights (`init_from`) plugs in there.
  `notes` are logged once at the start (the init_from report, or why it was ignored).
  """

  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  model: nn.Module
  task: Task
  data: Data
  schedule: optax.Schedule
  tx: optax.GradientTransformation
  inputs: tuple
  abstract: TrainState
  meta: dict
  checkpointer: Checkpointer
  train_step: Callable
  eval_step: Callable
  frozen: PyTree
  on_init: Callable[[TrainState, 'Run'], TrainState] = identity_init
  notes: tuple[str, ...] = ()  # logged once at the start (the init_from report)
  term_init: Callable | None = None  # the loss terms' own parameters (distillation hints)
  attach: Callable | None = None  # adds stored teacher outputs to each train batch
  cost: flops.StepCost | None = None  # FLOPs and sizes of one step: throughput and MFU
  peak_source: str = ''  # where the peak FLOP/s of MFU comes from
  discard: Callable[[], None] = lambda: None  # undoes what build_run wrote (see _undo_writes)
  run_lock: lock.WorkdirLock | None = None  # held from build_run to the end of train
  stopped: bool = False  # set by train: a signal stopped it before train.steps

  def initial_state(self, train_iter) -> tuple[TrainState, int | None]:
    """(state, restored step): the latest checkpoint (data iterator included) if the
    workdir has one, else a fresh initialisation passed through `on_init`."""
    state, latest, warnings = self.checkpointer.restore_latest(self.abstract, train_iter)
    self.notes = (*self.notes, *(f'warning: {w}' for w in warnings))
    if state is not None:
      return state, latest
    init_rng, _ = jax.random.split(jax.random.key(self.config.seed))
    return self.on_init(self.init_fn(init_rng), self), None

  @functools.cached_property
  def init_fn(self) -> Callable[[PRNGKey], TrainState]:
    """The jitted initialisation of a fresh state, into `abstract`'s shardings; one object,
    so the memory check's ahead-of-time compilation of it (bigjax.train.memory) is the one
    `initial_state` runs."""
    model, tx, inputs, term_init = self.model, self.tx, self.inputs, self.term_init
    return jax.jit(
      lambda rng: init_state(model, tx, rng, inputs, term_init),
      out_shardings=jax.tree.map(lambda x: x.sharding, self.abstract),
    )

  def step_rng(self) -> PRNGKey:
    return jax.random.split(jax.random.key(self.config.seed))[1]

  def evaluate(self, state: TrainState) -> dict[str, float]:
    """The eval split's metrics; with train.ema_decay, also those of the averaged
    parameters (`ema_<name>`), in the same pass over the data."""
    cfg = self.config.train
    ema = optim.ema_params(getattr(state, 'opt_state', None))
    averaged = state.replace(params=ema) if ema is not None else None
    total, total_ema = None, None
    for batch in self.data.eval_batches(cfg.eval_batch_size, cfg.get('eval_steps', -1)):
      batch = sharding.global_batch(batch, self.mesh)
      total = add_metrics(total, self.eval_step(state, batch))
      if averaged is not None:
        total_ema = add_metrics(total_ema, self.eval_step(averaged, batch))
    result = summarize(total, self.task) if total is not None else {}
    if total_ema is not None:
      result.update({f'ema_{k}': v for k, v in summarize(total_ema, self.task).items()})
    return result


def build_run(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  loss_terms: tuple[LossTerm, ...] = (),
  frozen: PyTree = None,
  frozen_forward: Callable | None = None,
  on_init: Callable[[TrainState, Run], TrainState] | None = None,
) -> Run:
  """Builds the mesh, model, task, data, optimiser, checkpointer and jitted steps; checks
  the config, the workdir, `init_from` (bigjax.train.init_from) and `distill`
  (bigjax.train.distill: the teacher, its loss terms, its precomputed store) before anything
  is written (config.json, init_from.json)."""
  validate.check_config(config)  # every value, before the workdir is touched
  workdir = os.path.abspath(workdir)
  cfg = config.train
  runtime.apply(cfg)  # XLA flags and the compilation cache, before anything compiles
  distill.check(config)
  distilling = bool(config.get('distill', {}).get('teacher', ''))
  if distilling and config.distill.precompute and not config.data.get('with_index', False):
    with config.unlocked():
      config.data.with_index = True  # the store is read by example index
  mesh = sharding.make_mesh(config.mesh)
  rules = config.mesh.get('rules', 'auto')
  table = partitioning.rules(rules)  # an unknown preset fails before anything is written
  sharding.check_batch_size(cfg.batch_size, mesh, 'train.batch_size')
  sharding.check_batch_size(cfg.eval_batch_size, mesh, 'train.eval_batch_size')
  check_accumulation(cfg.batch_size, int(config.optim.get('grad_accum_steps', 1)), mesh)
  if config.get('task', {}).get('name', ''):
    get_task(config.task.name, config)  # an unknown name fails before the data is opened
  schedule, tx = optim.from_config(config)
  model = build_model(config)
  fine_tune = init_from.prepare(config, workdir, model)  # its errors come before any write
  created = not os.path.exists(workdir)
  check_workdir(workdir)
  existing = set(os.listdir(workdir))
  if 'workdir' in config.data and not config.data.workdir:
    config.data.workdir = workdir  # datasets that train a tokenizer save it here
  if 'tokenizer' in config.data and not config.data.tokenizer:
    # A model fine-tuned from a run or a Hugging Face folder reads that folder's vocabulary.
    config.data.tokenizer = init_from.tokenizer_of(config.get('init_from', ''))
  try:
    data = Data(config.data)
    task = task_for(config, data)
    check_vocab(model, data)
    example = next(data.eval_batches(sharding.batch_shards(mesh) * jax.process_count(), 1))
    inputs = tuple(np.asarray(x)[:1] for x in task.inputs(example))
    plan = distill.setup(config, task, model, inputs) if distilling else None
    term_init = None
    if plan is not None:
      loss_terms = (*loss_terms, *plan.loss_terms)
      frozen, frozen_forward = plan.frozen, plan.frozen_forward
    if any(t.init is not None for t in loss_terms):
      term_init = functools.partial(init_term_params, loss_terms)
    abstract = _abstract_state(model, tx, inputs, mesh, term_init, rules)
    fine_tune.match(abstract.params, abstract.model_state)
  except (ValueError, FileNotFoundError):
    # Leave no trace of a run that never started: not even the tokenizer its data set
    # learned into the workdir just now.
    for name in set(os.listdir(workdir)) - existing:
      path = os.path.join(workdir, name)
      if os.path.isfile(path):
        with contextlib.suppress(FileNotFoundError):  # another process removed it
          os.remove(path)
    if created and not os.listdir(workdir):
      os.rmdir(workdir)
    raise
  if fine_tune.frozen:
    schedule, tx = optim.from_config(config, frozen=fine_tune.frozen)
    abstract = _abstract_state(model, tx, inputs, mesh, term_init, rules)
  meta = fingerprint(config.model.name, abstract.params)
  cost, peak_source = step_cost(config, model, inputs)
  meta['inputs'] = [[list(x.shape), str(x.dtype)] for x in inputs]

  run_lock = lock.acquire(workdir)  # one run per workdir; refused before any write
  try:
    checkpointer = Checkpointer(workdir, cfg.keep_checkpoints)
    # Before anything is written: the newest readable checkpoint (damaged newer ones are set
    # aside, with a warning) must be of this model, and resuming must not change settings.
    resume_step, skipped = checkpointer.readable_step(meta, abstract)
    changed = validate.check_resume_changes(workdir, config) if resume_step is not None else []
  except BaseException:
    run_lock.release(remove=True)
    raise
  discard = _undo_writes(workdir, existing, created)  # before the first write
  if jax.process_index() == 0:  # one writer on a shared workdir; nothing reads it back
    if changed:  # keep the settings the earlier steps ran with
      os.replace(
        os.path.join(workdir, 'config.json'), os.path.join(workdir, f'config.{resume_step}.json')
      )
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  fine_tune.write(workdir)
  attach = None
  if plan is not None and config.distill.precompute:
    attach = _teacher_store(config, workdir, plan, data, task)

  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state_sh = state_shardings(abstract)  # the teacher (`frozen`) stays replicated
  train_step = jax.jit(
    sharding.under_rules(
      make_train_step(
        model,
        task,
        config,
        schedule,
        tx,
        loss_terms=loss_terms,
        frozen_forward=frozen_forward,
        task_weight=plan.task_weight if plan is not None else 1.0,
      ),
      mesh,
      table,
    ),
    in_shardings=(state_sh, batch_sh, repl, repl),
    out_shardings=(state_sh, repl),
    donate_argnums=0 if cfg.get('donate', True) else (),  # train.donate: reuse state buffers
  )
  eval_step = jax.jit(
    sharding.under_rules(make_eval_step(model, task), mesh, table),
    in_shardings=(state_sh, batch_sh),
    out_shardings=repl,
  )
  return Run(
    config=config,
    workdir=workdir,
    mesh=mesh,
    model=model,
    task=task,
    data=data,
    schedule=schedule,
    tx=tx,
    inputs=inputs,
    abstract=abstract,
    meta=meta,
    checkpointer=checkpointer,
    train_step=train_step,
    eval_step=eval_step,
    frozen=jax.device_put({} if frozen is None else frozen, repl),
    on_init=_chain(fine_tune.load, on_init or identity_init),
    notes=tuple(f'warning: {w}' for w in skipped)
    + tuple(
      f'resuming with changed settings (allow_changes; the earlier ones are in '
      f'config.{resume_step}.json): {c}'
      for c in changed
    )
    + tuple(fine_tune.notes)
    + (plan.notes if plan is not None else ()),
    term_init=term_init,
    attach=attach,
    cost=cost,
    peak_source=peak_source,
    discard=discard,
    run_lock=run_lock,
  )


def _undo_writes(workdir: str, existing: set[str], created: bool) -> Callable[[], None]:
  """A function that takes back what build_run writes from here on, for a run that stops
  before its first step (it would not fit): new files and folders go (an empty checkpoints
  folder, config.json, init_from.json, a tokenizer), a config.json that was there gets its
  old text back, and a workdir made for this run goes when empty. Checkpoints already
  there are untouched, and so is a teacher store (a pass of the teacher over the train
  split, valid for the next attempt), and so are checkpoints set aside as damaged."""
  path = os.path.join(workdir, 'config.json')
  old_config = open(path).read() if os.path.isfile(path) else None

  def undo() -> None:
    # Never the damaged checkpoints a resume set aside: they are kept, whatever happens.
    for name in set(os.listdir(workdir)) - existing - {distill.STORE_DIR, DAMAGED}:
      full = os.path.join(workdir, name)
      with contextlib.suppress(FileNotFoundError):  # another process removed it
        if os.path.isdir(full):
          shutil.rmtree(full)
        else:
          os.remove(full)
    if old_config is not None:
      with open(path, 'w') as f:
        f.write(old_config)
    if created and not os.listdir(workdir):
      with contextlib.suppress(OSError):
        os.rmdir(workdir)

  return undo


def step_cost(config, model, inputs: tuple) -> tuple[flops.StepCost, str]:
  """(the cost of one training step, where its peak FLOP/s comes from): the model FLOPs of
  one global batch (`flops.train_step_flops`, counted once from `inputs`' shapes), its
  examples and tokens, and the peak of every device (`train.peak_tflops`, 0 = auto)."""
  cfg = config.train
  batch = int(cfg.batch_size)
  shapes = tuple(jax.ShapeDtypeStruct((batch, *np.shape(x)[1:]), x.dtype) for x in inputs)
  peak, source = flops.total_peak_flops(
    cfg.get('compute_dtype', 'float32'), override_tflops=float(cfg.get('peak_tflops', 0.0))
  )
  cost = flops.StepCost(
    flops=float(flops.train_step_flops(model, shapes)),
    examples=batch,
    tokens=batch * flops.tokens_per_example(inputs),
    peak=peak,
  )
  return cost, source


def _teacher_store(config, workdir: str, plan, data: Data, task: Task) -> Callable:
  """Writes <workdir>/teacher_store once (the teacher's outputs over the train split) and
  returns the pipeline hook that adds each example's stored outputs to its batch."""
  from bigjax.train import teacher_store

  d = config.distill
  path = os.path.join(workdir, distill.STORE_DIR)
  expected = {'teacher': os.path.abspath(d.teacher), 'top_k': int(d.top_k)}
  if int(d.top_k):
    expected['temperature'] = float(d.temperature)
  if d.get('teacher_ema', False):
    expected['teacher_ema'] = True
  if not os.path.isdir(path) and jax.process_index() == 0:
    forward = distill.teacher_logits_fn(plan.teacher, task)
    teacher_store.write_store(
      path,
      forward,
      data,
      config.train.eval_batch_size,
      top_k=int(d.top_k),
      temperature=float(d.temperature),
      meta={k: v for k, v in expected.items() if k in ('teacher', 'teacher_ema')},
    )
  multihost_utils.sync_global_devices('teacher_store')
  store = teacher_store.open_store(path)
  found = {k: store.meta.get(k) for k in expected}
  if found != expected:
    raise ValueError(
      f'{path} holds teacher outputs for {found}, but this run asks for {expected}: use '
      'another --workdir, or move that folder away to recompute it'
    )
  return lambda batch: {**batch, **store.lookup(batch['index'])}


def check_vocab(model, data: Data) -> None:
  """Every token id must index the model's embedding table: a tokenizer with more ids than
  `model.vocab_size` is a config error, not a silent out-of-range lookup."""
  size = getattr(model, 'vocab_size', None)
  tokenizer = data.tokenizer
  if isinstance(size, int) and tokenizer is not None and tokenizer.vocab_size > size:
    raise ValueError(
      f'the {data.config.name} tokenizer has {tokenizer.vocab_size} ids but the model has '
      f'vocab_size={size}: set --config.model.vocab_size={tokenizer.vocab_size} or use a '
      'smaller vocabulary'
    )


def _chain(first, then):
  return lambda state, run: then(first(state, run), run)


def check_accumulation(batch_size: int, accum: int, mesh) -> None:
  """The micro-batches of one update must split evenly over the devices."""
  shards = sharding.batch_shards(mesh)
  if accum < 1 or batch_size % (accum * shards):
    raise ValueError(
      f'train.batch_size={batch_size} does not split into optim.grad_accum_steps={accum} '
      f'micro-batches that divide over {shards} devices: use a batch size that is a '
      f'multiple of {max(accum, 1) * shards}'
    )


def train(run: Run, *, tty: bool | None = None) -> dict[str, float]:
  """Runs (or resumes) the loop of `run` to train.steps updates; returns the final eval,
  or {} when a signal stopped it (after saving a checkpoint every process agrees on)."""
  config, cfg, checkpointer = run.config, run.config.train, run.checkpointer
  attach = {'attach': run.attach} if run.attach is not None else {}
  train_iter = run.data.train_iter(cfg.batch_size, config.seed, **attach)
  # The train step compiled ahead of time, and whether it fits, before any state exists.
  try:
    train_step, memory_report = memory.prepare(run, train_iter, on_fail=run.discard)
  except BaseException:
    if run.run_lock is not None:
      run.run_lock.release()
    raise
  try:
    state, latest = run.initial_state(train_iter)
  except ValueError:  # a checkpoint this run cannot resume: leave the workdir as it was
    run.discard()
    if run.run_lock is not None:
      run.run_lock.release()
    raise
  if run.run_lock is not None:
    run.run_lock.mark()
  reporter = Reporter(run.workdir, cfg.steps, latest or 0, tty=tty)
  if latest is not None:
    reporter.log(f'resuming from the checkpoint at step {latest} in {checkpointer.directory}')
  n_params = sum(x.size for x in jax.tree.leaves(state.variables['params']))
  reporter.log(
    f'{config.model.name} ({n_params:,} parameters) on {run.data.config.name} '
    f'[{run.task.name}], {jax.device_count()} device(s), workdir {run.workdir}'
  )
  model_line = getattr(run.model, 'summary', None)  # WaveNet: its receptive field
  for line in ((model_line(),) if callable(model_line) else ()) + tuple(run.notes):
    reporter.log(line)
  if run.cost is not None:
    reporter.log(
      f'{run.cost.flops / 1e12:.4g} model TFLOPs a step (3 x forward); MFU against '
      f'{run.cost.peak / 1e12:.4g} TFLOP/s ({run.peak_source})'
    )
  for line in memory_report.lines():
    reporter.log(line)

  step_rng = run.step_rng()
  step = int(state.step)
  saved_step = latest
  # Throughput is timed from the end of the first step, so compilation stays out of it.
  acc, t_log, s_log, t_start = None, None, step, time.perf_counter()
  final = {}
  watch = NonFiniteWatch(cfg.get('nonfinite', 'off'), cfg.get('max_nonfinite_skips', 10))
  try:
    with StopSignals(cfg.get('stop_check_every', 1)) as stop:
      stopped = False
      while step < cfg.steps and not stopped:
        batch = sharding.global_batch(next(train_iter), run.mesh)
        state, metrics = train_step(state, batch, step_rng, run.frozen)
        watch.add(step + 1, metrics)
        acc = add_metrics(acc, metrics)
        step += 1
        if t_log is None:
          jax.block_until_ready(metrics)
          t_log, s_log = time.perf_counter(), step
          first = t_log - t_start + memory_report.compile_s
          reporter.log(f'first step (with compilation) took {first:.1f}s')
          reporter.restart_clock(step)
        if step % cfg.log_every == 0 or step == cfg.steps:
          summary = summarize(acc)
          now = time.perf_counter()
          if step > s_log and run.cost is not None:
            summary.update(run.cost.rates(step - s_log, now - t_log))
          acc, t_log, s_log = None, now, step
          skipped, halt = watch.check()
          if skipped:
            summary['nonfinite_skipped'] = float(skipped)
          reporter.write(step, 'train', summary)
          reporter.progress(step, summary)
          if skipped:
            reporter.log(
              f'warning: {skipped} update(s) with a non-finite loss or gradients were not '
              f'applied by step {step} ({watch.total} in all)'
            )
          if halt:
            checkpointer.save(step, state, train_iter, run.meta)
            checkpointer.wait()
            raise NonFiniteError(
              f'{halt}; the last good parameters are saved in {checkpointer.step_dir(step)}: '
              'lower optim.lr, set optim.clip_norm, or check the data, then rerun to resume '
              '(train.nonfinite=skip goes on past isolated bad steps)'
            )
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
          result = run.evaluate(state)
          reporter.write(step, 'eval', result)
          reporter.log(f'eval at step {step}: {_format(result)}')
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
          checkpointer.save(step, state, train_iter, run.meta)
          saved_step = step
        stopped = step < cfg.steps and stop.should_stop(step)
      run.stopped = stopped
      if stopped:
        if saved_step != step:
          checkpointer.save(step, state, train_iter, run.meta)
        checkpointer.wait()
        reporter.log(
          f'{stop.reason}: stopped at step {step}; checkpoint saved in '
          f'{checkpointer.directory}; run the same command again to resume'
        )
      else:
        final = run.evaluate(state)
        reporter.write(step, 'eval', final)
        reporter.log(f'final eval at step {step} on {run.data.eval_split!r}: {_format(final)}')
  finally:
    # Also on an error: the save in flight is committed (and sealed) before the exit.
    try:
      checkpointer.wait()
      checkpointer.close()
    finally:
      reporter.close()
      if run.run_lock is not None:
        run.run_lock.release()
  if jax.process_index() == 0 and os.path.getsize(os.path.join(run.workdir, 'metrics.jsonl')):
    plot_curves(run.workdir)
  return final


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, tty: bool | None = None
) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns final eval."""
  return train(build_run(config, workdir), tty=tty)
