"""Model registry: name -> (Linen module class, default hyper-parameters).

Each family module calls `register` at import time; `bigjax.models` imports them all.
"""

import difflib
from typing import Any

import flax.linen as nn

_REGISTRY: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {}


def register(name: str, cls: type[nn.Module], **defaults: Any) -> None:
  """Registers `cls` under `name` with default constructor arguments."""
  if name in _REGISTRY:
    raise ValueError(f'model {name!r} is registered twice')
  _REGISTRY[name] = (cls, defaults)


def _ensure_loaded() -> None:
  import bigjax.models  # noqa: F401  (registers every family)


def list_models() -> list[str]:
  """Returns the sorted names of every registered model."""
  _ensure_loaded()
  return sorted(_REGISTRY)


def model_spec(name: str) -> tuple[type[nn.Module], dict[str, Any]]:
  """Returns (class, defaults) for `name`; unknown names raise with close matches."""
  _ensure_loaded()
  if name not in _REGISTRY:
    close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
    hint = f'did you mean {", ".join(close)}? ' if close else ''
    raise ValueError(f'unknown model {name!r}: {hint}known models: {", ".join(sorted(_REGISTRY))}')
  return _REGISTRY[name]


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
