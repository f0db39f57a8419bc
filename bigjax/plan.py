"""Will it fit: the memory a training run needs on each device, without training it.

  python -m bigjax.plan --config configs/X.py[:arg] [--config.key=value ...]

Builds the run as train.py would (mesh, model, data, optimiser, the train step's shapes and
shardings), compiles its train step and the state's initialisation ahead of time and prints
the per-device report the training log starts with (bigjax.train.memory): parameters,
optimiser state, model state, batch, activations and temporaries, generated code and the
estimated peak against the device's memory (`train.device_memory_gb` overrides it). Nothing
trains and nothing is written to a workdir: the run is built in a temporary folder, removed
at the end (`--workdir` is accepted so a train.py command line works unchanged, and is not
touched). A data set that is not prepared yet is prepared in its data_dir, as train.py would.

Exit codes:
  0  it fits
  2  bad input (a one-line `error: ...`, as train.py)
  3  it does not fit: the report, then a one-line `error: ...` with the estimate, the limit
     and the change that would fit (train.py stops such a run before its first step with
     exit code 2)
"""

import os
import sys
import tempfile

from bigjax.train import cli

DOES_NOT_FIT = 3


def plan_report(config) -> tuple[list[str], str | None]:
  """(the report's lines, the one-line error when it does not fit, else None) of `config`."""
  from bigjax.train import memory
  from bigjax.train.loop import build_run

  with tempfile.TemporaryDirectory(prefix='bigjax_plan_') as tmp:
    run = build_run(config, os.path.join(tmp, 'run'))
    try:
      train_iter = run.data.train_iter(config.train.batch_size, config.seed)
      local_batch = next(train_iter)
      _, report = memory.plan(run, local_batch)
      error = None if report.fits else str(memory.fit_error(run, local_batch, report))
      return report.lines(), error
    finally:
      run.checkpointer.close()


def main(argv: list[str] | None = None) -> int:
  """Prints the memory report of a config; returns the exit code (see the docstring)."""
  argv = sys.argv[1:] if argv is None else argv
  verbose = '--verbose' in argv
  try:
    args, overrides = cli.parse_args(argv, None)
    if args.distributed:
      raise cli.UsageError(
        'bigjax.plan runs on one host: plan a multi-host run on one of its hosts without '
        '--distributed (the report is per device)'
      )
    config, _ = cli.load_config(args.config)
    for key, value in overrides:
      cli.apply_override(config, key, value)
    config.lock()
    from bigjax.train import runtime

    runtime.apply(config.train)  # XLA_FLAGS before jax starts its backend
    lines, error = plan_report(config)
  except (ValueError, TypeError, KeyError, AttributeError, OSError) as e:
    if verbose:
      raise
    if isinstance(e, (TypeError, KeyError, AttributeError)) and not cli._is_config_error(e):
      raise
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f'error: {message}', file=sys.stderr)
    return 2
  print('\n'.join(lines), flush=True)
  if error is not None:
    print(f'error: {error}', file=sys.stderr)
    return DOES_NOT_FIT
  return 0


if __name__ == '__main__':
  sys.exit(main())
