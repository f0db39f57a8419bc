"""Throughput and MFU in the training log, and the run switches train.donate,
train.compilation_cache_dir and train.xla_flags."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bigjax.train import flops, runtime
from bigjax.train.cli import main
from bigjax.train.loop import build_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'configs', 'mlp_digits.py') + ':test'


def test_log_reports_throughput_and_mfu_from_the_counter(tmp_path, data_dir, capsys):
  workdir, cache = str(tmp_path / 'run'), str(tmp_path / 'cache')
  args = ['--config', CONFIG, '--workdir', workdir, f'--config.data.data_dir={data_dir}']
  args += ['--config.train.steps=4', '--config.train.eval_every=0']
  args += [f'--config.train.compilation_cache_dir={cache}']
  assert main(args) == 0
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train = [r for r in rows if r['split'] == 'train']
  assert [r['step'] for r in train] == [2, 4]
  from bigjax.train.workdir import build_model
  from configs.mlp_digits import get_config

  config = get_config('test')
  counted = flops.train_step_flops(
    build_model(config), (np.zeros((config.train.batch_size, 8, 8, 1), np.float32),)
  )
  for r in train:
    for key in ('examples_per_sec', 'tflops_per_sec', 'mfu'):
      assert np.isfinite(r[key]) and r[key] > 0, (key, r)
    assert 'tokens_per_sec' not in r  # images have no token axis
    steps_per_sec = r['examples_per_sec'] / config.train.batch_size
    assert r['tflops_per_sec'] * 1e12 / steps_per_sec == pytest.approx(counted, rel=1e-6)
  out = capsys.readouterr().out
  assert 'model TFLOPs a step' in out and 'MFU=' in out and 'ex/s=' in out
  assert os.listdir(cache)  # the persistent compilation cache was written


@pytest.mark.parametrize('donate', [True, False])
def test_donate_switch(tmp_path, data_dir, donate):
  from configs.mlp_digits import get_config

  config = get_config('test')
  config.data.data_dir = data_dir
  config.train.donate = donate
  run = build_run(config, str(tmp_path / 'run'))
  train_iter = run.data.train_iter(config.train.batch_size, config.seed)
  state, _ = run.initial_state(train_iter)
  batch = next(train_iter)
  run.train_step(state, batch, run.step_rng(), run.frozen)
  leaf = jax.tree.leaves(state.params)[0]
  assert leaf.is_deleted() == donate
  if not donate:
    run.train_step(state, batch, run.step_rng(), run.frozen)  # the old state still works


def test_xla_flags_need_a_fresh_backend(monkeypatch):
  jax.devices()  # the backend has started in this process
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_enable_fast_math=false')
  runtime.add_xla_flags('--xla_cpu_enable_fast_math=false')  # already there: fine
  with pytest.raises(ValueError, match='already initialised its backend'):
    runtime.add_xla_flags('--xla_force_host_platform_device_count=3')
  code = (
    'import jax\n'
    'from bigjax.train import runtime\n'
    "runtime.add_xla_flags('--xla_force_host_platform_device_count=3')\n"
    'print(jax.device_count())\n'
  )
  env = {**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': '', 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split()[-1] == '3'


POISONED = """
import sys
for name in ('ml_collections', 'tensorflow_datasets', 'grain'):
  sys.modules[name] = None  # importing any of them now fails
import jax, numpy as np, optax
import bigjax
from bigjax.train import optim, step, tasks
from bigjax.train.plain_config import PlainConfig
from bigjax.train.state import init_state

config = PlainConfig({'train': {}, 'data': {}, 'model': {}, 'optim': {'name': 'adam', 'lr': 1e-3}})
model = bigjax.create_model('mlp', width=16)
schedule = optax.constant_schedule(1e-3)
tx = optim.make_optimizer(config.optim, schedule)
batch = {'image': np.ones((4, 8, 8, 1), np.float32), 'label': np.arange(4, dtype=np.int32)}
state = init_state(model, tx, jax.random.key(0), (batch['image'],))
task = tasks.get_task('classification')
train_step = jax.jit(step.make_train_step(model, task, config, schedule, tx))
state, metrics = train_step(state, batch, jax.random.key(1))
print(int(state.step), float(step.summarize(metrics)['loss']))
"""


def test_train_step_runs_without_ml_collections_tfds_and_grain():
  env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run([sys.executable, '-c', POISONED], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  step, loss = out.stdout.split()[-2:]
  assert step == '1' and np.isfinite(float(loss)) and float(loss) > 0
