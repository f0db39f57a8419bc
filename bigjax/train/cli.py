"""Command line: `train.py --config configs/X.py[:arg] --workdir DIR [--config.key=value]`.

Bad input ends with a one-line message and exit code 2 (the traceback with --verbose).
"""

import argparse
import ast
import difflib
import importlib.util
import os
import sys
import traceback

import ml_collections

USAGE = (
  'train.py [--config configs/X.py[:arg]] [--workdir DIR] [--config.key=value ...] '
  '[--verbose] [--distributed [--coordinator_address H:P --num_processes N --process_id I]]'
)


# The exit code of a run stopped by SIGTERM / SIGINT after saving its checkpoint: not 0, so
# a scheduler does not count an unfinished run as done (75 is EX_TEMPFAIL, "try again").
EXIT_STOPPED = 75
# The exit code of a run halted on a non-finite loss or gradients (train.nonfinite).
EXIT_NONFINITE = 3
# The exit code of a run that could not write (a checkpoint, its logs): a full disk, a
# folder that turned read-only (74 is EX_IOERR); the newest committed checkpoint is intact.
EXIT_IO = 74


class UsageError(ValueError):
  """A command-line mistake."""


def load_config(spec: str) -> tuple[ml_collections.ConfigDict, str]:
  """'path/to/file.py[:arg]' -> (get_config(arg), run name).

  The folder above the config's folder is on `sys.path` only while the file loads (so
  configs can `from configs import common`), never for the rest of the run: a file there
  named like a dependency must not shadow it. A syntax or import error in the file, or an
  exception in its get_config, is a one-line UsageError naming the file and line.
  """
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file {path!r} does not exist: see the files in configs/')
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  added = root not in sys.path
  if added:
    sys.path.insert(0, root)
  name = os.path.splitext(os.path.basename(path))[0]
  try:
    module_spec = importlib.util.spec_from_file_location(f'_bigjax_config_{name}', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, 'get_config'):
      raise UsageError(f'{path} has no get_config(arg=None) function')
    config = module.get_config(arg or None)
  except SyntaxError as e:
    raise UsageError(f'{path}:{e.lineno}: syntax error ({e.msg}): fix the config file') from None
  except (UsageError, ValueError):
    raise
  except Exception as e:  # noqa: BLE001 - any error of the user's file becomes one line
    line = next(
      (f.lineno for f in reversed(traceback.extract_tb(e.__traceback__)) if f.filename == path),
      None,
    )
    where = f'{path}:{line}' if line else path
    raise UsageError(
      f'{where}: loading the config failed with {type(e).__name__}: {e} (fix the config file; '
      'configs import only ml_collections and configs.common)'
    ) from None
  finally:
    if added:
      sys.path.remove(root)
  if not isinstance(config, ml_collections.ConfigDict):
    raise UsageError(f'{path}: get_config returned {type(config).__name__}, not a ConfigDict')
  return config, name + (f'_{arg}' if arg else '')


