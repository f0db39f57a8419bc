"""Will it fit: the compiled train step's memory per device, before the first step.

`prepare(run, train_iter)` compiles the train step ahead of time (`jit(...).lower(...)
.compile()`) at the shapes and shardings the loop will give it: the abstract state
(`run.abstract`, each leaf a ShapeDtypeStruct with its sharding), one train batch's shapes
at train.batch_size with the batch sharding, the step key and `run.frozen`. The loop then
calls that executable for every step (one compilation, as before). XLA's memory analysis of
the compiled program (`compiled.memory_analysis()`, per device: an SPMD program is the
same on every device) gives its argument, output, aliased and temporary bytes; the report
splits the arguments into parameters, optimiser state, model state and batch from the
shardings (`leaf.sharding.shard_shape`), and sets the total against the device's memory.

The estimate of the peak on one device is the larger of the step's

  arguments + outputs - aliased + temporaries + generated code

and, for a fresh state (no checkpoint to resume), its initialisation's outputs plus
temporaries (`Run.init_fn` compiled ahead of time too, the same executable
`Run.initial_state` then runs; the initialisers' random numbers can outweigh a small
step). A donated state (train.donate) is updated in place: its outputs alias its inputs and
count once. Temporaries are XLA's buffer assignment for activations, gradients and the
optimiser's intermediate values. On a CPU, measured as the growth of the process's peak
resident memory while the state is created and two steps run, the estimate is within 10%
for an MLP, a ResNet-18 and a GPT (tests/train/test_plan.py). Evaluation (forward only,
train.eval_batch_size) is not part of it.

The device's memory: `device.memory_stats()['bytes_limit']` where the backend reports it
(GPU, TPU: the pool XLA's allocator may use, on a GPU 75% of the card unless
XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise); on a CPU the host's physical memory shared
by its local devices; or `train.device_memory_gb` when set (> 0). A run whose estimate
exceeds it stops before the first step (before any state exists or anything is saved) with
a one-line ValueError that names the estimate, the limit and the changes that would fit,
computed from the same analysis (`changes`; savings of two kinds add up):
  mesh.fsdp=N          parameters and optimiser state sharded N ways (the batch per device
                       stays: data shrinks as fsdp grows); offered while fsdp is 1
  grad_accum_steps=k   the activations of a micro-batch of train.batch_size / k (plus the
                       gradient sum it carries)
  train.batch_size=b   the same, with a smaller update batch
  model.remat=True     for models with that option: the step compiled once more with it
Bytes per example of the activations come from the step compiled once more at half (or
twice) the batch; that line picks the candidates, and each grad_accum_steps or batch_size
candidate offered alone is then checked by compiling the step at the batch it implies.
Those compilations happen only for a run that does not fit. The least change of each kind
that fits alone is offered; else the least pair with fsdp (from the line, unchecked); else
the closest. Under fsdp the estimate assumes the sharding rules shard every parameter.
"""

import dataclasses
import os
import time
from typing import Callable

import jax
import numpy as np

from bigjax.train import sharding
from bigjax.typing import PyTree

GB = 1e9


def _human(n: float) -> str:
  for unit, size in (('GB', 1e9), ('MB', 1e6), ('KB', 1e3)):
    if abs(n) >= size:
      return f'{n / size:.3g} {unit}'
  return f'{int(n)} B'


