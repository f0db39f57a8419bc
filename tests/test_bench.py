"""bench/suite.py --small end to end on the tiny MLP: both sides measured, JSON complete."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_small_suite_writes_json_and_table(tmp_path):
  out_json, out_md = tmp_path / 'r.json', tmp_path / 'r.md'
  cmd = [sys.executable, os.path.join(ROOT, 'bench', 'suite.py'), '--small', '--models', 'mlp']
  cmd += ['--steps', '2', '--warmup', '1', '--json', str(out_json), '--table', str(out_md)]
  env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': ''}
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(out_json.read_text())
  assert result['meta']['versions']['jax'] and result['meta']['versions']['torch']
  (row,) = result['rows']
  assert row['name'] == 'mlp' and row['flops_per_step'] == 3 * 2 * 128 * (
    64 * 256 + 256 * 256 + 256 * 10
  )
  for side in ('bigjax', 'torch'):
    r = row[side]
    assert 'error' not in r, r
    for key in ('ms', 'examples_per_sec', 'mfu', 'first_step_s', 'memory_bytes'):
      assert r[key] > 0, (side, key, r)
    assert r['examples_per_sec'] == 128 * 1e3 / r['ms']
  assert row['ratio'] == row['torch']['ms'] / row['bigjax']['ms']
  assert '| mlp (mlp) | 128 x 8x8x1 |' in out_md.read_text()


def _load(name):
  import importlib.util

  spec = importlib.util.spec_from_file_location(
    f'_bench_{name}', os.path.join(ROOT, 'bench', f'{name}.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# Bad input to the bench commands: (command, arguments, what the error line says).
BAD_BENCH_INPUT = {
  'suite_unknown_model': (
    'suite',
    ['--small', '--models', 'nosuch'],
    "unknown model(s) ['nosuch']",
  ),
  'suite_zero_steps': (
    'suite',
    ['--small', '--models', 'mlp', '--steps', '0'],
    '--steps must be at least 1',
  ),
  'suite_steps_not_a_number': (
    'suite',
    ['--small', '--steps', 'many'],
    "invalid int value: 'many'",
  ),
  'chaos_unknown_config': ('chaos', ['--configs', 'nosuch'], 'no configs/nosuch.py'),
  'chaos_negative_kills': ('chaos', ['--kills', '-1'], '--kills must be >= 0'),
}


@pytest.mark.parametrize('case', BAD_BENCH_INPUT)
def test_bench_commands_refuse_bad_input(case, capsys):
  name, argv, message = BAD_BENCH_INPUT[case]
  try:
    code = _load(name).main(argv)
  except SystemExit as e:  # argparse's own errors
    code = e.code
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and message in err[-1], err
