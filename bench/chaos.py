"""Chaos: `train.py` killed with SIGKILL at random moments, restarted until it finishes, must
end exactly where an uninterrupted run ends.

  PYTHONPATH=. python bench/chaos.py [--configs mlp_digits,resnet18_digits,...] [--kills 50]
      [--steps 30] [--seed 0] [--data_dir DIR] [--out DIR] [--json out.json]

Each config runs its `test` variant for --steps updates (a checkpoint every 3, a log line
every step, an evaluation every 10), once uninterrupted in one process and once under chaos
with data.workers=2 (Grain's worker processes read the data while it is killed); the
--kills hard kills are spread over the configs. A kill is SIGKILL to the run's whole process
group (train.py and its workers, as when its machine is lost), and each is one of:
  random      after a delay drawn uniformly over the uninterrupted run's wall time
  checkpoint  the moment a checkpoint's temporary folder appears (an asynchronous write in
              flight)
A kill that comes after the run finished does not count; the run is then restarted for the
next one. Once all kills are spent the run is restarted until it finishes.

Checked for every config: the final parameters equal the uninterrupted run's bit for bit;
every committed checkpoint restores (none lost or unreadable, none set aside as damaged);
metrics.jsonl holds every train step and every evaluation once, and every logged value
(wall-clock rates aside) equals the uninterrupted run's, bit for bit. Printed and written
(--json): kills by kind, restarts, damaged checkpoints, equality, wall time. Exit code 1 if
any check fails.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, 'train.py')
KINDS = ('random', 'checkpoint')
WORKERS = 2  # Grain worker processes in the chaos runs
DEFAULT_CONFIGS = 'mlp_digits,resnet18_digits,gpt_nano_pystdlib,bert_tiny_pystdlib_mlm'


def train_argv(config: str, workdir: str, data_dir: str, steps: int, workers: int = 0):
  return [
    sys.executable, TRAIN, '--config', os.path.join(ROOT, 'configs', f'{config}.py') + ':test',
    '--workdir', workdir, f'--config.data.data_dir={data_dir}', f'--config.train.steps={steps}',
    '--config.train.checkpoint_every=3', '--config.train.log_every=1',
    '--config.train.eval_every=10', f'--config.data.workers={workers}',
  ]  # fmt: skip


def _checkpoint_in_flight(workdir: str) -> bool:
  folder = os.path.join(workdir, 'checkpoints')
  try:
    return any('tmp' in name for name in os.listdir(folder))
  except FileNotFoundError:
    return False


def run_with_kills(argv, workdir, kinds, wall, rng, log) -> dict:
  """Starts `argv` again and again, killing it once per entry of `kinds`, then lets it
  finish; returns {'kills': {kind: n}, 'restarts': n}."""
  env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
  done = {k: 0 for k in KINDS}
  starts = 0
  pending = list(kinds)
  while True:
    kind = pending[0] if pending else None
    # Its own process group, killed whole: a lost machine takes Grain's worker processes
    # with it (they would otherwise linger, holding the pipes).
    proc = subprocess.Popen(
      argv,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
      start_new_session=True,
    )
    starts += 1
    killed = False
    if kind == 'checkpoint':
      deadline = time.time() + 3 * wall + 60
      while proc.poll() is None and time.time() < deadline:
        if _checkpoint_in_flight(workdir):
          os.killpg(proc.pid, signal.SIGKILL)
          killed = True
          break
        time.sleep(0.0005)
    elif kind is not None:
      try:
        proc.wait(timeout=rng.uniform(0.0, wall))
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        killed = True
    _, err = proc.communicate(timeout=10 * wall + 300)
    if killed:
      done[kind] += 1
      pending.pop(0)
      log(f'  killed ({kind}) after start {starts}')
      continue
    if proc.returncode != 0:
      raise RuntimeError(f'train.py exited {proc.returncode}: {err.strip()[-2000:]}')
    if not pending:
      return {'kills': done, 'restarts': starts - 1}
    log(f'  the run finished before its {kind} kill: starting it afresh')
    _reset(workdir)


def _reset(workdir: str) -> None:
  """A finished run restarts from nothing but its learned tokenizer (its kills must land
  in a run that is going)."""
  for name in os.listdir(workdir):
    path = os.path.join(workdir, name)
    if name != 'tokenizer.json':
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _params(workdir: str):
  import jax

  from bigjax.train.workdir import restore_from_workdir

  return jax.tree.leaves(jax.device_get(restore_from_workdir(workdir)[2]['params']))


# Wall-clock rates differ from run to run; every other logged value must be bit-identical.
TIMING = ('examples_per_sec', 'tokens_per_sec', 'tflops_per_sec', 'mfu')


def metric_differences(rows: list[dict], ref_rows: list[dict]) -> list[tuple]:
  """(split, step) of every logged row whose values (timing aside) differ from the
  uninterrupted run's row of the same split and step."""
  ref = {(r['split'], r['step']): r for r in ref_rows}
  strip = lambda r: {k: v for k, v in r.items() if k not in TIMING}  # noqa: E731
  return [
    (r['split'], r['step']) for r in rows if strip(r) != strip(ref.get((r['split'], r['step']), {}))
  ]


