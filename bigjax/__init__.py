"""bigjax: a functional model zoo for JAX."""

from bigjax import losses
from bigjax.registry import create_model, list_models

__version__ = '0.1.0'


def from_pretrained(local_dir: str):
  """Loads a Hugging Face style folder (config.json + *.safetensors): (model, variables)."""
  from bigjax.convert import from_pretrained as _load

  return _load(local_dir)


__all__ = ['create_model', 'from_pretrained', 'list_models', 'losses']
