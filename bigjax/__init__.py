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


__all__ = ['create_model', 'from_pretrained', 'list_models', 'losses']