def _parse_value(text: str, current, key: str):
  """Parses `text` into the type of the value it replaces."""
  if isinstance(current, bool):
    if text.lower() in ('true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise UsageError(f'--config.{key} expects true or false, got {text!r}')
  if isinstance(current, (int, float)) and not isinstance(current, bool):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = None
    if isinstance(value, int) and isinstance(current, float):
      value = float(value)
    if not isinstance(value, type(current)) or isinstance(value, bool):
      raise UsageError(
        f'--config.{key} expects {type(current).__name__}, got {text!r} (current value {current!r})'
      )
    return value
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise UsageError(f'--config.{key} expects a tuple like (1, 2), got {text!r}') from None
    value = value if isinstance(value, (tuple, list)) else (value,)
    return type(current)(value)
  if current is None or isinstance(current, str):
    return text
  raise UsageError(f'--config.{key} cannot be set from the command line ({type(current)})')


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets config.<key> (dotted) from a string, refusing unknown keys with a close match."""
  node, parts = config, key.split('.')
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      prefix = '.'.join(parts[:i])
      candidates = [f'{prefix}.{k}' if prefix else k for k in keys]
      close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
      hint = (
        f'did you mean --config.{close[0]}?'
        if close
        else (f'known keys here: {", ".join(sorted(candidates))}')
      )
      raise UsageError(f'unknown config key --config.{key}: {hint}')
    if i < len(parts) - 1:
      node = node[part]
  last = parts[-1]
  current = node[last]
  if isinstance(current, ml_collections.ConfigDict):
    raise UsageError(f'--config.{key} is a section: set one of its keys, e.g. --config.{key}.x')
  value = _parse_value(text, current, key)
  if current is None:  # placeholders (e.g. data_dir) accept a string
    with node.unlocked():
      node[last] = value
  else:
    node[last] = value


def parse_args(argv: list[str], default_config: str | None):
  parser = argparse.ArgumentParser(prog='train.py', usage=USAGE)
  parser.add_argument('--config', default=default_config, help='configs/X.py[:arg]')
  parser.add_argument('--workdir', default=None, help='default: runs/<config name>/')
  parser.add_argument('--verbose', action='store_true', help='show tracebacks')
  parser.add_argument(
    '--distributed',
    action='store_true',
    help='call jax.distributed.initialize() (multi-host runs); on SLURM, Open MPI and '
    'cloud TPU the next three flags are detected',
  )
  parser.add_argument('--coordinator_address', default=None, help='host:port of process 0')
  parser.add_argument('--num_processes', type=int, default=None)
  parser.add_argument('--process_id', type=int, default=None)
  args, rest = parser.parse_known_args(argv)
  overrides = []
  i = 0
  while i < len(rest):
    item = rest[i]
    if not item.startswith('--config.'):
      raise UsageError(f'unknown argument {item!r}; usage: {USAGE}')
    if '=' in item:
      key, value = item[len('--config.') :].split('=', 1)
    elif i + 1 < len(rest):
      key, value = item[len('--config.') :], rest[i + 1]
      i += 1
    else:
      raise UsageError(f'{item} needs a value: {item}=VALUE')
    overrides.append((key, value))
    i += 1
  if args.config is None:
    raise UsageError(f'no --config given; usage: {USAGE}')
  return args, overrides


def main(argv: list[str] | None = None, *, default_config: str | None = None) -> int:
  """Runs training from command-line arguments; returns the process exit code."""
  argv = sys.argv[1:] if argv is None else argv
  verbose = '--verbose' in argv
  try:
    args, overrides = parse_args(argv, default_config)
    config, name = load_config(args.config)
    for key, value in overrides:
      apply_override(config, key, value)
    config.lock()
    from bigjax.train import runtime

    runtime.apply(config.train)  # XLA_FLAGS must be set before jax starts its backend
    if args.distributed:
      import jax

      jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
      )
    from bigjax.train.loop import NonFiniteError, build_run, train

    workdir = args.workdir or os.path.join('runs', name)
    run = build_run(config, workdir)
    try:
      train(run)
    except NonFiniteError as e:
      print(f'error: {e}', file=sys.stderr)
      return EXIT_NONFINITE
    except OSError as e:  # while training: the disk, not the input
      if verbose:
        raise
      print(f'error: {_io_message(e, run)}', file=sys.stderr)
      return EXIT_IO
    if run.stopped:
      return EXIT_STOPPED
  except (ValueError, TypeError, KeyError, AttributeError, OSError) as e:
    if verbose:
      raise
    if isinstance(e, (TypeError, KeyError, AttributeError)) and not _is_config_error(e):
      raise
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f'error: {message}', file=sys.stderr)
    return 2
  return 0


def _io_message(e: OSError, run) -> str:
  """One line for an I/O error during training, saying which checkpoint is safe."""
  from bigjax.train.checkpoint import CheckpointError

  if isinstance(e, CheckpointError):
    return str(e)
  steps = run.checkpointer.committed_steps()
  safe = f'the checkpoint at step {steps[-1]} is intact' if steps else 'no checkpoint was committed'
  where = f' ({e.filename})' if e.filename else ''
  return (
    f'could not write in {run.workdir}{where}: {e.strerror or e}; {safe}: free disk space or '
    'make the folder writable, then run the same command to resume'
  )


def _is_config_error(e: Exception) -> bool:
  """ml_collections raises TypeError / KeyError / AttributeError for bad config edits."""
  tb = e.__traceback__
  while tb is not None:
    if 'ml_collections' in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False
