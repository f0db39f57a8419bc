"""Every numeric value of a config checked before the workdir is touched: one table of
(key, rule), one line per problem naming the key, the value and what to set instead.

A key that a config does not have is skipped (older workdirs, configs that drop a section).
"""

import json
import math
import os
import re
from typing import Any

# rule: (kind, low, high, low_open, high_open) for numbers; 'int' forbids floats.
_INT, _NUM = 'an integer', 'a number'
RULES: tuple[tuple[str, str, float, float, bool, bool], ...] = (
  ('seed', _INT, -math.inf, math.inf, False, False),
  ('train.steps', _INT, 0, math.inf, False, False),
  ('train.batch_size', _INT, 1, math.inf, False, False),
  ('train.eval_batch_size', _INT, 1, math.inf, False, False),
  ('train.log_every', _INT, 1, math.inf, False, False),
  ('train.eval_every', _INT, 0, math.inf, False, False),
  ('train.checkpoint_every', _INT, 1, math.inf, False, False),
  ('train.keep_checkpoints', _INT, 1, math.inf, False, False),
  ('train.stop_check_every', _INT, 1, math.inf, False, False),
  ('train.label_smoothing', _NUM, 0, 1, False, True),
  ('train.aux_loss_weight', _NUM, 0, math.inf, False, False),
  ('train.peak_tflops', _NUM, 0, math.inf, False, False),
  ('train.max_nonfinite_skips', _INT, 1, math.inf, False, False),
  ('train.ema_decay', _NUM, 0, 1, False, True),
  ('optim.lr', _NUM, 0, math.inf, True, False),
  ('optim.weight_decay', _NUM, 0, math.inf, False, False),
  ('optim.momentum', _NUM, 0, 1, False, True),
  ('optim.b1', _NUM, 0, 1, False, True),
  ('optim.b2', _NUM, 0, 1, False, True),
  ('optim.eps', _NUM, 0, math.inf, False, False),
  ('optim.clip_norm', _NUM, 0, math.inf, False, False),
  ('optim.grad_accum_steps', _INT, 1, math.inf, False, False),
  ('optim.layer_decay', _NUM, 0, 1, True, False),
  ('schedule.warmup_steps', _INT, 0, math.inf, False, False),
  ('schedule.end_factor', _NUM, 0, math.inf, False, False),
  ('data.workers', _INT, 0, math.inf, False, False),
  ('distill.alpha', _NUM, 0, 1, False, False),
  ('distill.temperature', _NUM, 0, math.inf, True, False),
  ('distill.top_k', _INT, 0, math.inf, False, False),
)


def _get(config, key: str) -> tuple[bool, Any]:
  node = config
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return False, None
    node = node[part]
  return True, node


def _range(low, high, low_open, high_open) -> str:
  if high == math.inf:
    return f'> {low:g}' if low_open else f'>= {low:g}'
  left, right = '(' if low_open else '[', ')' if high_open else ']'
  return f'in {left}{low:g}, {high:g}{right}'


CHOICES = {'train.nonfinite': ('off', 'skip', 'halt')}


def check_config(config) -> None:
  """Raises ValueError on the first value of `config` outside its rule (see RULES)."""
  for key, choices in CHOICES.items():
    present, value = _get(config, key)
    if present and value not in choices:
      raise ValueError(f'{key}={value!r} is not one of {", ".join(choices)}: set --config.{key}')
  for key, kind, low, high, low_open, high_open in RULES:
    present, value = _get(config, key)
    if not present:
      continue
    allowed = _range(low, high, low_open, high_open)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (kind == _INT and not isinstance(value, int)):
      raise ValueError(f'{key}={value!r} is not {kind}: set --config.{key} to {kind} {allowed}')
    too_low = value < low or (low_open and value == low)
    too_high = value > high or (high_open and value == high)
    if not math.isfinite(value) and not (key == 'seed'):
      too_high = True
    if too_low or too_high:
      raise ValueError(f'{key}={value!r} is out of range: set --config.{key} to {kind} {allowed}')


# Settings that may change between a run and its resume: logging, evaluation, checkpoint
# cadence, I/O and performance switches, the mesh (checkpoints restore onto any mesh) and
# init_from (ignored on resume). Anything else changes the training itself (data.workers
# too: Grain's iterator state differs with and without worker processes).
RESUMABLE = re.compile(
  r'^(allow_changes|init_from|init_from_skip|mesh\..*|data\.(data_dir|prefetch|'
  r'workdir|tokenizer)|train\.(log_every|eval_every|eval_steps|eval_batch_size|'
  r'checkpoint_every|keep_checkpoints|stop_check_every|peak_tflops|compilation_cache_dir|'
  r'xla_flags|donate|device_memory_gb))$'
)


def _flat(tree, prefix=''):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def config_changes(workdir: str, config) -> list[str]:
  """'key: old -> new' for every setting of `config` that differs from the workdir's
  config.json (keys only one side has are left out: another bigjax version), except the
  RESUMABLE ones; [] when there is no config.json."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    return []
  try:
    with open(path) as f:
      old = _flat(json.load(f))
  except (OSError, ValueError):
    return []  # unreadable: nothing to compare with (it is rewritten)
  new = _flat(json.loads(config.to_json_best_effort()))
  return [
    f'{k}: {old[k]!r} -> {new[k]!r}'
    for k in sorted(set(old) & set(new))
    if old[k] != new[k] and not RESUMABLE.match(k)
  ]


def check_resume_changes(workdir: str, config) -> list[str]:
  """Refuses (ValueError) to resume with changed settings unless config.allow_changes; with
  it, returns the changes to log."""
  changes = config_changes(workdir, config)
  if changes and not config.get('allow_changes', False):
    raise ValueError(
      f'{workdir} was trained with other settings ({"; ".join(changes)}): run with the same '
      'settings to resume, pass --config.allow_changes=true to resume with these, or use '
      'another --workdir (nothing was changed)'
    )
  return changes
