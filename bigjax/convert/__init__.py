"""Weight import from Hugging Face style folders: `config.json` + safetensors, never pickle.

`from_pretrained(local_dir)` reads the folder, picks the converter module for
`config.json`'s `model_type` and returns `(model, variables)`, a complete variable tree
for a model that takes NHWC images (converted from the NCHW layout of PyTorch); each
converter module (`hf_<arch>.py`) exposes `table(model) -> mapping.Table` (its one name
and layout mapping, read in both directions), `convert(config: dict, tensors: dict[str,
np.ndarray])` (import) and `export(model, variables) -> (config, tensors)`.

Converters from `torch.nn` modules (state dicts of numpy arrays, both directions):
`torch_rnn` (`RNN`/`LSTM`/`GRU`, and the recurrent state's layout) and `torch_transformer`
(`torch.nn.Transformer`). They too return complete variable trees (`{'params': ...}`).
"""

import importlib
import json
import os

import flax.linen as nn
import numpy as np
from safetensors.numpy import load_file

from bigjax.typing import PyTree

# config.json `model_type` -> converter module (one line per source architecture).
CONVERTERS: dict[str, str] = {
  'vit': 'bigjax.convert.hf_vit',
  'resnet': 'bigjax.convert.hf_resnet',
}

_WEIGHTS = 'model.safetensors'
_INDEX = 'model.safetensors.index.json'


def read_config(local_dir: str) -> dict:
  """Returns the parsed `config.json` of `local_dir`."""
  if not os.path.isdir(local_dir):
    raise FileNotFoundError(
      f'{local_dir!r} is not a directory: pass a folder written by save_pretrained '
      '(config.json + model.safetensors)'
    )
  path = os.path.join(local_dir, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'no config.json in {local_dir!r}: pass a folder written by save_pretrained '
      '(config.json + model.safetensors)'
    )
  with open(path) as f:
    return json.load(f)


def read_tensors(local_dir: str) -> dict[str, np.ndarray]:
  """Reads `model.safetensors`, or the shards named by `model.safetensors.index.json`."""
  index = os.path.join(local_dir, _INDEX)
  single = os.path.join(local_dir, _WEIGHTS)
  if os.path.isfile(index):
    with open(index) as f:
      files = sorted(set(json.load(f)['weight_map'].values()))
  elif os.path.isfile(single):
    files = [_WEIGHTS]
  else:
    pickled = [n for n in os.listdir(local_dir) if n.endswith(('.bin', '.pt', '.pth', '.ckpt'))]
    hint = (
      f' (found {", ".join(sorted(pickled))}: bigjax never loads pickled weights; '
      'load them in PyTorch and re-save with save_pretrained, which writes safetensors)'
      if pickled
      else ''
    )
    raise FileNotFoundError(f'no {_WEIGHTS} or {_INDEX} in {local_dir!r}{hint}')
  tensors: dict[str, np.ndarray] = {}
  for name in files:
    path = os.path.join(local_dir, name)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{_INDEX} in {local_dir!r} names {name}, which is missing')
    for key, value in load_file(path).items():
      if key in tensors:
        raise ValueError(f'tensor {key!r} appears in two shards of {local_dir!r}')
      tensors[key] = value
  return tensors


def from_pretrained(local_dir: str) -> tuple[nn.Module, PyTree]:
  """Loads a Hugging Face style folder into a bigjax model: `(model, variables)`.

  `variables` is the complete variable tree (`{'params': ...}`, plus `batch_stats` for
  models with BatchNorm), float32 whatever the checkpoint's dtype; for bf16 compute use
  `model.clone(dtype=jnp.bfloat16)` with the same variables.

  Image layout: the returned model takes NHWC images, [B, H, W, C] float, like every bigjax
  model; Hugging Face (PyTorch) models take NCHW [B, C, H, W], so feed
  `pixel_values.transpose(0, 2, 3, 1)`. Convolution kernels are converted from torch's
  [O, I, kh, kw] to Flax's [kh, kw, I, O]. Pixel normalisation (the image processor's
  mean and std) is not part of the weights: apply it before the model, as in transformers.
  """
  config = read_config(local_dir)
  model_type = config.get('model_type')
  if model_type not in CONVERTERS:
    raise ValueError(
      f'config.json in {local_dir!r} has model_type {model_type!r}, which bigjax cannot '
      f'convert; supported model types: {", ".join(sorted(CONVERTERS))}'
    )
  converter = importlib.import_module(CONVERTERS[model_type])
  return converter.convert(config, read_tensors(local_dir))


__all__ = ['CONVERTERS', 'from_pretrained', 'read_config', 'read_tensors']
