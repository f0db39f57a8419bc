"""Hugging Face `ViTForImageClassification` / `ViTModel` <-> `bigjax.models.vit.ViT`.

Source names are those `save_pretrained` writes (transformers 4.x and 5.x alike):
  vit.embeddings.{cls_token, position_embeddings, patch_embeddings.projection.*}
  vit.encoder.layer.{i}.{layernorm_before, attention.attention.{query,key,value},
    attention.output.dense, layernorm_after, intermediate.dense, output.dense}.*
  vit.layernorm.*, classifier.*
transformers 5 names its modules differently in memory (`vit.layers.{i}.attention.q_proj`,
`mlp.fc1`, ...); such names are mapped back first, so both spellings load. A bare
`ViTModel` (no `vit.` prefix, no classifier) loads as `num_classes=0`: the model then
returns the final-norm class-token features, HF's `last_hidden_state[:, 0]`; its pooler
(dense + tanh, unused by the classifier) is skipped.

`table(model)` is the one name and layout mapping; `convert` (import) and `export` read it.
`export` writes `ViTForImageClassification` (or `ViTModel` when num_classes=0, without a
pooler: transformers initialises that one afresh, and it feeds no output bigjax has).
"""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.convert import mapping
from bigjax.layers.stack import SCAN_NAME, unstack_layers
from bigjax.models.vit import ViT
from bigjax.registry import create_model
from bigjax.typing import PyTree

# transformers 5 in-memory names -> the names save_pretrained writes.
_RENAMES = [
  (r'^(vit\.)?layers\.(\d+)\.', r'\1encoder.layer.\2.'),
  (r'\.attention\.q_proj\.', '.attention.attention.query.'),
  (r'\.attention\.k_proj\.', '.attention.attention.key.'),
  (r'\.attention\.v_proj\.', '.attention.attention.value.'),
  (r'\.attention\.o_proj\.', '.attention.output.dense.'),
  (r'\.mlp\.fc1\.', '.intermediate.dense.'),
  (r'\.mlp\.fc2\.', '.output.dense.'),
]

# HF `hidden_act` -> ViT.gelu_approximate ('gelu_new' and 'gelu_pytorch_tanh' are the tanh
# approximation that `jax.nn.gelu(approximate=True)` computes).
_GELU = {'gelu': False, 'gelu_new': True, 'gelu_pytorch_tanh': True}


def _pair(v) -> tuple[int, int]:
  return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def model_overrides(config: dict, num_classes: int) -> dict:
  """HF ViTConfig fields -> `create_model('vit_b16', **overrides)` arguments."""
  act = config.get('hidden_act', 'gelu')
  if act not in _GELU:
    raise ValueError(f'ViT hidden_act {act!r} is not supported; use one of {sorted(_GELU)}')
  if not config.get('qkv_bias', True):
    raise ValueError('ViT checkpoints with qkv_bias=false are not supported by bigjax ViT')
  hidden, heads = int(config['hidden_size']), int(config['num_attention_heads'])
  head_dim = config.get('head_dim')
  if head_dim is not None and int(head_dim) * heads != hidden:
    raise ValueError(f'ViT head_dim {head_dim} x {heads} heads != hidden_size {hidden}')
  patch = _pair(config.get('patch_size', 16))
  if patch[0] != patch[1]:
    raise ValueError(f'ViT patch_size {patch} is not square; bigjax ViT needs square patches')
  return dict(
    num_classes=num_classes,
    patch_size=patch[0],
    hidden_size=hidden,
    num_layers=int(config['num_hidden_layers']),
    num_heads=heads,
    mlp_dim=int(config['intermediate_size']),
    pool='cls',
    dropout_rate=float(config.get('hidden_dropout_prob', 0.0)),
    layer_norm_eps=float(config.get('layer_norm_eps', 1e-12)),
    gelu_approximate=_GELU[act],
  )


# HF position embeddings [1, T, D] <-> bigjax pos_embed/embedding [T, D].
_UNBATCH = mapping.Layout('unbatch', lambda w: w[0], lambda w: w[None])


