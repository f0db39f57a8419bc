"""Weights in and out of Hugging Face style folders: `config.json` + safetensors, never pickle.

`from_pretrained(local_dir)` reads the folder, picks the converter module for
`config.json`'s `model_type` and returns `(model, variables)`, a complete variable tree
for a model that takes NHWC images (converted from the NCHW layout of PyTorch); each
converter module (`hf_<arch>.py`) exposes `table(model) -> mapping.Table` (its one name
and layout mapping, read in both directions), `convert(config: dict, tensors: dict[str,
np.ndarray])` (import) and `export(model, variables) -> (config, tensors)`.

`save_pretrained(model, variables, folder)` is the reverse: it picks the converter module by
the model's class (`EXPORTERS`), and writes what its `export` returns, a folder
`transformers`' `from_pretrained` loads.

Converters from `torch.nn` modules (state dicts of numpy arrays, both directions):
`torch_rnn` (`RNN`/`LSTM`/`GRU`, and the recurrent state's layout) and `torch_transformer`
(`torch.nn.Transformer`). They too return complete variable trees (`{'params': ...}`).
"""

import importlib
import json
import os
import shutil
import tempfile

import flax.linen as nn
import numpy as np
from safetensors.numpy import load_file, save_file

from bigjax.typing import PyTree

# config.json `model_type` -> converter module (one line per source architecture).
CONVERTERS: dict[str, str] = {
  'vit': 'bigjax.convert.hf_vit',
  'resnet': 'bigjax.convert.hf_resnet',
  'bert': 'bigjax.convert.hf_bert',
  'roberta': 'bigjax.convert.hf_bert',
  'gpt2': 'bigjax.convert.hf_gpt',
  'llama': 'bigjax.convert.hf_gpt',
  'mixtral': 'bigjax.convert.hf_gpt',
  'clip': 'bigjax.convert.hf_clip',
}

# bigjax model class name -> converter module whose `export` writes it (the reverse of
# CONVERTERS).
EXPORTERS: dict[str, str] = {
  'ViT': 'bigjax.convert.hf_vit',
  'ResNet': 'bigjax.convert.hf_resnet',
  'Bert': 'bigjax.convert.hf_bert',
  'Gpt': 'bigjax.convert.hf_gpt',
  'CLIP': 'bigjax.convert.hf_clip',
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
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(
        f'{path} is not valid JSON ({e.msg} at line {e.lineno}): fix it or re-save the folder '
        'with save_pretrained'
      ) from None


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
    try:
      loaded = load_file(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
      why = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise ValueError(
        f'{path} is not a readable safetensors file ({why}): it may be truncated or of '
        'another format; re-save it with save_pretrained'
      ) from None
    for key, value in loaded.items():
      if key in tensors:
        raise ValueError(f'tensor {key!r} appears in two shards of {local_dir!r}')
      tensors[key] = value
  return tensors


def from_pretrained(local_dir: str) -> tuple[nn.Module, PyTree]:
  """Loads a Hugging Face style folder into a bigjax model: `(model, variables)`.

  `variables` is the complete variable tree (`{'params': ...}`, plus `batch_stats` for
  models with BatchNorm), float32 whatever the checkpoint's dtype; for bf16 compute use
  `model.clone(dtype=jnp.bfloat16)` with the same variables.

  Decoder LMs (gpt2, llama, mixtral: `bigjax.convert.hf_gpt`) take token ids and
  `segment_ids` = transformers' attention mask; their tokenizer loads with
  `bigjax.data.tokenizers.load_tokenizer(local_dir)`. CLIP (`bigjax.convert.hf_clip`) takes
  `(images, input_ids)` and returns a `ModelOutput` (logits_per_image, unit embeddings);
  its BPE tokenizer loads the same way.

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


def _shards(tensors: dict[str, np.ndarray], max_shard_size: int) -> list[dict[str, np.ndarray]]:
  """Splits `tensors` (in order) into groups of at most `max_shard_size` bytes each (a
  tensor larger than that gets a group of its own)."""
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, value in tensors.items():
    if shards[-1] and size + value.nbytes > max_shard_size:
      shards.append({})
      size = 0
    shards[-1][name] = value
    size += value.nbytes
  return shards


def _write(folder: str, config: dict, tensors: dict[str, np.ndarray], max_shard_size) -> None:
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump(config, f, indent=2, sort_keys=True)
  total = sum(v.nbytes for v in tensors.values())
  metadata = {'format': 'pt'}  # transformers checks it; the tensors are in torch's layout
  if max_shard_size is None or total <= max_shard_size:
    save_file(tensors, os.path.join(folder, _WEIGHTS), metadata=metadata)
    return
  shards = _shards(tensors, max_shard_size)
  weight_map = {}
  for i, shard in enumerate(shards, start=1):
    name = f'model-{i:05d}-of-{len(shards):05d}.safetensors'
    save_file(shard, os.path.join(folder, name), metadata=metadata)
    weight_map.update({k: name for k in shard})
  with open(os.path.join(folder, _INDEX), 'w') as f:
    json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map}, f, indent=2)


def save_pretrained(
  model: nn.Module,
  variables: PyTree,
  folder: str,
  *,
  max_shard_size: int | None = None,
  overwrite: bool = False,
) -> None:
  """Writes `model` and its `variables` as a Hugging Face style folder.

  The folder holds `config.json` and `model.safetensors` (float32, torch layouts), or, when
  the weights exceed `max_shard_size` bytes, shards `model-0000i-of-0000n.safetensors`
  and `model.safetensors.index.json`; `transformers`' `from_pretrained(folder)` and
  `bigjax.from_pretrained(folder)` load it. It is written beside `folder` and renamed into
  place, so a failed save leaves no partial folder. An existing non-empty `folder` is
  refused unless `overwrite=True`, which replaces it as a whole (any other files in it go).
  """
  name = type(model).__name__
  if name not in EXPORTERS:
    raise ValueError(
      f'bigjax cannot export {name} models to Hugging Face format; exportable model '
      f'classes: {", ".join(sorted(EXPORTERS))}'
    )
  if max_shard_size is not None and (not isinstance(max_shard_size, int) or max_shard_size < 1):
    raise ValueError(f'max_shard_size must be a positive number of bytes, got {max_shard_size!r}')
  folder = os.path.abspath(folder)
  exists = os.path.lexists(folder)
  if exists and not os.path.isdir(folder):
    raise ValueError(f'{folder!r} exists and is not a directory: pass a folder path')
  if exists and os.listdir(folder) and not overwrite:
    raise ValueError(
      f'{folder!r} exists and is not empty: pass an empty or new folder, or overwrite=True '
      'to replace it'
    )
  config, tensors = importlib.import_module(EXPORTERS[name]).export(model, variables)
  parent = os.path.dirname(folder)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(folder)}.', dir=parent)
  try:
    _write(tmp, config, tensors, max_shard_size)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private to the user
    if not exists:
      os.rename(tmp, folder)
      return
    # Move the old folder aside, put the new one in its place, then delete the old one.
    aside = tempfile.mkdtemp(prefix=f'.{os.path.basename(folder)}.old.', dir=parent)
    os.rename(folder, os.path.join(aside, 'old'))
    try:
      os.rename(tmp, folder)
    except BaseException:
      os.rename(os.path.join(aside, 'old'), folder)
      raise
    shutil.rmtree(aside)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


__all__ = [
  'CONVERTERS',
  'EXPORTERS',
  'from_pretrained',
  'read_config',
  'read_tensors',
  'save_pretrained',
]
