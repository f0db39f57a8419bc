"""The distillation demonstrations, each against its from-scratch twin, over several seeds.

  python bench/distill_demos.py [--root runs/distill] [--seeds 0 1 2] [--demos digits gpt llama]

For each demo the teacher is trained first (or reused when its workdir already holds its
final checkpoint), then for every seed the student is trained twice with the same data,
steps and seed: from scratch (the config's `scratch` argument: distillation off) and
distilled. Each run is a fresh workdir under --root. Prints a markdown table (teacher,
student from scratch, student distilled, margin, wall time; mean and standard deviation over
the seeds) and writes every number to --out (JSON). Wall times include each run's start-up,
compilation and final evaluation; the total includes the teachers.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The GPT teacher: gpt_nano_pystdlib cut to 1,200 of its 2,200 steps (1.94 bits per byte
# instead of 1.69) to fit the budget.
GPT_TEACHER = {'train.steps': 1200, 'train.checkpoint_every': 1200}
# name -> (teacher config, teacher overrides, student config, metric, higher is better)
DEMOS = {
  'digits': (
    'resnet18_digits',
    {},
    'distill_resnet18_to_mlp_digits',
    'accuracy',
    True,
  ),
  'gpt': ('gpt_nano_pystdlib', GPT_TEACHER, 'distill_gpt_to_nano_pystdlib', 'bits_per_byte', False),
  'llama': (
    'gpt_nano_pystdlib',
    GPT_TEACHER,
    'distill_gpt_to_llama_pystdlib',
    'bits_per_byte',
    False,
  ),
  # Not in the default set (its 3 seeds do not fit the 30-minute budget beside the others).
  'lstm': (
    'gpt_nano_pystdlib',
    GPT_TEACHER,
    'distill_gpt_to_lstm_pystdlib',
    'bits_per_byte',
    False,
  ),
}
DEFAULT = ('digits', 'gpt', 'llama')


def _config(name: str, arg: str | None, overrides: dict):
  from bigjax.train.cli import apply_override, load_config

  path = os.path.join(ROOT, 'configs', f'{name}.py') + (f':{arg}' if arg else '')
  config, _ = load_config(path)
  for key, value in overrides.items():
    apply_override(config, key, str(value))
  return config


def _final_eval(workdir: str) -> dict | None:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return None
  evals = [json.loads(line) for line in open(path)]
  evals = [m for m in evals if m.get('split') == 'eval']
  return evals[-1] if evals else None


def _train(config, workdir: str) -> tuple[dict, float]:
  from bigjax.train.loop import train_and_evaluate

  start = time.perf_counter()
  result = train_and_evaluate(config, workdir, tty=False)
  return result, time.perf_counter() - start


def _teacher(name: str, overrides: dict, root: str, log) -> tuple[str, dict, float]:
  """The teacher's workdir, final eval and training time (0 when reused)."""
  workdir = os.path.join(root, 'teachers', name)
  config = _config(name, None, overrides)
  final = _final_eval(workdir)
  if final is not None and final['step'] == config.train.steps:
    log(f'teacher {name}: reusing {workdir}')
    return workdir, final, 0.0
  shutil.rmtree(workdir, ignore_errors=True)
  log(f'teacher {name}: training {config.train.steps} steps in {workdir}')
  result, seconds = _train(config, workdir)
  return workdir, result, seconds


def _mean_sd(values: list[float]) -> tuple[float, float]:
  return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', default=os.path.join('runs', 'distill'))
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--demos', nargs='+', default=list(DEFAULT), choices=list(DEMOS))
  parser.add_argument('--out', default=os.path.join('runs', 'distill', 'distill_demos.json'))
  args = parser.parse_args(argv)
  root = os.path.abspath(args.root)
  os.makedirs(root, exist_ok=True)
  log = lambda text: print(f'[{time.strftime("%H:%M:%S")}] {text}', flush=True)  # noqa: E731

  begin = time.perf_counter()
  teachers: dict[str, tuple[str, dict, float]] = {}
  report = {'seeds': args.seeds, 'demos': {}}
  for demo in args.demos:
    teacher_name, teacher_overrides, student, metric, higher = DEMOS[demo]
    if teacher_name not in teachers:
      teachers[teacher_name] = _teacher(teacher_name, teacher_overrides, root, log)
    teacher_dir, teacher_eval, teacher_seconds = teachers[teacher_name]
    runs = {'scratch': [], 'distilled': []}
    for seed in args.seeds:
      for arm in ('scratch', 'distilled'):
        overrides = {'seed': seed}
        if arm == 'distilled':
          overrides['distill.teacher'] = teacher_dir
        config = _config(student, 'scratch' if arm == 'scratch' else None, overrides)
        workdir = os.path.join(root, demo, f'{arm}_seed{seed}')
        shutil.rmtree(workdir, ignore_errors=True)
        log(f'{demo}: {arm} student, seed {seed}')
        result, seconds = _train(config, workdir)
        runs[arm].append({'seed': seed, metric: result[metric], 'seconds': seconds})
        log(f'{demo}: {arm} seed {seed}: {metric}={result[metric]:.4f} in {seconds:.0f} s')
    scratch = _mean_sd([r[metric] for r in runs['scratch']])
    distilled = _mean_sd([r[metric] for r in runs['distilled']])
    margin = distilled[0] - scratch[0] if higher else scratch[0] - distilled[0]
    wins = sum(
      (d[metric] > s[metric]) if higher else (d[metric] < s[metric])
      for s, d in zip(runs['scratch'], runs['distilled'])
    )
    report['demos'][demo] = {
      'teacher': teacher_name,
      'teacher_overrides': teacher_overrides,
      'teacher_dir': teacher_dir,
      f'teacher_{metric}': teacher_eval.get(metric),
      'teacher_seconds': teacher_seconds,
      'student': student,
      'metric': metric,
      'scratch': runs['scratch'],
      'distilled': runs['distilled'],
      'scratch_mean_sd': scratch,
      'distilled_mean_sd': distilled,
      'margin': margin,
      'seeds_won': wins,
    }
  report['total_seconds'] = time.perf_counter() - begin
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(report, f, indent=2)

  print()
  print('| demo | metric | teacher | student from scratch | student distilled | margin | '
        'seeds won | wall time (s): teacher, scratch, distilled per run |')  # fmt: skip
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for demo, r in report['demos'].items():
    m = r['metric']
    (s_mean, s_sd), (d_mean, d_sd) = r['scratch_mean_sd'], r['distilled_mean_sd']
    s_time = statistics.mean(x['seconds'] for x in r['scratch'])
    d_time = statistics.mean(x['seconds'] for x in r['distilled'])
    print(
      f'| {demo} ({r["student"]}) | {m} | {r[f"teacher_{m}"]:.4f} | {s_mean:.4f} ± {s_sd:.4f} '
      f'| {d_mean:.4f} ± {d_sd:.4f} | {r["margin"]:+.4f} | {r["seeds_won"]}/{len(args.seeds)} '
      f'| {r["teacher_seconds"]:.0f}, {s_time:.0f}, {d_time:.0f} |'
    )
  print(f'\ntotal wall time {report["total_seconds"] / 60:.1f} min (teachers included); {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
