"""Hugging Face `ResNetForImageClassification` <-> `bigjax.models.resnet.ResNet`.

HF ResNet (`microsoft/resnet-*`) is v1.5 (stride on the 3x3 of a bottleneck) with a 7x7
stride-2 stem, a 3x3 stride-2 max-pool padded by 1, BN eps 1e-5: the layout of bigjax's
ResNet. Source names (what `save_pretrained` writes):
  resnet.embedder.embedder.{convolution, normalization} -> stem_conv, stem_bn
  resnet.encoder.stages.{i}.layers.{j}.layer.{k}.*      -> stage_{i}/block_{j}/conv{k+1}, bn{k+1}
  resnet.encoder.stages.{i}.layers.{j}.shortcut.*       -> stage_{i}/block_{j}/downsample/conv, bn
  classifier.1                                          -> head
BN weight/bias -> params scale/bias; running_mean/var -> batch_stats mean/var;
num_batches_tracked is skipped on import (training bookkeeping only); `export` leaves it
out too (transformers then keeps its initial 0, which eval mode never reads).

`table(model)` is the one name and layout mapping; `convert` (import) and `export` read it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.convert import mapping
from bigjax.models.resnet import ResNet
from bigjax.registry import create_model
from bigjax.typing import PyTree

_EXPANSION = {'basic': 1, 'bottleneck': 4}


def model_overrides(config: dict, num_classes: int) -> dict:
  """HF ResNetConfig fields -> `create_model('resnet50', **overrides)` arguments."""
  layer_type = config.get('layer_type', 'bottleneck')
  if layer_type not in _EXPANSION:
    raise ValueError(f'ResNet layer_type {layer_type!r} is not one of {sorted(_EXPANSION)}')
  if config.get('hidden_act', 'relu') != 'relu':
    raise ValueError(f'ResNet hidden_act {config["hidden_act"]!r} is not supported (relu only)')
  if config.get('downsample_in_bottleneck', False):
    raise ValueError(
      'ResNet v1 checkpoints (downsample_in_bottleneck=true) are not supported: '
      'bigjax ResNet is v1.5, with the stride on the 3x3 convolution'
    )
  if config.get('downsample_in_first_stage', False):
    raise ValueError('ResNet checkpoints with downsample_in_first_stage=true are not supported')
  width = int(config.get('embedding_size', 64))
  hidden = [int(h) for h in config.get('hidden_sizes', [256, 512, 1024, 2048])]
  depths = tuple(int(d) for d in config.get('depths', [3, 4, 6, 3]))
  expected = [width * 2**i * _EXPANSION[layer_type] for i in range(len(hidden))]
  if hidden != expected or len(depths) != len(hidden):
    raise ValueError(
      f'ResNet config with embedding_size={width}, hidden_sizes={hidden}, depths='
      f'{list(depths)} is not a standard ResNet; bigjax needs one depth per stage and '
      f'hidden_sizes={expected} (width doubling per stage, x4 for bottleneck blocks)'
    )
  return dict(
    stage_sizes=depths, block=layer_type, width=width, num_classes=num_classes, cifar_stem=False
  )


def table(model: ResNet) -> mapping.Table:
  """The ResNet mapping (ResNetForImageClassification names)."""
  t = mapping.Table(skip=[r'.*\.num_batches_tracked'])

  def conv_bn(conv_path, bn_path, name):
    t.add(f'params/{conv_path}/kernel', f'{name}.convolution.weight', mapping.CONV)
    t.norm(f'params/{bn_path}', f'{name}.normalization')
    t.add(f'batch_stats/{bn_path}/mean', f'{name}.normalization.running_mean')
    t.add(f'batch_stats/{bn_path}/var', f'{name}.normalization.running_var')

  conv_bn('stem_conv', 'stem_bn', 'resnet.embedder.embedder')
  num_convs = 3 if model.block == 'bottleneck' else 2
  for i, depth in enumerate(model.stage_sizes):
    for j in range(depth):
      dst, src = f'stage_{i}/block_{j}', f'resnet.encoder.stages.{i}.layers.{j}'
      for k in range(num_convs):
        conv_bn(f'{dst}/conv{k + 1}', f'{dst}/bn{k + 1}', f'{src}.layer.{k}')
      # The first block of a stage projects its shortcut when it strides (every stage but
      # the first) or widens (bottleneck blocks: width -> 4 x width).
      if j == 0 and (i > 0 or model.block == 'bottleneck'):
        conv_bn(f'{dst}/downsample/conv', f'{dst}/downsample/bn', f'{src}.shortcut')
  t.dense('params/head', 'classifier.1')
  return t


def convert(config: dict, tensors: dict[str, np.ndarray]) -> tuple[nn.Module, PyTree]:
  """Builds the bigjax ResNet described by `config` and fills it from `tensors`."""
  if 'classifier.1.weight' not in tensors:
    raise ValueError(
      'only ResNetForImageClassification checkpoints are supported: this one '
      'has no classifier.1.weight (save the classification model instead)'
    )
  model = create_model('resnet50', **model_overrides(config, mapping.hf_num_labels(config)))
  # The spatial size does not change the variables; 32x32 keeps the shape tracing cheap.
  image = jax.ShapeDtypeStruct((1, 32, 32, int(config.get('num_channels', 3))), jnp.float32)
  abstract = mapping.abstract_variables(model, image)
  what = 'ResNetForImageClassification checkpoint'
  return model, table(model).import_variables(tensors, abstract, what)


def export(model: ResNet, variables: PyTree) -> tuple[dict, dict[str, np.ndarray]]:
  """A bigjax ResNet -> Hugging Face `config.json` (as a dict) and safetensors tensors."""
  name = type(model).__name__
  if model.cifar_stem:
    raise ValueError(
      f'{name} with cifar_stem=True has no Hugging Face form (HF ResNet has the 7x7 '
      'stride-2 stem and max-pool): train with cifar_stem=False to export'
    )
  if model.block not in _EXPANSION:
    raise ValueError(f'{name} block {model.block!r} is not one of {sorted(_EXPANSION)}')
  if model.num_classes < 1:
    raise ValueError(f'{name} with num_classes={model.num_classes} cannot be exported')
  channels = int(variables['params']['stem_conv']['kernel'].shape[2])  # [kh, kw, C, width]
  expansion = _EXPANSION[model.block]
  config = {
    'model_type': 'resnet',
    'architectures': ['ResNetForImageClassification'],
    'num_channels': channels,
    'embedding_size': model.width,
    'hidden_sizes': [model.width * 2**i * expansion for i in range(len(model.stage_sizes))],
    'depths': list(model.stage_sizes),
    'layer_type': model.block,
    'hidden_act': 'relu',
    'downsample_in_first_stage': False,
    'downsample_in_bottleneck': False,  # v1.5: the stride is on the 3x3 convolution
    'id2label': {str(i): f'LABEL_{i}' for i in range(model.num_classes)},
    'label2id': {f'LABEL_{i}': i for i in range(model.num_classes)},
  }
  image = jax.ShapeDtypeStruct((1, 32, 32, config['num_channels']), jnp.float32)
  abstract = mapping.abstract_variables(model, image)
  return config, table(model).export_tensors(variables, abstract)
