"""I/O faults during training: a checkpoints folder that turns read-only and a disk that
fills up surface as one clear error (exit 74) at the next save, never as success; the
committed checkpoint before them stays intact and readable.

Faults are real: `chattr +i` makes the folder immutable even for root, and a small tmpfs
mounted under the workdir fills up. Where the machine refuses either (no ext4 attributes,
no mount rights) the test is skipped and says why.
"""

import os
import subprocess
import sys
import threading
import time

import grain
import numpy as np
import pytest

from bigjax.train.checkpoint import Checkpointer, CheckpointError, damage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, 'train.py')
CONFIG = os.path.join(ROOT, 'configs', 'mlp_digits.py') + ':test'


def _start(workdir, data_dir):
  argv = [
    sys.executable, TRAIN, '--config', CONFIG, '--workdir', workdir,
    f'--config.data.data_dir={data_dir}', '--config.train.steps=1000000',
    '--config.train.checkpoint_every=20', '--config.train.log_every=10',
    '--config.train.eval_every=0', '--config.schedule.name=constant',
  ]  # fmt: skip
  return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_sealed_checkpoint(proc, workdir, timeout=240):
  """The first checkpoint with its checksums written (committed and sealed)."""
  folder = os.path.join(workdir, 'checkpoints')
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    sealed = [
      int(n)
      for n in (os.listdir(folder) if os.path.isdir(folder) else [])
      if n.isdigit() and os.path.exists(os.path.join(folder, n, 'checksums.json'))
    ]
    if sealed:
      return min(sealed)
    time.sleep(0.01)
  proc.kill()
  pytest.fail(f'no sealed checkpoint: {proc.communicate()[1][-2000:]}')


def _check_failure(proc, workdir, safe_step):
  _, err = proc.communicate(timeout=240)
  assert proc.returncode == 74, err[-3000:]
  line = err.strip().splitlines()[-1]
  assert line.startswith('error: could not ') and 'intact' in line, line
  assert 'run the same command to resume' in line, line
  assert 'final eval' not in err
  return line


def _assert_intact(workdir, step):
  assert damage(os.path.join(workdir, 'checkpoints', str(step))) is None
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    assert step in checkpointer.manager.all_steps()
    assert checkpointer.meta(step)['model'] == 'mlp'
  finally:
    checkpointer.close()


def _immutable_supported(tmp_path):
  probe = tmp_path / 'probe'
  probe.mkdir()
  if subprocess.run(['chattr', '+i', str(probe)], capture_output=True).returncode:
    pytest.skip('chattr +i is not supported on this filesystem')
  subprocess.run(['chattr', '-i', str(probe)], check=True)


def test_a_save_into_a_read_only_folder_fails_at_once(tmp_path):
  """The next save's folder cannot be created: one CheckpointError in seconds. (Orbax
  creates it in a background thread by default, and a failure there left the save waiting
  for a signal that never came, for Orbax's 20-minute timeout.)"""
  _immutable_supported(tmp_path)
  checkpointer = Checkpointer(str(tmp_path / 'run'))
  state = {'w': np.arange(4.0)}
  data = iter(grain.MapDataset.range(10).to_iter_dataset())  # Grain's handler saves blocking
  checkpointer.save(1, state, data, {'model': 'x'})
  checkpointer.wait()
  subprocess.run(['chattr', '+i', checkpointer.directory], check=True)
  outcome = []

  def save():
    try:
      checkpointer.save(2, state, data, {'model': 'x'})
      checkpointer.wait()
      outcome.append(None)
    except Exception as e:  # noqa: BLE001 - recorded and asserted below
      outcome.append(e)

  try:
    thread = threading.Thread(target=save, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), 'the save into a read-only folder hangs'
  finally:
    subprocess.run(['chattr', '-i', checkpointer.directory], check=True)
  (error,) = outcome
  assert isinstance(error, CheckpointError), error
  assert 'the checkpoint at step 1 is intact' in str(error), error
  assert checkpointer.committed_steps() == [1]
  assert damage(checkpointer.step_dir(1)) is None


@pytest.mark.slow
def test_a_checkpoint_folder_that_turns_read_only(tmp_path, data_dir):
  _immutable_supported(tmp_path)
  workdir = str(tmp_path / 'run')
  folder = os.path.join(workdir, 'checkpoints')
  proc = _start(workdir, data_dir)
  first = _wait_for_sealed_checkpoint(proc, workdir)
  subprocess.run(['chattr', '+i', folder], check=True)
  try:
    line = _check_failure(proc, workdir, first)
  finally:
    subprocess.run(['chattr', '-i', folder], check=True)
  saved = sorted(int(n) for n in os.listdir(folder) if n.isdigit())
  assert f'the checkpoint at step {saved[-1]} is intact' in line, (line, saved)
  for step in saved:
    _assert_intact(workdir, step)


@pytest.mark.slow
def test_a_full_disk(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  mounted = subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', 'size=4M', 'tmpfs', str(workdir)], capture_output=True
  )
  if mounted.returncode:
    pytest.skip(f'cannot mount a small tmpfs here: {mounted.stderr.strip()}')
  try:
    proc = _start(str(workdir), data_dir)
    first = _wait_for_sealed_checkpoint(proc, str(workdir))
    with open(workdir / 'filler', 'wb', buffering=0) as f:  # fill the disk
      try:
        while True:
          f.write(b'\0' * 65536)
      except OSError:
        pass
    line = _check_failure(proc, str(workdir), first)
    assert 'No space left on device' in line, line
    os.remove(workdir / 'filler')
    saved = sorted(int(n) for n in os.listdir(workdir / 'checkpoints') if n.isdigit())
    assert first in saved
    _assert_intact(str(workdir), first)
  finally:
    subprocess.run(['umount', '-l', str(workdir)], capture_output=True)