def device_bytes(tree: PyTree) -> int:
  """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs with a sharding; a leaf
  without one counts whole)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = tuple(np.shape(leaf))
    sh = getattr(leaf, 'sharding', None)
    if sh is not None:
      shape = tuple(sh.shard_shape(shape))
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
  return total


def host_memory() -> int:
  """Physical memory of this host, in bytes."""
  return int(os.sysconf('SC_PAGE_SIZE')) * int(os.sysconf('SC_PHYS_PAGES'))


def device_memory(devices, override_gb: float = 0.0) -> tuple[int, str]:
  """(bytes one device can hold, where that number comes from)."""
  if override_gb > 0:
    return int(override_gb * GB), 'train.device_memory_gb'
  limits = []
  for d in devices:
    stats = d.memory_stats() if hasattr(d, 'memory_stats') else None
    if stats and stats.get('bytes_limit'):
      limits.append(int(stats['bytes_limit']))
  if limits:
    return min(limits), f'{devices[0].device_kind} memory_stats bytes_limit'
  local = max(jax.local_device_count(), 1)
  return host_memory() // local, f'host memory / {local} local device(s)'


@dataclasses.dataclass(frozen=True)
class MemoryReport:
  """Bytes per device of one compiled train step (see the module docstring)."""

  params: int
  opt_state: int
  model_state: int
  batch: int
  frozen: int
  arguments: int
  outputs: int
  aliased: int
  temp: int
  code: int
  limit: int
  limit_source: str
  devices: int
  compile_s: float = 0.0
  init_peak: int = 0  # a fresh state's initialisation (0 when resuming from a checkpoint)
  analysed: bool = True  # False: the backend gave no memory analysis (nothing is checked)

  @property
  def step_peak(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temp + self.code

  @property
  def total(self) -> int:
    return max(self.step_peak, self.init_peak)

  @property
  def fits(self) -> bool:
    return not self.analysed or self.total <= self.limit

  def lines(self) -> list[str]:
    """The report, a few lines for the log."""
    if not self.analysed:
      return ['memory per device: this backend gives no memory analysis of the train step']
    state = _human(self.params) + ' parameters, ' + _human(self.opt_state) + ' optimizer state'
    if self.model_state:
      state += ', ' + _human(self.model_state) + ' model state'
    if self.frozen:
      state += ', ' + _human(self.frozen) + ' frozen (teacher)'
    new_out = self.outputs - self.aliased
    init = f', initialisation {_human(self.init_peak)}' if self.init_peak else ''
    return [
      f'memory per device (compiled train step, {self.devices} device(s), compiled in '
      f'{self.compile_s:.1f}s): {state}, {_human(self.batch)} batch',
      f'  activations and temporaries {_human(self.temp)}, outputs not updated in place '
      f'{_human(new_out)}, generated code {_human(self.code)}',
      f'  estimated peak {_human(self.total)} (step {_human(self.step_peak)}{init}) of '
      f'{_human(self.limit)} '
      f'({self.total / max(self.limit, 1):.1%}; {self.limit_source}): '
      + ('fits' if self.fits else 'DOES NOT FIT'),
    ]


def abstract_batch(local: PyTree, mesh) -> PyTree:
  """ShapeDtypeStructs of the global batch made from one host-local batch."""
  batch_sh = sharding.batch_sharding(mesh)
  count = jax.process_count()
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(
      (np.shape(x)[0] * count, *np.shape(x)[1:]), np.dtype(x.dtype), sharding=batch_sh
    ),
    local,
  )


def peek_batch(train_iter) -> PyTree:
  """The next batch of a checkpointable (Grain) iterator, leaving the iterator where it was."""
  before = train_iter.get_state()
  batch = next(train_iter)
  train_iter.set_state(before)
  return batch


def compile_step(run, batch: PyTree):
  """The train step of `run`, compiled ahead of time for `batch` (ShapeDtypeStructs)."""
  return run.train_step.lower(run.abstract, batch, run.step_rng(), run.frozen).compile()


def init_peak(run) -> int:
  """Peak bytes per device of initialising a fresh state (its outputs and temporaries,
  the random numbers of the initialisers): `run.init_fn` compiled ahead of time, which
  `Run.initial_state` then reuses from jax's cache."""
  stats = run.init_fn.lower(jax.random.key(0)).compile().memory_analysis()
  if stats is None:
    return 0
  return int(
    stats.argument_size_in_bytes
    + stats.output_size_in_bytes
    + stats.temp_size_in_bytes
    + stats.generated_code_size_in_bytes
  )


_NO_STATS = type(
  'NoStats',
  (),
  dict.fromkeys(
    [
      'argument_size_in_bytes',
      'output_size_in_bytes',
      'alias_size_in_bytes',
      'temp_size_in_bytes',
      'generated_code_size_in_bytes',
    ],
    0,
  ),
)


def analyse(
  run, compiled, batch: PyTree, compile_s: float = 0.0, *, fresh: bool = True
) -> MemoryReport:
  """The report of `compiled` (run.train_step compiled for `batch`); `fresh`: the state
  will be initialised (not restored), so initialisation's peak counts too."""
  stats = compiled.memory_analysis()
  analysed = stats is not None
  if not analysed:
    stats = _NO_STATS
  limit, source = device_memory(
    run.mesh.local_devices, float(run.config.train.get('device_memory_gb', 0.0) or 0.0)
  )
  abstract = run.abstract
  return MemoryReport(
    params=device_bytes(abstract.params),
    opt_state=device_bytes(abstract.opt_state),
    model_state=device_bytes(abstract.model_state),
    batch=device_bytes(batch),
    frozen=device_bytes(run.frozen),
    arguments=int(stats.argument_size_in_bytes),
    outputs=int(stats.output_size_in_bytes),
    aliased=int(stats.alias_size_in_bytes),
    temp=int(stats.temp_size_in_bytes),
    code=int(stats.generated_code_size_in_bytes),
    limit=limit,
    limit_source=source,
    devices=run.mesh.devices.size,
    compile_s=compile_s,
    init_peak=init_peak(run) if fresh and analysed else 0,
    analysed=analysed,
  )


