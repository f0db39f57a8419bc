"""One run per workdir: process 0 of a run holds an exclusive `flock` on `<workdir>/.lock`.

A second run started on the same workdir is refused with a one-line error before it writes
anything. The kernel drops a `flock` when its process dies, so a run killed with SIGKILL (or
a lost node, for a local filesystem) leaves no stale lock behind; the file itself stays and
names the last holder. Within one process the lock is re-entrant (tests and notebooks build
several runs on one workdir in turn).
"""

import datetime
import fcntl
import os
import socket

import jax

LOCK_FILE = '.lock'
_HELD: dict[str, 'WorkdirLock'] = {}  # realpath of the workdir -> this process's lock


class WorkdirLock:
  def __init__(self, workdir: str, fd: int | None, created: bool):
    self.workdir, self.fd, self.created = workdir, fd, created

  def mark(self) -> None:
    """Writes who holds the lock (the next refused run names it); done when training starts,
    so a run refused on bad input leaves the file as it found it."""
    if self.fd is not None:
      now = datetime.datetime.now().isoformat(timespec='seconds')
      os.ftruncate(self.fd, 0)
      os.pwrite(self.fd, f'pid {os.getpid()} on {socket.gethostname()} since {now}\n'.encode(), 0)

  def release(self, *, remove: bool = False) -> None:
    """Unlocks; `remove` (a run that never started) also deletes the lock file if this run
    created it."""
    if self.fd is None:
      return
    _HELD.pop(os.path.realpath(self.workdir), None)
    if remove and self.created:
      os.remove(os.path.join(self.workdir, LOCK_FILE))
    fcntl.flock(self.fd, fcntl.LOCK_UN)
    os.close(self.fd)
    self.fd = None


def acquire(workdir: str) -> WorkdirLock:
  """Locks `workdir` for this run, or raises ValueError naming the run that holds it."""
  key = os.path.realpath(workdir)
  if key in _HELD:
    return _HELD[key]
  if jax.process_index() != 0:
    return WorkdirLock(workdir, None, False)
  path = os.path.join(workdir, LOCK_FILE)
  created = not os.path.exists(path)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.read(fd, 200).decode(errors='replace').strip() or 'another process'
    os.close(fd)
    raise ValueError(
      f'workdir {workdir!r} is in use by another run ({holder}): wait for it to finish or '
      'stop it, or pass another --workdir (nothing was changed)'
    ) from None
  lock = _HELD[key] = WorkdirLock(workdir, fd, created)
  return lock
