"""A config without ml_collections: nested dicts read as `config.train.batch_size`.

The train step, tasks and optimiser read their configs through attribute access and
`.get(key, default)` only, so an `ml_collections.ConfigDict` and a `PlainConfig` both work;
the benchmark (bench/suite.py) builds steps with this one on machines without ml_collections.
"""

from typing import Any


class PlainConfig(dict):
  """A dict whose keys read as attributes; nested dicts become PlainConfigs too."""

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    for key, value in self.items():
      if isinstance(value, dict) and not isinstance(value, PlainConfig):
        self[key] = PlainConfig(value)

  def __getattr__(self, key: str) -> Any:
    try:
      return self[key]
    except KeyError:
      raise AttributeError(f'config has no field {key!r}') from None