def plan(run, local_batch: PyTree):
  """(the compiled train step, its MemoryReport) for batches shaped like `local_batch`."""
  batch = abstract_batch(local_batch, run.mesh)
  start = time.perf_counter()
  compiled = compile_step(run, batch)
  fresh = run.checkpointer.latest_step() is None
  report = analyse(run, compiled, batch, time.perf_counter() - start, fresh=fresh)
  return compiled, report


# --- what would fit --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Change:
  """One setting and the bytes per device it saves in the step and in initialisation."""

  setting: str
  step_saving: float
  init_saving: float = 0.0


def estimate(report: MemoryReport, changes: tuple[Change, ...] = ()) -> int:
  """The estimated peak per device with `changes` applied (their savings add up)."""
  step = report.step_peak - sum(c.step_saving for c in changes)
  init = report.init_peak - sum(c.init_saving for c in changes) if report.init_peak else 0
  return int(max(step, init))


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def _temp_at(run, local_batch: PyTree, global_size: int) -> int:
  """Temporary bytes per device of the step compiled for a global batch of `global_size`."""
  count = jax.process_count()
  local = global_size // count
  shapes = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct((local, *np.shape(x)[1:]), np.asarray(x).dtype), local_batch
  )
  return int(
    compile_step(run, abstract_batch(shapes, run.mesh)).memory_analysis().temp_size_in_bytes
  )


def _activation_slope(run, local_batch: PyTree, report: MemoryReport) -> float:
  """Temporary bytes per device per example of the update batch: the step compiled once
  more at half the batch (twice it when it cannot be halved)."""
  size = int(run.config.train.batch_size)
  unit = int(run.config.optim.get('grad_accum_steps', 1)) * sharding.batch_shards(run.mesh)
  unit *= jax.process_count()
  other = size // 2 if (size // 2) % unit == 0 and size // 2 > 0 else 2 * size
  return max((report.temp - _temp_at(run, local_batch, other)) / (size - other), 0.0)


def _remat_saving(run, batch: PyTree, report: MemoryReport) -> Change | None:
  """model.remat=True (recompute each block's activations in the backward pass), when the
  model has that option and does not use it: the step compiled once more with it."""
  from bigjax.registry import model_spec
  from bigjax.train.step import make_train_step
  from bigjax.train.workdir import build_model

  config = run.config
  cls, _ = model_spec(config.model.name)
  fields = getattr(cls, '__dataclass_fields__', {})
  if 'remat' not in fields or config.model.get('remat') or config.model.get('remat_policy'):
    return None
  if config.get('distill', {}).get('teacher', '') or run.term_init is not None:
    return None  # the step's extra loss terms live in build_run only
  changed = config.copy_and_resolve_references()
  with changed.unlocked():
    changed.model.remat = True
  step = make_train_step(build_model(changed), run.task, changed, run.schedule, run.tx)
  donate = 0 if config.train.get('donate', True) else ()
  try:
    lowered = jax.jit(step, donate_argnums=donate).lower(
      run.abstract, batch, run.step_rng(), run.frozen
    )
  except (TypeError, ValueError):  # a model whose remat changes its parameters' layout
    return None
  temp = int(lowered.compile().memory_analysis().temp_size_in_bytes)
  if temp >= report.temp:
    return None
  known = 'remat' in config.model
  setting = '--config.model.remat=true' if known else 'model.remat=True (in the config file)'
  return Change(setting, report.temp - temp)