def check(workdir: str, reference: str, steps: int) -> dict:
  """The checks of the module docstring; {'equal', 'checkpoints', 'unreadable', 'damaged',
  'metrics_ok', 'problems'}."""
  import numpy as np

  from bigjax.train.checkpoint import DAMAGED
  from bigjax.train.workdir import restore_from_workdir

  problems = []
  a, b = _params(workdir), _params(reference)
  equal = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
  if not equal:
    problems.append('final parameters differ from the uninterrupted run')
  folder = os.path.join(workdir, 'checkpoints')
  steps_saved = sorted(int(n) for n in os.listdir(folder) if n.isdigit())
  unreadable = []
  for step in steps_saved:
    try:
      restore_from_workdir(workdir, step)
    except Exception as e:  # noqa: BLE001 - any failure is an unreadable checkpoint
      unreadable.append(f'{step}: {type(e).__name__}')
  if unreadable:
    problems.append(f'unreadable checkpoints {unreadable}')
  damaged_dir = os.path.join(workdir, DAMAGED)
  damaged = sorted(os.listdir(damaged_dir)) if os.path.isdir(damaged_dir) else []
  if damaged:  # a hard kill never damages a committed checkpoint: these were lost
    problems.append(f'checkpoints set aside as damaged: {damaged}')
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  ref_rows = [json.loads(line) for line in open(os.path.join(reference, 'metrics.jsonl'))]
  train_steps = [r['step'] for r in rows if r['split'] == 'train']
  eval_steps = [r['step'] for r in rows if r['split'] == 'eval']
  ref_eval = [r['step'] for r in ref_rows if r['split'] == 'eval']
  metrics_ok = train_steps == list(range(1, steps + 1)) and eval_steps == ref_eval
  if not metrics_ok:
    problems.append(f'metrics.jsonl steps: train {train_steps}, eval {eval_steps} vs {ref_eval}')
  final, ref_final = rows[-1], ref_rows[-1]
  if final != ref_final:
    problems.append(f'final evaluation {final} differs from {ref_final}')
  differing = metric_differences(rows, ref_rows)
  if differing:
    problems.append(f'logged metrics differ from the uninterrupted run at {differing[:5]}')
  return {
    'equal': equal,
    'checkpoints': steps_saved,
    'unreadable': unreadable,
    'damaged': damaged,
    'metrics_ok': metrics_ok,
    'problems': problems,
  }


