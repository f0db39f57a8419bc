"""Many hosts: cluster detection in the command line, and 2 processes x 2 CPU devices that
train, checkpoint and resume exactly as 1 process with 4 devices does.

The cluster tests monkeypatch the environment and `jax.distributed.initialize`, so nothing
starts. The multi-process runs (shared by the tests below through one module fixture) join
one mesh through jax.distributed on localhost, as
`tests/train/test_train_e2e.py::test_two_processes_train_one_global_batch` does.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from bigjax.train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, 'train.py')
CONFIG = os.path.join(ROOT, 'configs', 'gpt_nano_pystdlib.py') + ':test'
TIMEOUT = 300  # a deadlocked pair never finishes: fail instead of hanging
FIRST, LAST = 4, 6  # the first run stops (and checkpoints) at FIRST, the restart at LAST

# Every variable one of jax's cluster environments looks at, cleared for the unit tests.
CLUSTER_VARS = (
  'SLURM_JOB_ID',
  'SLURM_STEP_NODELIST',
  'SLURM_NTASKS',
  'SLURM_PROCID',
  'SLURM_LOCALID',
  'SLURM_STEP_NUM_NODES',
  'OMPI_MCA_orte_hnp_uri',
  'OMPI_COMM_WORLD_SIZE',
  'OMPI_COMM_WORLD_RANK',
  'OMPI_COMM_WORLD_LOCAL_RANK',
  'KUBERNETES_SERVICE_HOST',
  'JAX_COORDINATOR_ADDRESS',
  'JAX_COORDINATOR_PORT',
)


@pytest.fixture
def cluster(monkeypatch):
  """`cluster(**env)` sets a cluster's environment on a clean one; returns the list of
  `jax.distributed.initialize` calls (their keyword arguments), which start nothing."""
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs))
  for name in CLUSTER_VARS:
    monkeypatch.delenv(name, raising=False)

  def set_env(**env):
    for name, value in env.items():
      monkeypatch.setenv(name, str(value))
    return calls

  return set_env


def _slurm(tasks, procid=0):
  return dict(
    SLURM_JOB_ID=1234,
    SLURM_STEP_NODELIST='gpu[003-004]',
    SLURM_NTASKS=tasks,
    SLURM_PROCID=procid,
    SLURM_LOCALID=procid % 8,
  )


def _start(*flags):
  args, _ = cli.parse_args(['--config', 'x.py', *flags], None)
  return cli.start_distributed(args)


def test_no_cluster_runs_one_process(cluster):
  calls = cluster()
  assert cli.detect_cluster() is None
  assert not _start()
  assert calls == []


def test_slurm_job_of_one_task_does_not_initialise(cluster):
  calls = cluster(**_slurm(1))
  assert cli.detect_cluster().__name__ == 'SlurmCluster'
  assert not _start()
  assert calls == []


def test_slurm_job_of_two_tasks_initialises_with_what_slurm_says(cluster, capsys):
  calls = cluster(**_slurm(2, procid=1))
  assert _start()
  # jax's SlurmCluster: the first node of the step, port 1234 % 4096 + 61440
  assert calls == [{'coordinator_address': 'gpu003:62674', 'num_processes': 2, 'process_id': 1}]
  assert 'slurm cluster (SlurmCluster)' in capsys.readouterr().out
  calls.clear()
  assert not _start('--single_process')  # the way out
  assert calls == []


def test_cluster_without_a_process_count_runs_one_process(cluster, capsys):
  calls = cluster(**{**_slurm(2), 'SLURM_NTASKS': 'unknown'})
  assert not _start()
  assert calls == [] and 'running as one process' in capsys.readouterr().err
  with pytest.raises(ValueError):  # unless asked to join
    _start('--distributed')


def test_open_mpi_job_initialises(cluster):
  calls = cluster(
    OMPI_MCA_orte_hnp_uri='1531576320.0;tcp://10.96.0.1,10.148.0.1:34911',
    OMPI_COMM_WORLD_SIZE=4,
    OMPI_COMM_WORLD_RANK=3,
    OMPI_COMM_WORLD_LOCAL_RANK=1,
  )
  assert _start()
  assert calls == [{'coordinator_address': '10.96.0.1:62624', 'num_processes': 4, 'process_id': 3}]


def test_explicit_flags_initialise_with_them(cluster):
  calls = cluster(**_slurm(1))  # the flags win over a detected cluster
  flags = ('--coordinator_address=h0:1234', '--num_processes=2', '--process_id=1')
  assert _start(*flags)
  assert calls == [{'coordinator_address': 'h0:1234', 'num_processes': 2, 'process_id': 1}]


def test_distributed_forces_a_one_task_job(cluster):
  calls = cluster(**_slurm(1))
  assert _start('--distributed')
  assert calls == [{'coordinator_address': 'gpu003:62674', 'num_processes': 1, 'process_id': 0}]


@pytest.mark.parametrize(
  'flags, match',
  [
    (['--process_id=1'], '--process_id needs --num_processes'),
    (['--num_processes=2'], '--num_processes needs --process_id'),
    (['--num_processes=2', '--process_id=2', '--coordinator_address=h:1'], 'ids of N processes'),
    (['--num_processes=2', '--process_id=0'], 'need --coordinator_address'),
    (['--coordinator_address=h0', '--num_processes=2', '--process_id=0'], 'needs a port'),
    (['--distributed', '--single_process'], 'contradicts --distributed'),
    (['--no_distributed', '--num_processes=2', '--process_id=0'], 'contradicts --num_processes'),
    (['--distributed'], 'no cluster detected'),
  ],
)
def test_bad_multihost_flags_are_one_line_usage_errors(cluster, capsys, flags, match):
  calls = cluster()
  assert cli.main(['--config', CONFIG, *flags]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and match in err and '\n' not in err, err
  assert calls == []


# ---- 2 processes x 2 devices against 1 process x 4 devices, with (fsdp=4) ----------------


def _launch(workdir, data_dir, steps, *, processes, cache):
  """Starts `processes` train.py processes with 4 CPU devices between them."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={4 // processes}'}
  flags = [
    sys.executable, TRAIN, '--config', CONFIG, '--workdir', workdir,
    f'--config.data.data_dir={data_dir}', '--config.mesh.fsdp=4',
    f'--config.train.steps={steps}', f'--config.train.checkpoint_every={FIRST}',
    '--config.train.eval_every=0', '--config.train.peak_tflops=1',
    '--config.schedule.name=constant',  # the learning rate at FIRST must not depend on steps
    '--config.allow_changes=true',  # the restart asks for more steps
    f'--config.train.compilation_cache_dir={cache}',  # the restart loads what the start compiled
  ]  # fmt: skip
  if processes == 1:
    commands = [[*flags, '--single_process']]
  else:
    commands = [
      [
        *flags, f'--coordinator_address=localhost:{port}', f'--num_processes={processes}',
        f'--process_id={i}',
      ]
      for i in range(processes)
    ]  # fmt: skip
  return [
    subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for c in commands
  ]


