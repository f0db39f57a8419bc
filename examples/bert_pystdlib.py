"""Pre-train BERT, then fine-tune it: the two-step example, offline, with its control.

1. Masked-LM + next-sentence pre-training of `bert_tiny` on the Python standard library's
   sources (`configs/bert_tiny_pystdlib_mlm.py`), which also trains the WordPiece
   vocabulary and saves it in the pre-training workdir.
2. Fine-tuning on `pystdlib_syntax` ("is this snippet valid Python, says `compile()`?",
   split by file as `pystdlib` is) from the pre-trained encoder (`init_from`), and the
   same fine-tuning from a random initialisation, with the same tokenizer, steps and
   seeds (`configs/bert_tiny_pystdlib_finetune.py`).

It prints and writes (<workdir>/summary.json, summary.md) the held-out accuracy of both
arms for every seed, their mean and standard deviation, and the wall time of each stage.
Re-running with the same --workdir reuses the finished runs (each workdir resumes).

  python examples/bert_pystdlib.py --workdir runs/bert_pystdlib_demo [--seeds 0,1,2]
"""

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bigjax.train import cli  # noqa: E402


def _config(name: str, test: bool) -> str:
  return os.path.join(ROOT, 'configs', f'{name}.py') + (':test' if test else '')


def _final_eval(workdir: str) -> dict:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r['split'] == 'eval']
  if not evals:
    raise RuntimeError(f'{workdir} has no evaluation: the run did not finish')
  return evals[-1]


def _run(config: str, workdir: str, overrides: list[str]) -> float:
  start = time.perf_counter()
  rc = cli.main(['--config', config, '--workdir', workdir, *overrides])
  if rc:
    raise SystemExit(f'training {config} in {workdir} failed (exit code {rc})')
  return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default=os.path.join('runs', 'bert_pystdlib_demo'))
  parser.add_argument('--seeds', default='0,1,2', help='fine-tuning seeds, comma separated')
  parser.add_argument('--data_dir', default='', help='TFDS data dir ("" = the default)')
  parser.add_argument('--test', action='store_true', help="the configs' tiny test variants")
  parser.add_argument(
    '--finetune', nargs='*', default=[], help='extra --config.key=value for fine-tuning'
  )
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',') if s]
  common = [f'--config.data.data_dir={args.data_dir}'] if args.data_dir else []
  pretrain_dir = os.path.join(args.workdir, 'pretrain')
  times = {'pretrain': _run(_config('bert_tiny_pystdlib_mlm', args.test), pretrain_dir, common)}
  pretrain_eval = _final_eval(pretrain_dir)
  tokenizer = os.path.join(os.path.abspath(pretrain_dir), 'tokenizer.json')

  results = {'pretrained': {}, 'scratch': {}}
  for arm, init in (('pretrained', os.path.abspath(pretrain_dir)), ('scratch', '')):
    start = time.perf_counter()
    for seed in seeds:
      workdir = os.path.join(args.workdir, f'{arm}_seed{seed}')
      overrides = [
        *common,
        f'--config.seed={seed}',
        f'--config.init_from={init}',
        f'--config.data.tokenizer={tokenizer}',
        *args.finetune,
      ]
      _run(_config('bert_tiny_pystdlib_finetune', args.test), workdir, overrides)
      results[arm][seed] = _final_eval(workdir)['accuracy']
    times[f'finetune_{arm}'] = time.perf_counter() - start

  def stats(values):
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

  summary = {'seeds': seeds, 'pretrain_eval': pretrain_eval, 'times_s': times}
  for arm, accs in results.items():
    mean, std = stats(accs.values())
    summary[arm] = {'accuracy': accs, 'mean': mean, 'std': std}
  gains = [results['pretrained'][s] - results['scratch'][s] for s in seeds]
  summary['gain'] = dict(zip(('mean', 'std'), stats(gains)))
  lines = [
    '| arm | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean ± std |',
    '| --- | ' + ' | '.join('---' for _ in seeds) + ' | --- |',
  ]
  for arm in ('pretrained', 'scratch'):
    row = summary[arm]
    cells = ' | '.join(f'{row["accuracy"][s]:.4f}' for s in seeds)
    lines.append(f'| {arm} | {cells} | {row["mean"]:.4f} ± {row["std"]:.4f} |')
  g = summary['gain']
  lines.append('')
  lines.append(f'gain from pre-training: {g["mean"]:+.4f} ± {g["std"]:.4f} (accuracy points)')
  lines.append('wall time: ' + ', '.join(f'{k} {v:.0f} s' for k, v in times.items()))
  table = '\n'.join(lines)
  print(table)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(args.workdir, 'summary.md'), 'w') as f:
    f.write(table + '\n')
  return summary


if __name__ == '__main__':
  main()
