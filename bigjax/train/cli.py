"""Command line: `train.py --config configs/X.py[:arg] --workdir DIR [--config.key=value]`.

Bad input ends with a one-line message and exit code 2 (the traceback with --verbose).

Many hosts: `jax.distributed.initialize()` runs before anything touches a device when
`--coordinator_address/--num_processes/--process_id` are given, when `--distributed` asks
for it, or when jax's own cluster detection (`jax._src.clusters`: SLURM, Open MPI, Cloud
TPU pods, Kubernetes) finds a job of more than one process. `--single_process` opts out.
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
  '[--verbose] [--distributed | --single_process] '
  '[--coordinator_address H:P --num_processes N --process_id I]'
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
    help='call jax.distributed.initialize() even where no cluster of several processes is '
    'detected (default: only on a detected cluster or with the next three flags)',
  )
  parser.add_argument(
    '--single_process',
    '--no_distributed',
    dest='single_process',
    action='store_true',
    help='never call jax.distributed.initialize(), even inside a detected cluster',
  )
  parser.add_argument('--coordinator_address', default=None, help='host:port of process 0')
  parser.add_argument('--num_processes', type=int, default=None)
  parser.add_argument('--process_id', type=int, default=None)
  parser.add_argument(
    '--cluster',
    default=None,
    help="jax's cluster_detection_method, for the opt-in ones (e.g. mpi4py); implies --distributed",
  )
  args, rest = parser.parse_known_args(argv)
  check_distributed_flags(args)
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


def check_distributed_flags(args) -> None:
  """Refuses contradictory or incomplete multi-host flags (a UsageError, exit code 2)."""
  names = ('coordinator_address', 'num_processes', 'process_id')
  explicit = [f'--{k}' for k in names if getattr(args, k) is not None]
  if args.single_process and (explicit or args.distributed or args.cluster):
    other = ', '.join(
      explicit + ['--distributed'] * args.distributed + ['--cluster'] * bool(args.cluster)
    )
    raise UsageError(
      f'--single_process (--no_distributed) contradicts {other}: pass one or the other'
    )
  if (args.num_processes is None) != (args.process_id is None):
    given, missing = (
      ('--num_processes', '--process_id')
      if args.process_id is None
      else ('--process_id', '--num_processes')
    )
    raise UsageError(f'{given} needs {missing} too (and --coordinator_address H:P)')
  if args.num_processes is not None:
    if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
      raise UsageError(
        f'--process_id={args.process_id} --num_processes={args.num_processes}: the ids of '
        f'N processes are 0 ... N-1'
      )
    if args.coordinator_address is None and not os.environ.get('JAX_COORDINATOR_ADDRESS'):
      raise UsageError('--num_processes and --process_id need --coordinator_address H:P too')
  if args.coordinator_address is not None and ':' not in args.coordinator_address:
    raise UsageError(
      f'--coordinator_address={args.coordinator_address!r} needs a port: host:port of process 0'
    )


def detect_cluster():
  """The cluster environment `jax.distributed.initialize()` would detect, or None: jax's own
  `jax._src.clusters.ClusterEnv` classes (SLURM, Open MPI, Cloud TPU on GCE and GKE,
  Kubernetes) in jax's order, the opt-in ones (mpi4py) aside, as jax does."""
  try:
    from jax._src import clusters
  except ImportError:  # pragma: no cover - a jax that moved it: detect nothing
    return None
  for env in clusters.ClusterEnv._cluster_types:
    if getattr(env, 'opt_in_only_method', False):
      continue
    try:
      present = env.is_env_present()
    except Exception:  # noqa: BLE001 - a probe that fails (metadata server, k8s API) is absent
      present = False
    if present:
      return env
  return None


def distributed_args(args) -> tuple[dict, str] | None:
  """(the arguments for `jax.distributed.initialize`, where they came from), or None for a
  single-process run. Explicit flags win; values they leave out come from the detected
  cluster, whose job must span more than one process unless --distributed forces it."""
  if args.single_process:
    return None
  kwargs = {
    'coordinator_address': args.coordinator_address,
    'num_processes': args.num_processes,
    'process_id': args.process_id,
  }
  if args.cluster:
    kwargs['cluster_detection_method'] = args.cluster
    return kwargs, f'the {args.cluster} cluster (--cluster)'
  if args.num_processes is not None:
    return kwargs, 'the command line'
  env = detect_cluster()
  if env is None:
    if args.distributed or args.coordinator_address:
      raise UsageError(
        'no cluster detected (SLURM, Open MPI, Cloud TPU, Kubernetes) to say how many '
        'processes there are: pass --coordinator_address H:P --num_processes N --process_id I'
      )
    return None
  name = getattr(env, 'name', '') or env.__name__
  forced = args.distributed or args.coordinator_address
  try:
    count = env.get_process_count()
  except Exception as e:  # noqa: BLE001 - e.g. a Kubernetes pod that is not part of a job
    if forced:
      raise
    print(
      f'warning: a {name} environment, but no process count ({type(e).__name__}: {e}); '
      'running as one process (--distributed or --num_processes to join a job)',
      file=sys.stderr,
    )
    return None
  if count <= 1 and not forced:
    return None  # e.g. a SLURM job of one task: nothing to join
  if kwargs['coordinator_address'] is None and not os.environ.get('JAX_COORDINATOR_ADDRESS'):
    kwargs['coordinator_address'] = env.get_coordinator_address(
      timeout_secs=300, override_coordinator_port=os.environ.get('JAX_COORDINATOR_PORT')
    )
  kwargs.update(num_processes=count, process_id=env.get_process_id())
  return kwargs, f'the {name} cluster ({env.__name__})'


def start_distributed(args) -> bool:
  """Calls `jax.distributed.initialize()` when `distributed_args` says so (process 0 says
  which cluster and how many processes); True when it did."""
  found = distributed_args(args)
  if found is None:
    return False
  kwargs, source = found
  import jax

  # local_device_ids stay jax's choice: on SLURM and Open MPI GPUs, the GPU of the process's
  # local rank (one process per GPU); on TPU and CPU, every local device.
  jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v is not None})
  if jax.process_index() == 0:
    print(
      f'distributed: {jax.process_count()} processes from {source}, coordinator '
      f'{kwargs.get("coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS")}',
      flush=True,
    )
  return True


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
    start_distributed(args)  # before anything touches a device
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