def spread(kills: int, configs: list[str], rng: random.Random) -> dict[str, list[str]]:
  """The kinds of kill of each config: `kills` in all; every config's first is a
  checkpoint kill, the rest are drawn from KINDS."""
  plan = {c: [] for c in configs}
  for i in range(kills):
    config = configs[i % len(configs)]
    plan[config].append('checkpoint' if not plan[config] else rng.choice(KINDS))
  for kinds in plan.values():
    rng.shuffle(kinds)
  return plan


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='bench/chaos.py', description=__doc__.split('\n')[0])
  p.add_argument('--configs', default=DEFAULT_CONFIGS, help='comma-separated config names')
  p.add_argument('--kills', type=int, default=50)
  p.add_argument('--steps', type=int, default=30)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--data_dir', default='', help="default: a temporary folder ('' = tfds default)")
  p.add_argument('--out', default='', help='where the workdirs go (default: a temporary folder)')
  p.add_argument('--json', default='', help='write the results here')
  args = p.parse_args(argv)
  if args.kills < 0 or args.steps < 3:
    print('error: --kills must be >= 0 and --steps >= 3', file=sys.stderr)
    return 2
  configs = [c for c in args.configs.split(',') if c]
  for c in configs:
    if not os.path.isfile(os.path.join(ROOT, 'configs', f'{c}.py')):
      print(f'error: no configs/{c}.py: pass names from configs/', file=sys.stderr)
      return 2
  rng = random.Random(args.seed)
  out = args.out or tempfile.mkdtemp(prefix='chaos_')
  data_dir = args.data_dir or os.path.join(out, 'tfds')
  plan = spread(args.kills, configs, rng)
  results, failed, start = {}, False, time.perf_counter()
  for config in configs:
    t0 = time.perf_counter()
    reference = os.path.join(out, config, 'uninterrupted')
    subprocess.run(train_argv(config, reference, data_dir, args.steps), check=True,
                   capture_output=True)  # fmt: skip
    wall = time.perf_counter() - t0
    print(f'{config}: uninterrupted in {wall:.1f}s; {len(plan[config])} kills', flush=True)
    workdir = os.path.join(out, config, 'chaos')
    # A tokenizer learned into the workdir (BERT's WordPiece) is learned anew by every run,
    # and the `tokenizers` trainer does not learn the same one twice: the chaos run starts
    # from the reference's, so the comparison is about kills, not about that trainer.
    learned = os.path.join(reference, 'tokenizer.json')
    if os.path.exists(learned):
      os.makedirs(workdir, exist_ok=True)
      shutil.copy(learned, workdir)
    runs = run_with_kills(
      train_argv(config, workdir, data_dir, args.steps, WORKERS), workdir, plan[config], wall, rng,
      lambda m: print(m, flush=True),
    )  # fmt: skip
    result = {**runs, **check(workdir, reference, args.steps), 'wall_s': time.perf_counter() - t0}
    results[config] = result
    failed |= bool(result['problems'])
    print(
      f'{config}: kills {runs["kills"]}, restarts {runs["restarts"]}, damaged '
      f'{len(result["damaged"])}, checkpoints {result["checkpoints"]}, equal {result["equal"]}, '
      f'metrics {"ok" if result["metrics_ok"] else "WRONG"}, {result["wall_s"]:.0f}s'
      + (f'; PROBLEMS: {result["problems"]}' if result['problems'] else ''),
      flush=True,
    )
  total = {
    'kills': sum(sum(r['kills'].values()) for r in results.values()),
    'checkpoint_kills': sum(r['kills']['checkpoint'] for r in results.values()),
    'restarts': sum(r['restarts'] for r in results.values()),
    'damaged': sum(len(r['damaged']) for r in results.values()),
    'all_equal': all(r['equal'] for r in results.values()),
    'wall_s': time.perf_counter() - start,
  }
  print(f'total: {total}', flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(
        {'configs': results, 'total': total, 'steps': args.steps, 'seed': args.seed,
         'workers': WORKERS},
        f,
      )  # fmt: skip
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
