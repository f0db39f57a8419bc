"""train.py end to end: every foundation config, resume after SIGTERM, and bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigjax.train.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, 'train.py')
DEFAULT = os.path.join(ROOT, 'configs', 'mlp_digits.py')


def _config(name):
  return os.path.join(ROOT, 'configs', name)


def _eval_rows(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [r for r in rows if r['split'] == 'eval']


@pytest.mark.slow
@pytest.mark.parametrize('name', ['mlp_digits.py', 'lenet_digits.py'])
def test_offline_configs_end_to_end(name, tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  code = main(
    [
      '--config',
      _config(name) + ':test',
      '--workdir',
      workdir,
      f'--config.data.data_dir={data_dir}',
    ]
  )
  assert code == 0
  for item in ('metrics.jsonl', 'config.json', 'curves.png', 'tensorboard', 'checkpoints'):
    assert os.path.exists(os.path.join(workdir, item)), item
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']
  final = _eval_rows(workdir)[-1]
  assert final['step'] == 6 and 0.0 <= final['accuracy'] <= 1.0
  assert os.listdir(os.path.join(workdir, 'tensorboard'))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['lenet_mnist.py', 'lenet_cifar10.py'])
def test_public_configs_under_mock_data(name, tmp_path):
  workdir = str(tmp_path / 'run')
  with tfds.testing.mock_data(num_examples=64):
    assert main(['--config', _config(name) + ':test', '--workdir', workdir]) == 0
  assert _eval_rows(workdir)[-1]['step'] == 6


@pytest.mark.slow
def test_default_config_and_default_workdir(tmp_path, monkeypatch, data_dir):
  monkeypatch.chdir(tmp_path)
  code = main(
    ['--config.train.steps=4', '--config.train.eval_every=0', f'--config.data.data_dir={data_dir}'],
    default_config=DEFAULT,
  )
  assert code == 0
  assert _eval_rows(tmp_path / 'runs' / 'mlp_digits')[-1]['step'] == 4


def _train_cmd(workdir, data_dir, steps):
  return [
    sys.executable,
    TRAIN,
    '--config',
    _config('mlp_digits.py') + ':test',
    '--workdir',
    workdir,
    f'--config.train.steps={steps}',
    '--config.schedule.name=constant',
    '--config.train.log_every=1',
    '--config.train.eval_every=0',
    '--config.train.checkpoint_every=1000000',
    '--config.allow_changes=true',  # the resumed run asks for fewer steps
    f'--config.data.data_dir={data_dir}',
  ]


def _params(workdir):
  from bigjax.train.loop import restore_from_workdir

  _, _, variables = restore_from_workdir(workdir)
  import jax

  return jax.tree.leaves(jax.device_get(variables['params']))


@pytest.mark.slow
def test_sigterm_then_resume_equals_uninterrupted(tmp_path, data_dir):
  # Prepare the dataset first so the subprocesses don't race to build it.
  assert (
    main(
      [
        '--config',
        _config('mlp_digits.py') + ':test',
        '--workdir',
        str(tmp_path / 'warm'),
        f'--config.data.data_dir={data_dir}',
      ]
    )
    == 0
  )
  stopped = str(tmp_path / 'stopped')
  proc = subprocess.Popen(
    _train_cmd(stopped, data_dir, 10**6),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  metrics = os.path.join(stopped, 'metrics.jsonl')
  deadline = time.time() + 120
  while time.time() < deadline:
    if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 5:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 75, out  # EXIT_STOPPED: saved, not finished
  assert 'SIGTERM: stopped at step' in out, out
  steps = [int(s) for s in os.listdir(os.path.join(stopped, 'checkpoints'))]
  assert len(steps) == 1
  k = steps[0]
  target = k + 15
  uninterrupted = str(tmp_path / 'uninterrupted')
  subprocess.run(_train_cmd(uninterrupted, data_dir, target), check=True, capture_output=True)
  resumed = subprocess.run(
    _train_cmd(stopped, data_dir, target), check=True, capture_output=True, text=True
  )
  assert f'resuming from the checkpoint at step {k}' in resumed.stdout + resumed.stderr
  a, b = _params(uninterrupted), _params(stopped)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert np.array_equal(x, y), 'resumed parameters differ from the uninterrupted run'


# --- bad input: one line, exit code 2, nothing lost ------------------------------------


def _fails(capsys, argv, match, default_config=None):
  code = main(argv, default_config=default_config)
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert len(err.splitlines()) == 1, err
  assert match in err, err
  return err


# A bad flag over the default config: (flags, what the one-line message says).
BAD_FLAGS = {
  'unknown_config_key': (['--config.train.stepz=5'], 'did you mean --config.train.steps'),
  'wrong_value_type': (['--config.train.steps=abc'], 'expects int'),
  'unknown_model': (['--config.model.name=lenett'], 'did you mean lenet'),
  'unknown_dataset': (['--config.data.name=digitz'], "unknown dataset 'digitz'"),
  'batch_not_divisible': (['--config.train.batch_size=12'], 'does not divide over 8 devices'),
  'accumulation_that_does_not_divide': (
    ['--config.train.batch_size=16', '--config.optim.grad_accum_steps=4'],
    'does not split into optim.grad_accum_steps=4 micro-batches',
  ),
  'unknown_task': (['--config.task.name=lmm'], 'unknown task'),
  'bad_decay_pattern': (['--config.optim.decay_pattern=(kernel'], 'is not a regular expression'),
  # every value is checked before the workdir is touched (bigjax.train.validate)
  'negative_steps': (['--config.train.steps=-5'], 'train.steps=-5 is out of range'),
  'zero_batch_size': (['--config.train.batch_size=0'], 'train.batch_size=0 is out of range'),
  'learning_rate_not_a_number': (['--config.optim.lr=fast'], '--config.optim.lr expects float'),
  'negative_learning_rate': (['--config.optim.lr=-0.1'], 'optim.lr=-0.1 is out of range'),
  'infinite_learning_rate': (['--config.optim.lr=1e999'], 'optim.lr=inf is out of range'),
  'keep_no_checkpoints': (['--config.train.keep_checkpoints=0'], 'keep_checkpoints=0 is out'),
  'checkpoint_every_zero': (['--config.train.checkpoint_every=0'], 'checkpoint_every=0 is out'),
  'log_every_zero': (['--config.train.log_every=0'], 'train.log_every=0 is out of range'),
  'negative_eval_every': (['--config.train.eval_every=-1'], 'train.eval_every=-1 is out'),
  'negative_mesh_size': (['--config.mesh.fsdp=-2'], 'mesh sizes must be positive'),
}


@pytest.mark.parametrize('case', BAD_FLAGS)
def test_bad_flag(capsys, tmp_path, case):
  flags, match = BAD_FLAGS[case]
  workdir = tmp_path / 'run'
  err = _fails(capsys, ['--workdir', str(workdir), *flags], match, DEFAULT)
  if case == 'unknown_dataset':
    assert 'pystdlib' in err  # the list of known datasets
  assert not workdir.exists()  # nothing written


# A config file that cannot load: (its text, what the one-line message says).
BAD_CONFIG_FILES = {
  'syntax_error': ('def get_config(arg=None)\n  return 1\n', 'x.py:1: syntax error'),
  'import_error': ('import not_a_module_at_all\n', "No module named 'not_a_module_at_all'"),
  'error_in_get_config': (
    'def get_config(arg=None):\n  return undefined_name\n',
    'x.py:2: loading the config failed with NameError',
  ),
  'no_get_config': ('X = 1\n', 'has no get_config(arg=None) function'),
  'not_a_config_dict': ('def get_config(arg=None):\n  return {}\n', 'not a ConfigDict'),
}


@pytest.mark.parametrize('case', BAD_CONFIG_FILES)
def test_bad_config_file(capsys, tmp_path, case):
  text, match = BAD_CONFIG_FILES[case]
  folder = tmp_path / 'configs'
  folder.mkdir()
  (folder / 'x.py').write_text(text)
  _fails(capsys, ['--config', str(folder / 'x.py'), '--workdir', str(tmp_path / 'w')], match)
  assert not (tmp_path / 'w').exists()


def test_a_config_folder_does_not_shadow_packages_for_the_run(tmp_path):
  """The folder above a config's folder is on sys.path only while the config loads."""
  from bigjax.train.cli import load_config

  folder = tmp_path / 'configs'
  folder.mkdir()
  (folder / 'x.py').write_text(
    'import ml_collections\n'
    'def get_config(arg=None):\n'
    "  return ml_collections.ConfigDict({'a': 1})\n"
  )
  (tmp_path / 'tensorboardX.py').write_text("raise ImportError('the shadow was imported')\n")
  config, name = load_config(str(folder / 'x.py'))
  assert config.a == 1 and name == 'x'
  assert str(tmp_path) not in sys.path


