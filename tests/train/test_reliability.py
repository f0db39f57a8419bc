"""Damaged checkpoints and a busy workdir: nothing lost, nothing overwritten.

A latest checkpoint with a file missing, truncated or bit-flipped is caught by the
checksums written at commit (or, without them, by its failed restore); training falls back
to the newest readable checkpoint, warns, sets the damaged folder aside untouched, and ends
with the parameters of an uninterrupted run. A second run on a workdir in use is refused.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from bigjax.train.checkpoint import CHECKSUMS, DAMAGED, Checkpointer, damage
from bigjax.train.cli import main
from bigjax.train.workdir import restore_from_workdir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'configs', 'mlp_digits.py') + ':test'


def _argv(workdir, data_dir, steps):
  return [
    '--config', CONFIG, '--workdir', workdir, f'--config.data.data_dir={data_dir}',
    f'--config.train.steps={steps}', '--config.train.checkpoint_every=2',
    '--config.train.eval_every=0',
  ]  # fmt: skip


@pytest.fixture(scope='module')
def runs(tmp_path_factory, data_dir):
  """(a run of 8 steps with its checkpoint 8 removed, as if killed before it: checkpoints
  4 and 6 are left; the final parameters of the 8 steps)."""
  root = tmp_path_factory.mktemp('reliability')
  base, straight = str(root / 'base'), str(root / 'straight')
  assert main(_argv(straight, data_dir, 8)) == 0
  shutil.copytree(straight, base)
  shutil.rmtree(os.path.join(base, 'checkpoints', '8'))
  return base, _params(straight)


def _params(workdir):
  return jax.tree.leaves(jax.device_get(restore_from_workdir(workdir)[2]['params']))


def _largest_file(folder):
  files = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names]
  files = [f for f in files if os.path.basename(f) != CHECKSUMS]
  return max(files, key=os.path.getsize)


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def _flip(path):
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0x10]))


DAMAGES = {
  'truncated': (_truncate, 'truncated'),
  'bit-flipped': (_flip, 'corrupted'),
  'missing': (os.remove, 'is missing'),
}


@pytest.mark.slow
@pytest.mark.parametrize('kind', [*DAMAGES, 'no checksums'])
def test_damaged_latest_checkpoint_falls_back_and_is_kept(kind, runs, tmp_path, data_dir, capsys):
  base, expected = runs
  workdir = str(tmp_path / 'run')
  shutil.copytree(base, workdir)
  step6 = os.path.join(workdir, 'checkpoints', '6')
  assert os.path.isfile(os.path.join(step6, CHECKSUMS))
  if kind == 'no checksums':  # killed between the commit and the checksums: restore fails
    os.remove(os.path.join(step6, CHECKSUMS))
    reason = ('failed to restore', 'metadata cannot be read')  # found by either reader
    for folder, _, names in os.walk(os.path.join(step6, 'state')):
      for name in names:  # every array data file (OCDBT may hold one in two places)
        if os.path.basename(folder) == 'd':
          _truncate(os.path.join(folder, name))
  else:
    damage, reason = DAMAGES[kind]
    reason = (reason,)
    damage(_largest_file(os.path.join(step6, 'state')))
  before = {
    os.path.relpath(os.path.join(d, n), step6): open(os.path.join(d, n), 'rb').read()
    for d, _, names in os.walk(step6)
    for n in names
  }
  capsys.readouterr()
  assert main(_argv(workdir, data_dir, 8)) == 0
  out = capsys.readouterr()
  text = out.out + out.err
  assert 'skipped the checkpoint at step 6' in text and any(r in text for r in reason), text
  assert 'resuming from the checkpoint at step 4' in text, text
  kept = os.path.join(workdir, DAMAGED, '6')
  after = {
    os.path.relpath(os.path.join(d, n), kept): open(os.path.join(d, n), 'rb').read()
    for d, _, names in os.walk(kept)
    for n in names
  }
  assert after == before  # set aside byte for byte, never deleted or overwritten
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '6', '8']
  for a, b in zip(_params(workdir), expected, strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_no_readable_checkpoint_is_a_one_line_error_and_changes_nothing(
  runs, tmp_path, data_dir, capsys, snapshot
):
  base, _ = runs
  workdir = str(tmp_path / 'run')
  shutil.copytree(base, workdir)
  for step in ('4', '6'):
    _truncate(_largest_file(os.path.join(workdir, 'checkpoints', step, 'state')))
  before = snapshot(workdir)
  capsys.readouterr()
  assert main(_argv(workdir, data_dir, 8)) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: no readable checkpoint') and '\n' not in err, err
  assert 'step 6' in err and 'step 4' in err
  assert snapshot(workdir) == before


HOLD = """
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], '.lock'), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b'pid %d on test' % os.getpid())
print('held', flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_is_refused_and_a_killed_run_leaves_no_lock(
  runs, tmp_path, data_dir, capsys, snapshot
):
  base, _ = runs
  workdir = str(tmp_path / 'run')
  shutil.copytree(base, workdir)
  holder = subprocess.Popen(
    [sys.executable, '-c', HOLD, workdir], stdout=subprocess.PIPE, text=True
  )
  try:
    assert holder.stdout.readline().strip() == 'held'
    before = snapshot(workdir)
    capsys.readouterr()
    assert main(_argv(workdir, data_dir, 8)) == 2
    err = capsys.readouterr().err.strip()
    assert 'is in use by another run' in err and f'pid {holder.pid}' in err, err
    assert snapshot(workdir) == before
  finally:
    holder.kill()  # SIGKILL: the kernel drops its lock
    holder.wait()
  assert main(_argv(workdir, data_dir, 8)) == 0
  assert '8' in os.listdir(os.path.join(workdir, 'checkpoints'))


@pytest.mark.slow
def test_resuming_with_changed_settings_is_refused_unless_allowed(
  runs, tmp_path, data_dir, capsys, snapshot
):
  base, _ = runs
  workdir = str(tmp_path / 'run')
  shutil.copytree(base, workdir)
  before = snapshot(workdir)
  capsys.readouterr()
  changed = [*_argv(workdir, data_dir, 8), '--config.optim.lr=0.5', '--config.train.log_every=1']
  assert main(changed) == 2
  err = capsys.readouterr().err.strip()
  assert 'was trained with other settings (optim.lr: ' in err and '-> 0.5' in err, err
  assert 'log_every' not in err  # logging may change on resume
  assert snapshot(workdir) == before
  # Another optimiser changes the train state itself: refused even when changes are allowed.
  assert main([*changed, '--config.optim.name=sgd', '--config.allow_changes=true']) == 2
  err = capsys.readouterr().err.strip()
  assert 'holds a train state of' in err and 'another optimiser' in err, err
  assert snapshot(workdir) == before
  assert main([*changed, '--config.allow_changes=true']) == 0
  out = capsys.readouterr().out
  assert 'resuming with changed settings' in out and 'optim.lr' in out, out
  with open(os.path.join(workdir, 'config.6.json')) as f:
    assert json.load(f)['optim']['lr'] != 0.5  # the settings of the first 6 steps are kept


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['halt', 'skip'])
def test_non_finite_training_halts_with_the_last_good_state(mode, tmp_path, data_dir, capsys):
  workdir = str(tmp_path / 'run')
  argv = [
    *_argv(workdir, data_dir, 50), '--config.optim.lr=1e30', '--config.train.log_every=2',
    f'--config.train.nonfinite={mode}', '--config.train.max_nonfinite_skips=3',
  ]  # fmt: skip
  capsys.readouterr()
  assert main(argv) == 3
  err = capsys.readouterr().err.strip().splitlines()[-1]  # (data preparation may print)
  assert err.startswith('error: '), err
  if mode == 'halt':
    bad = int(err.split('went non-finite at step ')[1].split(';')[0])
  else:
    assert '3 updates in a row had a non-finite loss or gradients' in err, err
    bad = int(err.split('(the last, at step ')[1].split(':')[0])
  saved = int(err.split('checkpoints/')[1].split(':')[0])
  assert saved == bad + bad % 2  # at the logging step that read the flag (log_every=2)
  assert str(saved) in os.listdir(os.path.join(workdir, 'checkpoints'))
  params = jax.tree.leaves(restore_from_workdir(workdir)[2]['params'])
  assert all(np.all(np.isfinite(x)) for x in params)  # the last good state
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert sum(r.get('nonfinite_skipped', 0) for r in rows) >= 1