def table(model: ViT) -> mapping.Table:
  """The ViT mapping: `vit.`-prefixed names with a classifier, bare `ViTModel` names without."""
  p = 'vit.' if model.num_classes else ''
  t = mapping.Table()
  emb = f'{p}embeddings'
  t.dense('params/patch_embed', f'{emb}.patch_embeddings.projection', kernel=mapping.CONV)
  t.add('params/cls', f'{emb}.cls_token')  # [1, 1, D]
  t.add('params/pos_embed/embedding', f'{emb}.position_embeddings', _UNBATCH)  # [T, D]
  heads = mapping.heads_in(model.num_heads)
  for i in range(model.num_layers):
    src, dst = f'{p}encoder.layer.{i}', f'params/block_{i}'
    t.norm(f'{dst}/attn_norm', f'{src}.layernorm_before')
    for part in ('query', 'key', 'value'):
      t.dense(f'{dst}/attn/{part}', f'{src}.attention.attention.{part}', heads, heads)
    t.dense(f'{dst}/attn/out', f'{src}.attention.output.dense', mapping.heads_out(model.num_heads))
    t.norm(f'{dst}/mlp_norm', f'{src}.layernorm_after')
    t.dense(f'{dst}/mlp/fc1', f'{src}.intermediate.dense')
    t.dense(f'{dst}/mlp/fc2', f'{src}.output.dense')
  t.norm('params/norm', f'{p}layernorm')
  if model.num_classes:
    t.dense('params/head', 'classifier')
  # The pooler (dense + tanh) feeds no classifier of ViTForImageClassification; the mask
  # token only serves masked-image-modelling pre-training.
  t.skip += [rf'{re.escape(p)}pooler\..*', rf'{re.escape(emb)}\.mask_token']
  return t


def convert(config: dict, tensors: dict[str, np.ndarray]) -> tuple[nn.Module, PyTree]:
  """Builds the bigjax ViT described by `config` and fills it from `tensors`."""
  source = {}
  for name, value in tensors.items():
    for pattern, repl in _RENAMES:
      name = re.sub(pattern, repl, name)
    source[name] = value
  has_head = 'classifier.weight' in source
  if not has_head:  # a headless checkpoint under the `vit.` prefix reads as a bare ViTModel
    source = {n.removeprefix('vit.'): v for n, v in source.items()}
  num_classes = mapping.hf_num_labels(config) if has_head else 0
  model = create_model('vit_b16', **model_overrides(config, num_classes))

  height, width = _pair(config.get('image_size', 224))
  image = jax.ShapeDtypeStruct((1, height, width, int(config.get('num_channels', 3))), jnp.float32)
  arch = 'ViTForImageClassification' if has_head else 'ViTModel'
  abstract = mapping.abstract_variables(model, image)
  return model, table(model).import_variables(source, abstract, f'{arch} checkpoint')


def export(model: ViT, variables: PyTree) -> tuple[dict, dict[str, np.ndarray]]:
  """A bigjax ViT -> Hugging Face `config.json` (as a dict) and safetensors tensors."""
  name = type(model).__name__
  if model.pool != 'cls':
    raise ValueError(f"{name} with pool={model.pool!r} has no Hugging Face form: use pool='cls'")
  if not model.patch_bias or model.norm_pre or model.activation not in (None, 'gelu', 'gelu_tanh'):
    raise ValueError(
      f'{name} with patch_bias={model.patch_bias}, norm_pre={model.norm_pre}, '
      f'activation={model.activation!r} (a CLIP image tower) has no Hugging Face ViT form: '
      'export the CLIP model that holds it (bigjax.models.clip)'
    )
  params = variables['params']
  if SCAN_NAME in params:  # scanned blocks are stored stacked; HF has one entry per layer
    variables = {**variables, 'params': unstack_layers(params)}
    params = variables['params']
  p, _, channels, _ = map(int, params['patch_embed']['kernel'].shape)  # [P, P, C, D]
  num_patches = params['pos_embed']['embedding'].shape[0] - 1  # [T, D], T = N + 1
  side = math.isqrt(num_patches)
  if side * side != num_patches:
    raise ValueError(
      f'{name} has {num_patches} patch positions, not a square number: Hugging Face ViT '
      'needs square images (image_size x image_size)'
    )
  config = {
    'model_type': 'vit',
    'architectures': ['ViTForImageClassification' if model.num_classes else 'ViTModel'],
    'hidden_size': model.hidden_size,
    'num_hidden_layers': model.num_layers,
    'num_attention_heads': model.num_heads,
    'intermediate_size': model.mlp_dim,
    'hidden_act': 'gelu_pytorch_tanh'
    if (model.activation or ('gelu_tanh' if model.gelu_approximate else 'gelu')) == 'gelu_tanh'
    else 'gelu',
    'hidden_dropout_prob': model.dropout_rate,
    'attention_probs_dropout_prob': 0.0,  # bigjax ViT has no dropout on attention maps
    'layer_norm_eps': model.layer_norm_eps,
    'image_size': side * p,
    'patch_size': p,
    'num_channels': channels,
    'qkv_bias': True,
  }
  if model.num_classes:
    config['id2label'] = {str(i): f'LABEL_{i}' for i in range(model.num_classes)}
    config['label2id'] = {f'LABEL_{i}': i for i in range(model.num_classes)}
  plain = model.clone(scan_layers=False)  # the layout of the (unstacked) variables
  image = jax.ShapeDtypeStruct(
    (1, config['image_size'], config['image_size'], channels), jnp.float32
  )
  abstract = mapping.abstract_variables(plain, image)
  return config, table(model).export_tensors(variables, abstract)
