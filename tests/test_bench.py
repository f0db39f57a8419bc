"""bench/suite.py --small end to end on the tiny MLP: both sides measured, JSON complete."""

import json
import os
import subprocess
import sys

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
