"""A run's model and weights from its config and workdir, without the trainer's loop:
`build_model(config)` and `restore_from_workdir(workdir, step)` (used by the loop, by
`python -m bigjax.generate` and by distillation to load a teacher).
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigjax.registry import create_model, model_spec
from bigjax.train.checkpoint import Checkpointer
from bigjax.train.state import TERM_PARAMS_KEY, split_variables

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def build_model(config: ml_collections.ConfigDict):
  """The model named by `config.model`, with its overrides and the compute dtype."""
  overrides = {k: v for k, v in config.model.items() if k != 'name'}
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  dtype = config.train.get('compute_dtype', 'float32')
  if dtype not in DTYPES:
    raise ValueError(f'unknown train.compute_dtype {dtype!r}; choose one of {list(DTYPES)}')
  cls, _ = model_spec(config.model.name)
  if dtype != 'float32' and 'dtype' in cls.__dataclass_fields__:
    overrides['dtype'] = DTYPES[dtype]  # bf16 compute, fp32 parameters
  return create_model(config.model.name, **overrides)


def restore_from_workdir(workdir: str, step: int | None = None, *, ema: bool = False):
  """Loads a run's config and the model's variables at `step` (default: the latest
  readable checkpoint): (config, model, variables). Reads the parameters and model state
  only (no optimiser state, no data iterator, no loss terms' own parameters such as a
  distillation hint's projection), as numpy arrays. `ema`: the exponential moving average
  of the parameters instead (a run trained with train.ema_decay > 0)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{workdir!r} has no config.json: is it a bigjax workdir?')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    if step is None:
      step, _ = checkpointer.readable_step()  # the newest whose files match their checksums
      if step is None:
        raise FileNotFoundError(f'{workdir!r} has no checkpoint yet: train it first')
    elif step not in checkpointer.manager.all_steps():
      raise FileNotFoundError(
        f'{workdir!r} has no committed checkpoint at step {step}: it has steps '
        f'{sorted(checkpointer.manager.all_steps())}'
      )
    meta = checkpointer.meta(step)
    inputs = tuple(np.zeros(shape, dtype) for shape, dtype in meta['inputs'])
    model = build_model(config)

    def shapes(rng):
      variables = model.init({'params': rng, 'dropout': rng}, *inputs, train=False)
      return split_variables(model, variables, rng, inputs)

    params, model_state = jax.eval_shape(shapes, jax.random.key(0))
    if ema and not float(config.get('train', {}).get('ema_decay', 0.0)):
      raise ValueError(
        f'{workdir!r} was trained without a moving average (train.ema_decay=0): drop --ema'
      )
    # The averaged parameters live in the optimiser state (bigjax.train.optim.EmaState).
    target = {'opt_state': {'ema': params}} if ema else {'params': params}
    if model_state:
      target['model_state'] = model_state
    restored = checkpointer.restore_subset(step, target)
  finally:
    checkpointer.close()
  chosen = restored['opt_state']['ema'] if ema else restored['params']
  if isinstance(chosen, dict) and TERM_PARAMS_KEY in chosen:
    chosen = {k: v for k, v in chosen.items() if k != TERM_PARAMS_KEY}
  return config, model, {'params': chosen, **restored.get('model_state', {})}
