"""Model registry: name -> (Linen module class, default hyper-parameters).

Registration happens here, in one explicit place: `FAMILIES` names every family module,
and each of them defines a module-level table

  MODELS: dict[str, tuple[type[nn.Module], dict]]   # name -> (class, default options)

A family module never imports this one, so there is no import cycle and no registration by
side effect; a new family joins by adding its module name to `FAMILIES`.
"""

import difflib
import functools
import importlib
from typing import Any

import flax.linen as nn

# The family modules under `bigjax.models`, imported by name on first use.
FAMILIES: tuple[str, ...] = (
  'mlp',
  'lenet',
  'vgg',
  'resnet',
  'inception',
  'vit',
  'rnn',
  'seq2seq',
  'transformer',
  'bert',
  'gpt',
  'speech',
  'clip',
  'wavenet',
)

Spec = tuple[type[nn.Module], dict[str, Any]]


@functools.cache
def _registry() -> dict[str, Spec]:
  """Imports every family in `FAMILIES` and merges their `MODELS` tables (once)."""
  registry: dict[str, Spec] = {}
  for family in FAMILIES:
    module = importlib.import_module(f'bigjax.models.{family}')
    models = getattr(module, 'MODELS', None)
    if not isinstance(models, dict):
      raise TypeError(f'bigjax.models.{family} defines no MODELS table (name -> (class, defaults))')
    for name, (cls, defaults) in models.items():
      if name in registry:
        raise ValueError(f'model {name!r} is defined twice (again in bigjax.models.{family})')
      registry[name] = (cls, dict(defaults))
  return registry


def list_models() -> list[str]:
  """Returns the sorted names of every registered model."""
  return sorted(_registry())


def model_spec(name: str) -> Spec:
  """Returns (class, defaults) for `name`; unknown names raise with close matches."""
  registry = _registry()
  if name not in registry:
    close = difflib.get_close_matches(name, registry, n=3, cutoff=0.5)
    hint = f'did you mean {", ".join(close)}? ' if close else ''
    raise ValueError(f'unknown model {name!r}: {hint}known models: {", ".join(sorted(registry))}')
  cls, defaults = registry[name]
  return cls, dict(defaults)


def create_model(name: str, **overrides: Any) -> nn.Module:
  """Builds the registered model `name`, with `overrides` replacing its defaults."""
  cls, defaults = model_spec(name)
  fields = set(cls.__dataclass_fields__) - {'parent', 'name'}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(
      f'model {name!r} has no option(s) {", ".join(unknown)}; '
      f'its options are: {", ".join(sorted(fields))}'
    )
  return cls(**{**defaults, **overrides})
