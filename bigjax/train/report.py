"""Run reporting: metrics.jsonl, TensorBoard events, a progress bar or log lines, a PNG."""

import json
import os
import sys
import time

import jax
import tqdm


def rewind_metrics(path: str, step: int, final: bool = False) -> int:
  """Drops the rows of `path` logged after `step` (a run killed after its last checkpoint
  logged steps that its resume repeats) and any line cut short by the kill, so every step
  appears once; `final` (resuming at the last step, whose evaluation follows its
  checkpoint) also drops the evaluation at `step`. Returns how many lines were dropped."""
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
        keep = line.endswith('\n') and int(row['step']) <= step
        keep = keep and not (final and row['split'] == 'eval' and int(row['step']) == step)
      except (ValueError, KeyError, TypeError):
        keep = False
      if keep:
        kept.append(line)
      else:
        dropped += 1
  if dropped:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return dropped


class Reporter:
  """Writes metrics from process 0 only; other processes stay quiet."""

  def __init__(self, workdir: str, total_steps: int, start_step: int, *, tty: bool | None = None):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    self.total = total_steps
    self.tty = sys.stderr.isatty() if tty is None else tty
    self._last = (time.perf_counter(), start_step)
    self._bar = None
    self._tb = None
    if not self.enabled:
      return
    path = os.path.join(workdir, 'metrics.jsonl')
    final = start_step >= total_steps
    rewind_metrics(path, start_step, final=final)
    self._jsonl = open(path, 'a')
    from tensorboardX import SummaryWriter

    # On resume, TensorBoard is told to hide what the killed run logged after the checkpoint
    # (the steps this run repeats), as rewind_metrics drops them from metrics.jsonl.
    purge = (start_step if final else start_step + 1) if start_step else None
    # The pid in the name: a restart within the second of a killed run's start would
    # otherwise reopen (and truncate) that run's event file.
    self._tb = SummaryWriter(
      os.path.join(workdir, 'tensorboard'), purge_step=purge, filename_suffix=f'.{os.getpid()}'
    )
    if final and start_step:  # hiding the repeated final eval hid its step's train rows too
      with open(path) as f:
        for row in map(json.loads, f):
          if row['step'] == start_step:
            self._scalars(row['step'], row['split'], row)
    if self.tty:
      self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True)

  def log(self, msg: str) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(msg)
    else:
      print(msg, flush=True)

  def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({'step': step, 'split': split, **metrics}) + '\n')
    self._jsonl.flush()
    self._scalars(step, split, metrics)
    self._tb.flush()

  def _scalars(self, step: int, split: str, metrics: dict) -> None:
    for k, v in metrics.items():
      if k not in ('step', 'split') and isinstance(v, (int, float)):
        self._tb.add_scalar(f'{split}/{k}', v, step)

  def restart_clock(self, step: int) -> None:
    """Times progress from now, `step` done: the first step's compilation stays out of the
    steps/s and ETA (and of the progress bar's rate)."""
    self._last = (time.perf_counter(), step)
    if self._bar is not None:
      self._bar.reset(total=self.total)
      self._bar.initial = self._bar.n = self._bar.last_print_n = step

  def progress(self, step: int, metrics: dict[str, float]) -> None:
    """Called every log_every steps with the averaged train metrics."""
    if not self.enabled:
      return
    now = time.perf_counter()
    t0, s0 = self._last
    rate = (step - s0) / max(now - t0, 1e-9)
    self._last = (now, step)
    short = {k: f'{metrics[k]:.4f}' for k in ('loss', 'accuracy') if k in metrics}
    short.update(speed(metrics))
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix(short, refresh=True)
    else:
      parts = ' '.join(f'{k}={v}' for k, v in short.items())
      timing = ''
      if step > s0:  # not on the step the clock restarted at
        eta = (self.total - step) / max(rate, 1e-9)
        timing = f' {rate:.1f} steps/s eta {eta:.0f}s'
      print(f'step {step}/{self.total} {parts}{timing}', flush=True)

  def close(self) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.close()
    self._jsonl.close()
    self._tb.close()


# Throughput metrics (bigjax.train.flops.StepCost.rates) and how the console shows them.
_SPEED = {
  'examples_per_sec': ('ex/s', '{:.4g}'),
  'tokens_per_sec': ('tok/s', '{:.4g}'),
  'tflops_per_sec': ('TFLOP/s', '{:.3g}'),
  'mfu': ('MFU', '{:.1%}'),
}


def speed(metrics: dict[str, float]) -> dict[str, str]:
  """The throughput part of a console line: {'ex/s': '1234', ..., 'MFU': '41.0%'}."""
  return {label: fmt.format(metrics[k]) for k, (label, fmt) in _SPEED.items() if k in metrics}


def plot_curves(workdir: str) -> str:
  """Draws loss and accuracy against step (train and eval) into <workdir>/curves.png."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  keys = [
    k
    for k in ('loss', 'accuracy', 'bits_per_byte', 'bits_per_token', 'exact_match')
    if any(k in r for r in rows)
  ]
  fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
  for ax, key in zip(axes[0], keys):
    for split in ('train', 'eval'):
      pts = sorted((r['step'], r[key]) for r in rows if r['split'] == split and key in r)
      if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker='o' if split == 'eval' else None, label=split)
    ax.set_xlabel('step')
    ax.set_title(key)
    ax.legend()
    ax.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(workdir, 'curves.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