def test_public_dataset_not_prepared(capsys, tmp_path):
  empty = str(tmp_path / 'empty_tfds')
  _fails(
    capsys,
    [
      '--config',
      _config('lenet_mnist.py') + ':test',
      '--workdir',
      str(tmp_path / 'w'),
      f'--config.data.data_dir={empty}',
    ],
    f'tfds build mnist --data_dir={empty}',
  )


def test_public_dataset_not_prepared_in_the_default_data_dir(capsys, tmp_path, monkeypatch):
  """With no data_dir, tfds raised a KeyError about empty splits instead of this message."""
  empty = str(tmp_path / 'default_tfds')
  monkeypatch.setenv('TFDS_DATA_DIR', empty)
  argv = ['--config', _config('lenet_mnist.py') + ':test', '--workdir', str(tmp_path / 'w')]
  _fails(capsys, argv, f'tfds build mnist --data_dir={empty}')


@pytest.mark.parametrize('split', ['train_split=train[:0]', 'eval_split=test[300:300]'])
def test_an_empty_split_is_refused(capsys, tmp_path, data_dir, split):
  workdir = tmp_path / 'run'
  argv = ['--workdir', str(workdir), f'--config.data.data_dir={data_dir}', f'--config.data.{split}']
  _fails(capsys, argv, 'split of digits is empty: set --config.data.', DEFAULT)
  assert not workdir.exists()