@pytest.mark.slow
def test_moving_average_is_evaluated_checkpointed_resumed_and_selectable(
  tmp_path, data_dir, capsys
):
  from bigjax.train.distill import load_teacher

  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  argv = [*_argv(straight, data_dir, 8), '--config.train.ema_decay=0.9']
  assert main(argv) == 0
  rows = [json.loads(line) for line in open(os.path.join(straight, 'metrics.jsonl'))]
  final = [r for r in rows if r['split'] == 'eval'][-1]
  assert 'ema_accuracy' in final and 'accuracy' in final
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '8'))
  assert main([*_argv(resumed, data_dir, 8), '--config.train.ema_decay=0.9']) == 0
  raw = jax.tree.leaves(restore_from_workdir(straight)[2]['params'])
  ema = jax.tree.leaves(restore_from_workdir(straight, ema=True)[2]['params'])
  again = jax.tree.leaves(restore_from_workdir(resumed, ema=True)[2]['params'])
  assert not all(np.array_equal(a, b) for a, b in zip(raw, ema))  # it is an average
  for a, b in zip(ema, again, strict=True):
    np.testing.assert_array_equal(a, b)  # restored on resume, bit for bit
  teacher = load_teacher(straight, ema=True)
  for a, b in zip(jax.tree.leaves(teacher.variables['params']), ema, strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='trained without a moving average'):
    restore_from_workdir(_no_ema_run(tmp_path, data_dir), ema=True)


