"""Preemption on many hosts: a SIGTERM that reaches only one process stops every process
after the same step, with one committed checkpoint, and resuming equals not stopping.

Two CPU processes (2 devices each) join one mesh through jax.distributed (gloo), as
`tests/train/test_train_e2e.py::test_two_processes_train_one_global_batch` does.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bigjax.train.cli import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, 'train.py')
CONFIG = os.path.join(ROOT, 'configs', 'mlp_digits.py')
TIMEOUT = 240  # a deadlocked pair never finishes: fail instead of hanging


def _launch(workdir, data_dir, steps):
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  return [
    subprocess.Popen(
      [
        sys.executable, TRAIN, '--config', CONFIG + ':test', '--workdir', workdir,
        f'--config.data.data_dir={data_dir}', f'--config.train.steps={steps}',
        '--config.schedule.name=constant', '--config.train.log_every=1',
        '--config.train.eval_every=0', '--config.train.checkpoint_every=1000000',
        '--config.train.stop_check_every=2', '--config.allow_changes=true', '--distributed',
        f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}',
      ],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for i in range(2)
  ]  # fmt: skip


def _finish(procs):
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail('the processes did not finish: deadlock')
  return [p.returncode for p in procs], outs


def _params(workdir):
  from bigjax.train.loop import restore_from_workdir

  _, _, variables = restore_from_workdir(workdir)
  return jax.tree.leaves(jax.device_get(variables['params']))


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_one_step(tmp_path, data_dir):
  from bigjax.data.pipeline import Data

  config, _ = load_config(CONFIG + ':test')
  config.data.data_dir = data_dir
  Data(config.data)  # prepare the data set once, before two processes race to build it

  stopped = str(tmp_path / 'stopped')
  procs = _launch(stopped, data_dir, 10**6)
  metrics = os.path.join(stopped, 'metrics.jsonl')
  deadline = time.time() + TIMEOUT
  while time.time() < deadline:
    if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 5:
      break
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # only the process that does not report
  codes, outs = _finish(procs)
  assert codes == [75, 75], outs  # EXIT_STOPPED on both: saved, not finished
  assert 'SIGTERM on another process: stopped at step' in outs[0], outs[0]
  steps = [int(s) for s in os.listdir(os.path.join(stopped, 'checkpoints')) if s.isdigit()]
  assert len(steps) == 1, steps
  k = steps[0]
  assert k % 2 == 0  # the processes agree at the steps where they exchange their flags
  data_state = os.listdir(os.path.join(stopped, 'checkpoints', str(k), 'data'))
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= set(data_state)

  target = k + 3
  codes, outs = _finish(_launch(stopped, data_dir, target))
  assert codes == [0, 0], outs
  assert f'resuming from the checkpoint at step {k}' in outs[0]
  uninterrupted = str(tmp_path / 'uninterrupted')
  codes, outs = _finish(_launch(uninterrupted, data_dir, target))
  assert codes == [0, 0], outs
  a, b = _params(uninterrupted), _params(stopped)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert np.array_equal(x, y), 'resumed parameters differ from the uninterrupted run'
