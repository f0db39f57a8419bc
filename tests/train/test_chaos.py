"""The chaos harness in its short form: train.py (with Grain worker processes) killed with
SIGKILL at random moments (one of them while a checkpoint is being written) and restarted
ends bit for bit where an uninterrupted run ends, with every checkpoint readable, none set
aside, and every logged step once.
The long form (50 kills over four families) is `bench/chaos.py`; its numbers are in the
README."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_hard_kills_at_random_moments_lose_nothing(tmp_path, data_dir):
  out = tmp_path / 'chaos.json'
  cmd = [
    sys.executable, os.path.join(ROOT, 'bench', 'chaos.py'), '--configs', 'mlp_digits',
    '--kills', '6', '--steps', '24', '--seed', '1', f'--data_dir={data_dir}',
    '--out', str(tmp_path / 'runs'), '--json', str(out),
  ]  # fmt: skip
  env = {**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': ''}
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  result = json.loads(out.read_text())
  run = result['configs']['mlp_digits']
  assert sum(run['kills'].values()) == 6 and run['kills']['checkpoint'] >= 1, run
  assert result['workers'] == 2  # every kill lands while Grain's workers run
  assert run['equal'] and run['metrics_ok'] and not run['unreadable'], run
  assert run['restarts'] >= 6 and not run['problems'] and not run['damaged'], run


def _children(pid: int) -> list[int]:
  found = []
  for name in os.listdir('/proc'):
    try:
      with open(f'/proc/{name}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
      continue
    if name.isdigit() and int(fields[1]) == pid:
      found.append(int(name))
  return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs /proc')
def test_a_kill_of_train_py_alone_takes_its_grain_workers_with_it(tmp_path, data_dir):
  """An out-of-memory kill hits train.py, not its process group: its Grain workers (blocked
  on a full queue) must not live on holding their memory."""
  workdir = tmp_path / 'run'
  argv = [
    sys.executable, os.path.join(ROOT, 'train.py'), '--config',
    os.path.join(ROOT, 'configs', 'mlp_digits.py') + ':test', '--workdir', str(workdir),
    f'--config.data.data_dir={data_dir}', '--config.train.steps=1000000',
    '--config.train.checkpoint_every=20', '--config.train.eval_every=0',
    '--config.data.workers=2',
  ]  # fmt: skip
  log = tmp_path / 'stderr.txt'  # a file, not a pipe: workers left alive would hold a pipe open
  with open(log, 'w') as err:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
  folder = workdir / 'checkpoints'
  deadline = time.time() + 240
  while not (folder.is_dir() and any(n.isdigit() for n in os.listdir(folder))):
    if proc.poll() is not None or time.time() > deadline:
      proc.kill()
      proc.wait()
      pytest.fail(f'no checkpoint: {log.read_text()[-2000:]}')
    time.sleep(0.05)
  children = _children(proc.pid)
  assert len(children) >= 2, children  # the two workers (and multiprocessing's tracker)
  proc.kill()
  proc.wait()
  deadline = time.time() + 20
  while (alive := [c for c in children if os.path.exists(f'/proc/{c}')]) and time.time() < deadline:
    time.sleep(0.1)
  for pid in alive:  # do not leave them behind if the assertion fails
    os.kill(pid, signal.SIGKILL)
  assert not alive, f'processes of the killed run still alive: {alive}'