def _no_ema_run(tmp_path, data_dir):
  workdir = str(tmp_path / 'plain')
  assert main(_argv(workdir, data_dir, 2)) == 0
  return workdir


@pytest.mark.slow
def test_an_error_after_an_asynchronous_save_keeps_that_checkpoint(tmp_path, data_dir):
  """The loop waits for the save in flight even when the step after it fails."""
  from bigjax.train.cli import load_config
  from bigjax.train.loop import build_run, train

  config, _ = load_config(CONFIG)
  config.data.data_dir = data_dir
  config.train.steps, config.train.checkpoint_every, config.train.eval_every = 8, 2, 2
  run = build_run(config, str(tmp_path / 'run'))

  calls = []  # evaluation comes before the save at each step: fail at the second one

  def eval_then_fail(state):
    calls.append(int(state.step))
    if len(calls) == 2:
      raise RuntimeError('the evaluation broke')
    return {}

  run.evaluate = eval_then_fail
  with pytest.raises(RuntimeError, match='the evaluation broke'):
    train(run, tty=False)
  # The save of step 2 was started (asynchronously) before the failure at step 4.
  checkpointer = Checkpointer(str(tmp_path / 'run'), read_only=True)
  try:
    assert 2 in checkpointer.manager.all_steps()
    assert damage(checkpointer.step_dir(2)) is None
    assert os.path.isfile(os.path.join(checkpointer.step_dir(2), CHECKSUMS))
  finally:
    checkpointer.close()


@pytest.mark.slow
def test_an_intact_checkpoint_that_does_not_restore_is_refused_not_set_aside(
  tmp_path, data_dir, capsys, snapshot
):
  """Grain's iterator state differs with and without worker processes: resuming a
  data.workers=2 run with workers=0 (changes allowed) must not take it for damage."""
  workdir = str(tmp_path / 'run')
  train = os.path.join(ROOT, 'train.py')
  cmd = [sys.executable, train, *_argv(workdir, data_dir, 4), '--config.data.workers=2']
  subprocess.run(cmd, check=True, capture_output=True, timeout=300)
  before = snapshot(workdir)
  capsys.readouterr()
  argv = [*_argv(workdir, data_dir, 6), '--config.data.workers=0', '--config.allow_changes=true']
  assert main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert 'the checkpoint at step 4' in err and 'is intact but does not restore' in err, err
  assert not os.path.exists(os.path.join(workdir, DAMAGED))
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_a_run_that_stops_before_its_first_step_keeps_what_it_set_aside(
  runs, tmp_path, data_dir, capsys
):
  """A damaged latest checkpoint is set aside, then the run does not fit: the set-aside
  folder stays (build_run's other writes are undone)."""
  base, _ = runs
  workdir = str(tmp_path / 'run')
  shutil.copytree(base, workdir)
  _truncate(_largest_file(os.path.join(workdir, 'checkpoints', '6', 'state')))
  argv = [*_argv(workdir, data_dir, 8), '--config.train.device_memory_gb=0.00001']
  assert main(argv) == 2
  assert os.path.isdir(os.path.join(workdir, DAMAGED, '6'))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4']
