"""The chaos harness in its short form: train.py (with Grain worker processes) killed with
SIGKILL at random moments (one of them while a checkpoint is being written) and restarted
ends bit for bit where an uninterrupted run ends, with every checkpoint readable, none set
aside, and every logged step once.
The long form (50 kills over four families) is `bench/chaos.py`; its numbers are in the
README."""

import json
import os
import subprocess
import sys

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