def changes(run, local_batch: PyTree, report: MemoryReport) -> dict[str, list[Change]]:
  """{kind: [Change, least change first]} of the settings that shrink the peak, each one
  the device count and the batch allow."""
  cfg = run.config
  found: dict[str, list[Change]] = {}
  state = report.params + report.opt_state
  mesh = run.mesh.shape
  devices = run.mesh.devices.size
  others = mesh['tensor'] * mesh['expert']
  if mesh['fsdp'] == 1 and devices % others == 0:
    # With data=-1 the batch per device stays: it shards over data x fsdp x expert.
    found['fsdp'] = [
      Change(f'--config.mesh.fsdp={n}', state - state / n, state - state / n)
      for n in _divisors(devices // others)[1:]
    ]
  size = int(cfg.train.batch_size)
  accum = int(cfg.optim.get('grad_accum_steps', 1))
  shards = sharding.batch_shards(run.mesh) * jax.process_count()
  slope = _activation_slope(run, local_batch, report)
  if slope > 0:
    activations = slope * size
    # k micro-batches hold the activations of size / k examples; going from 1 to k adds the
    # gradient sum the scan carries (the parameters' size).
    found['grad_accum_steps'] = [
      Change(
        f'--config.optim.grad_accum_steps={k}',
        activations * (1 - accum / k) - (report.params if accum == 1 else 0),
      )
      for k in _divisors(size // shards)
      if k > accum
    ]
    found['batch_size'] = [
      Change(f'--config.train.batch_size={b}', (slope + report.batch / size) * (size - b))
      for b in range(size - shards * accum, 0, -shards * accum)
    ]
  remat = _remat_saving(run, abstract_batch(local_batch, run.mesh), report)
  if remat is not None:
    found['remat'] = [remat]
  return found


def _compiled_change(run, local_batch: PyTree, report: MemoryReport, change: Change) -> Change:
  """`change` (grad_accum_steps=k or batch_size=b) with its saving from the step compiled
  at the batch it implies: b, or train.batch_size / k per micro-batch."""
  size = int(run.config.train.batch_size)
  accum = int(run.config.optim.get('grad_accum_steps', 1))
  value = int(change.setting.rpartition('=')[2])
  if change.setting.startswith('--config.train.batch_size='):
    temp = _temp_at(run, local_batch, value)
    return Change(change.setting, report.temp - temp + report.batch * (size - value) / size)
  # k micro-batches of size / k: the step at a batch of size * accum / k runs micro-batches
  # of that size under the current accum; from 1 to k add the gradient sum the scan carries.
  temp = _temp_at(run, local_batch, size * accum // value)
  return Change(change.setting, report.temp - temp - (report.params if accum == 1 else 0))


def suggestions(
  run, local_batch: PyTree, report: MemoryReport
) -> tuple[list[tuple[str, int]], bool]:
  """([(a change, the estimated peak with it)], whether they fit). The least change of each
  kind that fits alone; else the least pair of fsdp and another kind that fits; else the
  single change or pair that comes closest."""
  found = changes(run, local_batch, report)
  fits = lambda cs: estimate(report, cs) <= report.limit  # noqa: E731
  singles = []
  for kind, options in found.items():
    # The linear model of the activations picks the candidates; a batch-size change is then
    # checked by compiling the step at its batch (a few candidates at most).
    candidates = [c for c in options if fits((c,))]
    if kind in ('grad_accum_steps', 'batch_size'):
      candidates = [_compiled_change(run, local_batch, report, c) for c in candidates[:3]]
    first = next((c for c in candidates if fits((c,))), None)
    if first is not None:
      singles.append((first.setting, estimate(report, (first,))))
  if singles:
    return singles, True
  pairs = [
    (a, b)
    for a in found.get('fsdp', [])
    for kind, options in found.items()
    if kind != 'fsdp'
    for b in options
  ]
  for a, b in pairs:  # the smallest fsdp first, then the least change of the other
    if fits((a, b)):
      return [(f'{a.setting} {b.setting}', estimate(report, (a, b)))], True
  tries = [(c,) for options in found.values() for c in options] + pairs
  if not tries:
    return [], False
  best = min(tries, key=lambda cs: estimate(report, cs))
  return [(' '.join(c.setting for c in best), estimate(report, best))], False


def fit_error(run, local_batch: PyTree, report: MemoryReport) -> ValueError:
  """The one-line error of a run that does not fit, with the changes that would fit."""
  options, fit = suggestions(run, local_batch, report)
  head = (
    f'the train step needs an estimated {_human(report.total)} per device but a device has '
    f'{_human(report.limit)} ({report.limit_source})'
  )
  listed = ' or '.join(f'{s} (about {_human(t)})' for s, t in options)
  if fit:
    return ValueError(f'{head}: it would fit with {listed}')
  if options:
    return ValueError(
      f'{head}: no change of mesh.fsdp, optim.grad_accum_steps, train.batch_size or '
      f'model.remat is estimated to fit; the closest is {listed}: use more devices or a '
      'smaller model'
    )
  return ValueError(f'{head}: use more devices or a smaller model')


def prepare(run, train_iter, *, on_fail: Callable[[], None] | None = None):
  """(the compiled train step, its MemoryReport) from the next batch of `train_iter` (left
  where it was). A run that does not fit prints the report (process 0), calls `on_fail`
  (which undoes what building the run wrote) and raises the one-line ValueError."""
  local_batch = peek_batch(train_iter)
  compiled, report = plan(run, local_batch)
  if not report.fits:
    if jax.process_index() == 0:
      print('\n'.join(report.lines()), flush=True)
    error = fit_error(run, local_batch, report)
    if on_fail is not None:
      on_fail()
    raise error
  return compiled, report