def test_workdir_not_writable(capsys, tmp_path, data_dir):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  _fails(
    capsys,
    ['--workdir', str(blocker / 'run'), f'--config.data.data_dir={data_dir}'],
    'is not writable',
    DEFAULT,
  )


def test_unknown_argument(capsys):
  _fails(capsys, ['--epochs=3'], "unknown argument '--epochs=3'", DEFAULT)


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused_and_kept(capsys, tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  assert (
    main(
      [
        '--config',
        _config('mlp_digits.py') + ':test',
        '--workdir',
        workdir,
        f'--config.data.data_dir={data_dir}',
      ]
    )
    == 0
  )
  capsys.readouterr()

  def snapshot():
    found = {}
    for dirpath, _, files in os.walk(workdir):
      for f in files:
        path = os.path.join(dirpath, f)
        found[path] = (os.path.getmtime(path), open(path, 'rb').read())
    return found

  before = snapshot()
  _fails(
    capsys,
    [
      '--config',
      _config('lenet_digits.py') + ':test',
      '--workdir',
      workdir,
      f'--config.data.data_dir={data_dir}',
    ],
    "holds checkpoints of model 'mlp'",
  )
  _fails(
    capsys,
    [
      '--config',
      _config('mlp_digits.py') + ':test',
      '--workdir',
      workdir,
      '--config.model.width=48',
      f'--config.data.data_dir={data_dir}',
    ],
    'other parameter shapes',
  )
  assert snapshot() == before


@pytest.mark.slow
def test_two_processes_train_one_global_batch(tmp_path, data_dir):
  """Two CPU processes (2 devices each) join one mesh through jax.distributed (gloo)."""
  import socket

  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  workdir = str(tmp_path / 'run')
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  procs = [
    subprocess.Popen(
      [
        sys.executable, TRAIN, '--config', _config('mlp_digits.py') + ':test',
        '--workdir', workdir, f'--config.data.data_dir={data_dir}', '--distributed',
        f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}',
      ],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for i in range(2)
  ]  # fmt: skip
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert '4 device(s)' in outs[0] and 'final eval at step 6' in outs[0]
  assert 'final eval' not in outs[1]  # only process 0 reports
  data_state = os.listdir(os.path.join(workdir, 'checkpoints', '6', 'data'))
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= set(data_state)


@pytest.mark.slow
def test_first_run_console_is_quiet_and_plain(tmp_path):
  """A fresh data set is prepared with one line of ours, without TFDS's progress bars and
  absl notes; nothing but our lines reach the console."""
  fresh = str(tmp_path / 'tfds')
  result = subprocess.run(
    [
      sys.executable, TRAIN, '--config', _config('mlp_digits.py') + ':test',
      '--workdir', str(tmp_path / 'run'), f'--config.data.data_dir={fresh}',
    ],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stdout + result.stderr
  assert f"preparing the 'digits' data set in {fresh} (first use)" in result.stdout
  for chatter in ('Generating splits', 'Shuffling', 'dataset_info.json', 'absl'):
    assert chatter not in result.stdout + result.stderr, (chatter, result.stderr)


def test_progress_times_steps_after_compilation(monkeypatch, tmp_path, capsys):
  from bigjax.train import report

  now = [0.0]
  monkeypatch.setattr(report.time, 'perf_counter', lambda: now[0])
  reporter = report.Reporter(str(tmp_path), 100, 0, tty=False)
  now[0] = 30.0  # the first step, with 30 s of compilation
  reporter.restart_clock(1)
  now[0] = 30.1
  reporter.progress(2, {'loss': 1.0})
  reporter.close()
  line = capsys.readouterr().out.strip().splitlines()[-1]
  assert line.endswith('10.0 steps/s eta 10s'), line  # not 2 / 30.1 s


def _tensorboard_view(folder):
  """{(tag, step): value} as TensorBoard shows the event files in `folder`: they are read in
  name order, and a SessionLog START at step s hides the earlier events at steps >= s."""
  import glob
  import struct

  from tensorboardX.proto import event_pb2

  seen = []
  for path in sorted(glob.glob(os.path.join(folder, 'events.out.tfevents.*'))):
    data, i = open(path, 'rb').read(), 0
    while i < len(data):
      (n,) = struct.unpack('<Q', data[i : i + 8])
      event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
      i += 12 + n + 4
      if event.HasField('session_log') and event.session_log.status == 1:  # START
        seen = [(tag, step, v) for tag, step, v in seen if step < event.step]
      for value in event.summary.value:
        seen.append((value.tag, event.step, value.simple_value))
  view = {}
  for tag, step, value in seen:
    assert (tag, step) not in view, f'{tag} at step {step} shown twice'
    view[tag, step] = value
  return view


@pytest.mark.parametrize('final', [False, True])
def test_a_resume_hides_the_steps_it_repeats_from_tensorboard(tmp_path, monkeypatch, final):
  """A run killed after its checkpoint at step 4 logged steps 5-7; the resume logs 5 on
  again. TensorBoard, like metrics.jsonl, shows each step once, the resumed run's values."""
  from bigjax.train import report

  total = 4 if final else 100
  monkeypatch.setattr(report.os, 'getpid', lambda: 1001)  # two processes, in one second
  first = report.Reporter(str(tmp_path), total, 0, tty=False)
  for step in range(1, 8):
    first.write(step, 'train', {'loss': float(step)})
  first.write(4, 'eval', {'loss': 0.5})
  first.close()
  monkeypatch.setattr(report.os, 'getpid', lambda: 1002)
  resumed = report.Reporter(str(tmp_path), total, 4, tty=False)
  for step in range(5, 7) if not final else []:
    resumed.write(step, 'train', {'loss': 10.0 + step})
  resumed.write(4 if final else 6, 'eval', {'loss': 0.25})
  resumed.close()
  view = _tensorboard_view(str(tmp_path / 'tensorboard'))
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert view == {(f'{r["split"]}/loss', r['step']): r['loss'] for r in rows}
  if final:  # the final evaluation is repeated, nothing else
    assert view == {**{('train/loss', s): float(s) for s in range(1, 5)}, ('eval/loss', 4): 0.25}
  else:
    expected = {('train/loss', s): float(s) for s in range(1, 5)}
    expected.update({('train/loss', 5): 15.0, ('train/loss', 6): 16.0})
    expected.update({('eval/loss', 4): 0.5, ('eval/loss', 6): 0.25})
    assert view == expected
