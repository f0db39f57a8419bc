"""Process-wide settings a run asks for: XLA flags and the persistent compilation cache.

Both act on the whole process, not on one jitted function, so they are applied once, before
anything compiles: `train.xla_flags` only while jax's backend is not yet initialised (XLA
reads XLA_FLAGS once, when the backend starts), `train.compilation_cache_dir` any time
before the train step compiles.
"""

import os

import jax


def _backend_started() -> bool:
  """Whether jax has initialised its backends (after which XLA_FLAGS are read)."""
  try:
    from jax._src import xla_bridge
  except ImportError:  # pragma: no cover - a jax that moved it: assume the worst
    return True
  check = getattr(xla_bridge, 'backends_are_initialized', None)
  return True if check is None else bool(check())


def add_xla_flags(flags: str) -> None:
  """Appends `flags` to XLA_FLAGS; a no-op when they are already there. Raises ValueError
  (one line) when jax's backend already started, since XLA would silently ignore them."""
  flags = ' '.join(flags.split())
  if not flags:
    return
  current = os.environ.get('XLA_FLAGS', '')
  missing = [f for f in flags.split() if f not in current.split()]
  if not missing:
    return
  if _backend_started():
    raise ValueError(
      f'train.xla_flags={flags!r} cannot take effect: jax already initialised its backend in '
      'this process; set XLA_FLAGS in the environment before starting Python instead'
    )
  os.environ['XLA_FLAGS'] = ' '.join([*current.split(), *missing])


def set_compilation_cache(path: str) -> None:
  """Turns on jax's persistent compilation cache in `path` for every compiled program (no
  minimum compile time or size), so a rerun of the same program loads instead of compiling.
  '' leaves the cache as it is."""
  if not path:
    return
  path = os.path.abspath(os.path.expanduser(path))
  os.makedirs(path, exist_ok=True)
  if jax.config.jax_compilation_cache_dir == path:
    return
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  # The cache is set up at the first compilation; one that ran before this call (in a test
  # session, a notebook) fixed it to none, so start it afresh.
  from jax.experimental.compilation_cache import compilation_cache

  compilation_cache.reset_cache()


def apply(train) -> None:
  """Applies `train.xla_flags` and `train.compilation_cache_dir` (a config section with
  `.get`); missing keys mean off."""
  add_xla_flags(str(train.get('xla_flags', '') or ''))
  set_compilation_cache(str(train.get('compilation_cache_dir', '') or ''))
