"""The training loop: data, model, optimiser, mesh, checkpoints, evaluation, reporting.

`train_and_evaluate(config, workdir)` is what `train.py` runs. Re-running it with the same
workdir resumes from the latest committed checkpoint, data iterator included, so the final
parameters equal those of an uninterrupted run.
"""

import json
import os
import signal
import tempfile
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigjax.data.pipeline import Data
from bigjax.registry import create_model, model_spec
from bigjax.train import optim, sharding
from bigjax.train.checkpoint import Checkpointer, fingerprint
from bigjax.train.report import Reporter, plot_curves
from bigjax.train.state import TrainState, init_state
from bigjax.train.step import add_metrics, make_eval_step, make_train_step, summarize
from bigjax.train.tasks import get_task

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def build_model(config: ml_collections.ConfigDict):
  """The model named by `config.model`, with its overrides and the compute dtype."""
  overrides = {k: v for k, v in config.model.items() if k != 'name'}
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  dtype = config.train.get('compute_dtype', 'float32')
  if dtype not in DTYPES:
    raise ValueError(f'unknown train.compute_dtype {dtype!r}; choose one of {list(DTYPES)}')
  cls, _ = model_spec(config.model.name)
  if dtype != 'float32' and 'dtype' in cls.__dataclass_fields__:
    overrides['dtype'] = DTYPES[dtype]  # bf16 compute, fp32 parameters
  return create_model(config.model.name, **overrides)


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


def _abstract_state(model, tx, inputs, mesh) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the state, without allocating it."""
  shapes = jax.eval_shape(lambda rng: init_state(model, tx, rng, inputs), jax.random.key(0))
  repl = sharding.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), shapes)


class _StopSignals:
  """Turns SIGTERM / SIGINT into a flag checked at step boundaries."""

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _format(metrics: dict[str, float]) -> str:
  return ' '.join(f'{k}={v:.4f}' for k, v in metrics.items())


def evaluate(eval_step, state, data: Data, config, mesh) -> dict[str, float]:
  total = None
  for batch in data.eval_batches(config.train.eval_batch_size, config.train.get('eval_steps', -1)):
    total = add_metrics(total, eval_step(state, sharding.global_batch(batch, mesh)))
  return summarize(total) if total is not None else {}


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, tty: bool | None = None
) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns final eval."""
  workdir = os.path.abspath(workdir)
  cfg = config.train
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(cfg.batch_size, mesh, 'train.batch_size')
  sharding.check_batch_size(cfg.eval_batch_size, mesh, 'train.eval_batch_size')
  model = build_model(config)
  check_workdir(workdir)
  if 'workdir' in config.data and not config.data.workdir:
    config.data.workdir = workdir  # datasets that train a tokenizer save it here
  data = Data(config.data)
  task = get_task(data.task)

  schedule, tx = optim.from_config(config)
  example = next(data.eval_batches(sharding.batch_shards(mesh) * jax.process_count(), 1))
  inputs = tuple(np.asarray(x)[:1] for x in task.inputs(example))
  abstract = _abstract_state(model, tx, inputs, mesh)
  meta = fingerprint(config.model.name, abstract.params)
  meta['inputs'] = [[list(x.shape), str(x.dtype)] for x in inputs]

  checkpointer = Checkpointer(workdir, cfg.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is not None:
    checkpointer.check_compatible(latest, meta)  # before anything is written
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))

  seed = config.seed
  init_rng, step_rng = jax.random.split(jax.random.key(seed))
  train_iter = data.train_iter(cfg.batch_size, seed)
  reporter = Reporter(workdir, cfg.steps, latest or 0, tty=tty)
  if latest is not None:
    state = checkpointer.restore(latest, abstract, train_iter)
    reporter.log(f'resuming from the checkpoint at step {latest} in {checkpointer.directory}')
  else:
    init = jax.jit(
      lambda rng: init_state(model, tx, rng, inputs), out_shardings=sharding.replicated(mesh)
    )
    state = init(init_rng)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  reporter.log(
    f'{config.model.name} ({n_params:,} parameters) on {data.config.name} '
    f'[{data.task}], {jax.device_count()} device(s), workdir {workdir}'
  )

  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  train_step = jax.jit(
    make_train_step(model, task, config, schedule, tx),
    in_shardings=(repl, batch_sh, repl),
    out_shardings=(repl, repl),
    donate_argnums=0,
  )
  eval_step = jax.jit(
    make_eval_step(model, task), in_shardings=(repl, batch_sh), out_shardings=repl
  )

  step = int(state.step)
  saved_step = latest
  acc, t_log, s_log = None, time.perf_counter(), step
  final = {}
  with _StopSignals() as stop:
    while step < cfg.steps and stop.received is None:
      batch = sharding.global_batch(next(train_iter), mesh)
      state, metrics = train_step(state, batch, step_rng)
      acc = add_metrics(acc, metrics)
      step += 1
      if step % cfg.log_every == 0 or step == cfg.steps:
        summary = summarize(acc)
        now = time.perf_counter()
        summary['examples_per_sec'] = (step - s_log) * cfg.batch_size / (now - t_log)
        acc, t_log, s_log = None, now, step
        reporter.write(step, 'train', summary)
        reporter.progress(step, summary)
      if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
        result = evaluate(eval_step, state, data, config, mesh)
        reporter.write(step, 'eval', result)
        reporter.log(f'eval at step {step}: {_format(result)}')
      if step % cfg.checkpoint_every == 0 or step == cfg.steps:
        checkpointer.save(step, state, train_iter, meta)
        saved_step = step
    if stop.received is not None:
      if saved_step != step:
        checkpointer.save(step, state, train_iter, meta)
      checkpointer.wait()
      reporter.log(
        f'{stop.received}: stopped at step {step}; checkpoint saved in '
        f'{checkpointer.directory}; run the same command again to resume'
      )
    else:
      final = evaluate(eval_step, state, data, config, mesh)
      reporter.write(step, 'eval', final)
      reporter.log(f'final eval at step {step} on {data.eval_split!r}: {_format(final)}')
  checkpointer.wait()
  checkpointer.close()
  reporter.close()
  if jax.process_index() == 0 and os.path.getsize(os.path.join(workdir, 'metrics.jsonl')):
    plot_curves(workdir)
  return final


def restore_from_workdir(workdir: str):
  """Loads a run's config and latest parameters: (config, model, variables)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{workdir!r} has no config.json: is it a bigjax workdir?')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  checkpointer = Checkpointer(workdir, read_only=True)
  step = checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f'{workdir!r} has no checkpoint yet: train it first')
  meta = checkpointer.meta(step)
  inputs = tuple(np.zeros(shape, dtype) for shape, dtype in meta['inputs'])
  model = build_model(config)
  schedule, tx = optim.from_config(config)
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}))
  abstract = _abstract_state(model, tx, inputs, mesh)
  state = checkpointer.restore(step, abstract)
  checkpointer.close()
  return config, model, state.variables
