"""bigjax: a functional model zoo for JAX."""

from bigjax import losses
from bigjax.registry import create_model, list_models

__version__ = '0.1.0'


def from_pretrained(local_dir: str):
  """Loads a Hugging Face style folder (config.json + *.safetensors): (model, variables).

  `variables` is a complete variable tree (`{'params': ...}`, plus `batch_stats` with
  BatchNorm), float32. Image models take NHWC images [B, H, W, C], as every bigjax model
  does; Hugging Face / PyTorch models take NCHW [B, C, H, W], so transpose pixel values
  with `x.transpose(0, 2, 3, 1)`. The weights are converted (convolution kernels from
  torch's [O, I, kh, kw] to [kh, kw, I, O]); pixel normalisation is applied by the caller.
  See `bigjax.convert` for the supported model types.
  """
  from bigjax.convert import from_pretrained as _load

  return _load(local_dir)


def save_pretrained(model, variables, folder: str, *, max_shard_size=None, overwrite=False):
  """Writes `model` and `variables` as a Hugging Face style folder (config.json +
  model.safetensors, sharded above `max_shard_size` bytes) that `transformers` and
  `from_pretrained` load; the reverse of `from_pretrained`, through the same mapping tables.

  Refuses an existing non-empty `folder` unless `overwrite=True`. See
  `bigjax.convert.save_pretrained` and `bigjax.convert.EXPORTERS` for the model classes.
  """
  from bigjax.convert import save_pretrained as _save

  _save(model, variables, folder, max_shard_size=max_shard_size, overwrite=overwrite)


__all__ = ['create_model', 'from_pretrained', 'list_models', 'losses', 'save_pretrained']