def _finish(procs):
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail('the processes did not finish: deadlock')
  assert [p.returncode for p in procs] == [0] * len(procs), outs
  return outs


# Restores the params of a workdir's checkpoint on this process's device(s) (1 device when
# run as a script) and saves them as a .npz: the checkpoint needs no mesh like the writer's.
RESTORE_ON_ONE_DEVICE = """
import sys, jax, numpy as np
from bigjax.train.workdir import restore_from_workdir
assert jax.device_count() == 1, jax.devices()
_, _, variables = restore_from_workdir(sys.argv[1], int(sys.argv[2]))
params = jax.device_put(variables['params'], jax.devices()[0])
leaves = jax.tree_util.tree_leaves_with_path(params)
np.savez(sys.argv[3], **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
"""


def _params(workdir, step):
  from bigjax.train.workdir import restore_from_workdir

  _, _, variables = restore_from_workdir(workdir, step)
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(variables)}


def _assert_equal(a, b, what):
  assert a.keys() == b.keys(), what
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-6, err_msg=f'{what}: {k}')


@pytest.fixture(scope='module')
def runs(tmp_path_factory, data_dir):
  """One process x 4 devices straight to LAST (checkpoints at FIRST and LAST) beside two
  processes x 2 devices to FIRST; then the two processes again to LAST (a resume), while a
  third process restores (a copy of) their FIRST checkpoint on 1 device."""
  from bigjax.data.pipeline import Data

  config, _ = cli.load_config(CONFIG)
  config.data.data_dir = data_dir
  Data(config.data)  # prepare the data set once, before processes race to build it
  tmp = tmp_path_factory.mktemp('multihost')
  one, two, npz = str(tmp / 'one'), str(tmp / 'two'), str(tmp / 'restored.npz')
  outs = {}
  cache = str(tmp / 'cache')
  procs = _launch(one, data_dir, LAST, processes=1, cache=cache)
  procs += _launch(two, data_dir, FIRST, processes=2, cache=cache)
  outs['one'], *outs['first'] = _finish(procs)
  copy = shutil.copytree(two, str(tmp / 'two_at_first'))  # the restart rewrites config.json
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
  restore = subprocess.Popen(
    [sys.executable, '-c', RESTORE_ON_ONE_DEVICE, copy, str(FIRST), npz],
    env={**env, 'PYTHONPATH': ROOT},
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  outs['restart'] = _finish(_launch(two, data_dir, LAST, processes=2, cache=cache))
  (outs['restore'],) = _finish([restore])
  return {'one': one, 'two': two, 'npz': npz, 'outs': outs}


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_four_devices(runs):
  first = runs['outs']['first']
  assert '4 device(s)' in first[0] and f'final eval at step {FIRST}' in first[0], first[0]
  assert 'distributed: 2 processes from the command line' in first[0], first[0]
  assert 'final eval' not in first[1]  # only process 0 reports
  two = runs['two']
  assert {'config.json', 'metrics.jsonl', 'curves.png', 'checkpoints'} <= set(os.listdir(two))
  rows = [json.loads(line) for line in open(os.path.join(two, 'metrics.jsonl'))]
  assert len({(r['step'], r['split']) for r in rows}) == len(rows)  # one writer
  _assert_equal(_params(two, FIRST), _params(runs['one'], FIRST), f'step {FIRST}')
  data_state = os.listdir(os.path.join(two, 'checkpoints', str(FIRST), 'data'))
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= set(data_state)


@pytest.mark.slow
def test_two_processes_resume_as_a_straight_run(runs):
  restart = runs['outs']['restart']
  assert f'resuming from the checkpoint at step {FIRST}' in restart[0], restart[0]
  assert f'final eval at step {LAST}' in restart[0], restart[0]
  _assert_equal(_params(runs['two'], LAST), _params(runs['one'], LAST), f'step {LAST}')


@pytest.mark.slow
def test_two_process_checkpoint_restores_on_one_device(runs):
  with np.load(runs['npz']) as restored:
    restored = {k: restored[k] for k in restored.files}
  prefix = "['params']"
  expected = {k[len(prefix) :]: v for k, v in _params(runs['one'], FIRST).items()}
  _assert_equal(restored, expected, '1 device')


def _saved_specs(workdir, step):
  """{path: the PartitionSpec (a tuple) each parameter was saved with} from Orbax's
  checkpoint metadata."""
  from bigjax.train.checkpoint import Checkpointer

  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    tree = checkpointer.manager.item_metadata(step)['state']
  finally:
    checkpointer.close()
  tree = getattr(tree, 'tree', tree)
  return {
    jax.tree_util.keystr(path): tuple(leaf.sharding.partition_spec)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree['params'])
  }


@pytest.mark.slow
def test_two_process_checkpoint_holds_parameters_sharded_over_fsdp(runs):
  """Each process wrote its own shards of parameters sharded over `fsdp`."""
  specs = _saved_specs(runs['two'], FIRST)
  sharded = [k for k, spec in specs.items() if any('fsdp' in str(axis) for axis in spec)]
  assert sharded, f'no parameter was saved sharded over fsdp: {specs}'
  state = os.path.join(runs['two'], 'checkpoints', str(FIRST), 'state')
  for i in range(2):
    assert os.listdir(os.path.join(state, f'ocdbt.process_{i}')), f'process {i} wrote nothing'
