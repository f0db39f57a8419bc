"""Hugging Face `CLIPModel` (`model_type` 'clip') <-> `bigjax.models.clip.CLIP`.

Legend: D a tower's width, E projection_dim, V vocabulary, P patch size, T positions.

Source names are those `save_pretrained` writes (transformers 4.x and 5.x alike):
  vision_model.embeddings.{class_embedding [D], patch_embedding.weight [D, C, P, P],
    position_embedding.weight [T, D]}
  vision_model.pre_layrnorm.*, vision_model.post_layernorm.*
  {vision,text}_model.encoder.layers.{i}.{layer_norm1, self_attn.{q,k,v,out}_proj,
    layer_norm2, mlp.fc1, mlp.fc2}.*
  text_model.embeddings.{token_embedding, position_embedding}.weight,
    text_model.final_layer_norm.*
  visual_projection.weight [E, D], text_projection.weight [E, D], logit_scale []
Hugging Face applies `post_layernorm` to the pooled class token only; a LayerNorm acts on
each token alone, so it is the ViT's final `norm` followed by taking the class token.
The `position_ids` buffers older checkpoints saved are skipped.

The text tower's pooling follows transformers: `eos_token_id == 2` in text_config (the
original OpenAI configs) is the legacy rule, the largest token id (`text_pool='argmax'`);
any other id pools at its first occurrence (`text_pool='eos'`). Both towers share one
activation and one LayerNorm epsilon in bigjax; a checkpoint whose towers differ there is
refused. Tokenizer: `bigjax.data.tokenizers.load_tokenizer(folder)` reads the folder's
tokenizer.json (CLIP's byte-level BPE); inputs are [BOS] text [EOS] padded after the EOS,
as transformers' CLIPTokenizer makes them. Pixel normalisation (the image processor's mean
and std) is applied by the caller; images are NHWC.

`export` writes `CLIPModel`. An audio CLIP (`audio=True`) and `text_pool='last'` have no
Hugging Face form and are refused.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.convert import mapping
from bigjax.layers.stack import SCAN_NAME, unstack_layers
from bigjax.models.clip import CLIP
from bigjax.registry import create_model
from bigjax.typing import PyTree

# HF `hidden_act` -> bigjax activation name, and back.
_ACTIVATIONS = {
  'quick_gelu': 'quick_gelu',
  'gelu': 'gelu',
  'gelu_new': 'gelu_tanh',
  'gelu_pytorch_tanh': 'gelu_tanh',
  'relu': 'relu',
}
_EXPORT_ACTIVATIONS = {
  'quick_gelu': 'quick_gelu',
  'gelu': 'gelu',
  'gelu_tanh': 'gelu_pytorch_tanh',
  'relu': 'relu',
}
# transformers' defaults (CLIPTextConfig, CLIPVisionConfig, CLIPConfig), for keys a
# config.json leaves out.
_TEXT_DEFAULTS = dict(
  vocab_size=49408,
  hidden_size=512,
  intermediate_size=2048,
  num_hidden_layers=12,
  num_attention_heads=8,
  max_position_embeddings=77,
  hidden_act='quick_gelu',
  layer_norm_eps=1e-5,
  eos_token_id=49407,
)
_VISION_DEFAULTS = dict(
  hidden_size=768,
  intermediate_size=3072,
  num_hidden_layers=12,
  num_attention_heads=12,
  num_channels=3,
  image_size=224,
  patch_size=32,
  hidden_act='quick_gelu',
  layer_norm_eps=1e-5,
)
LEGACY_EOS = 2  # transformers pools at the largest id when text_config.eos_token_id == 2


def _sub(config: dict, key: str, defaults: dict) -> dict:
  return {**defaults, **{k: v for k, v in (config.get(key) or {}).items() if v is not None}}


def model_overrides(config: dict) -> dict:
  """HF CLIPConfig fields -> `create_model('clip_vit_b32', **overrides)` arguments."""
  text = _sub(config, 'text_config', _TEXT_DEFAULTS)
  vision = _sub(config, 'vision_config', _VISION_DEFAULTS)
  acts = {text['hidden_act'], vision['hidden_act']}
  if len(acts) > 1:
    raise ValueError(f'CLIP towers with different hidden_act {sorted(acts)} are not supported')
  (act,) = acts
  if act not in _ACTIVATIONS:
    raise ValueError(f'CLIP hidden_act {act!r} is not supported; use one of {sorted(_ACTIVATIONS)}')
  eps = {float(text['layer_norm_eps']), float(vision['layer_norm_eps'])}
  if len(eps) > 1:
    raise ValueError(f'CLIP towers with different layer_norm_eps {sorted(eps)} are not supported')
  eos = int(text['eos_token_id'])
  return dict(
    patch_size=int(vision['patch_size']),
    vision_hidden_size=int(vision['hidden_size']),
    vision_layers=int(vision['num_hidden_layers']),
    vision_heads=int(vision['num_attention_heads']),
    vision_mlp_dim=int(vision['intermediate_size']),
    vocab_size=int(text['vocab_size']),
    max_len=int(text['max_position_embeddings']),
    text_hidden_size=int(text['hidden_size']),
    text_layers=int(text['num_hidden_layers']),
    text_heads=int(text['num_attention_heads']),
    text_mlp_dim=int(text['intermediate_size']),
    text_pool='argmax' if eos == LEGACY_EOS else 'eos',
    eos_token_id=eos,
    projection_dim=int(config.get('projection_dim', 512)),
    activation=_ACTIVATIONS[act],
    layer_norm_eps=eps.pop(),
    dropout_rate=0.0,
    audio=False,
  )


# HF class embedding [D] <-> bigjax cls [1, 1, D].
_CLS = mapping.Layout('cls', lambda w: w[None, None], lambda w: w[0, 0])


def _encoder(t: mapping.Table, dst: str, src: str, num_layers: int, num_heads: int) -> None:
  heads = mapping.heads_in(num_heads)
  for i in range(num_layers):
    s, d = f'{src}.encoder.layers.{i}', f'{dst}/block_{i}'
    t.norm(f'{d}/attn_norm', f'{s}.layer_norm1')
    for part, name in (('query', 'q'), ('key', 'k'), ('value', 'v')):
      t.dense(f'{d}/attn/{part}', f'{s}.self_attn.{name}_proj', heads, heads)
    t.dense(f'{d}/attn/out', f'{s}.self_attn.out_proj', mapping.heads_out(num_heads))
    t.norm(f'{d}/mlp_norm', f'{s}.layer_norm2')
    t.dense(f'{d}/mlp/fc1', f'{s}.mlp.fc1')
    t.dense(f'{d}/mlp/fc2', f'{s}.mlp.fc2')


def table(model: CLIP) -> mapping.Table:
  """The CLIP mapping (unrolled blocks; scanned variables are unstacked first)."""
  t = mapping.Table()
  v, emb = 'params/vision', 'vision_model.embeddings'
  t.add(f'{v}/patch_embed/kernel', f'{emb}.patch_embedding.weight', mapping.CONV)
  t.add(f'{v}/cls', f'{emb}.class_embedding', _CLS)
  t.add(f'{v}/pos_embed/embedding', f'{emb}.position_embedding.weight')
  t.norm(f'{v}/norm_pre', 'vision_model.pre_layrnorm')
  _encoder(t, v, 'vision_model', model.vision_layers, model.vision_heads)
  t.norm(f'{v}/norm', 'vision_model.post_layernorm')
  x = 'params/text'
  t.add(f'{x}/embed/embedding', 'text_model.embeddings.token_embedding.weight')
  t.add(f'{x}/pos_embed/embedding', 'text_model.embeddings.position_embedding.weight')
  _encoder(t, x, 'text_model', model.text_layers, model.text_heads)
  t.norm(f'{x}/norm', 'text_model.final_layer_norm')
  t.add('params/image_proj/kernel', 'visual_projection.weight', mapping.LINEAR)
  t.add('params/text_proj/kernel', 'text_projection.weight', mapping.LINEAR)
  t.add('params/logit_scale', 'logit_scale')
  t.skip += [r'(vision|text)_model\.embeddings\.position_ids']
  return t


def _inputs(model: CLIP, image_size: int, channels: int) -> tuple[jax.ShapeDtypeStruct, ...]:
  image = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
  return image, jax.ShapeDtypeStruct((1, 1), jnp.int32)


def convert(config: dict, tensors: dict[str, np.ndarray]) -> tuple[nn.Module, PyTree]:
  """Builds the bigjax CLIP described by `config` and fills it from `tensors`."""
  model = create_model('clip_vit_b32', **model_overrides(config))
  vision = _sub(config, 'vision_config', _VISION_DEFAULTS)
  inputs = _inputs(model, int(vision['image_size']), int(vision['num_channels']))
  abstract = mapping.abstract_variables(model, *inputs)
  return model, table(model).import_variables(tensors, abstract, 'CLIPModel checkpoint')


def _unstacked(variables: PyTree) -> PyTree:
  """Scanned towers (`layers`, stacked) -> one `block_{i}` per layer, as HF has them."""
  params = dict(variables['params'])
  for tower in ('vision', 'text'):
    if SCAN_NAME in params[tower]:
      params[tower] = unstack_layers(params[tower])
  return {**variables, 'params': params}


def export(model: CLIP, variables: PyTree) -> tuple[dict, dict[str, np.ndarray]]:
  """A bigjax CLIP -> Hugging Face `config.json` (as a dict) and safetensors tensors."""
  if model.audio:
    raise ValueError(
      'a CLIP with the audio front end (audio=True) has no Hugging Face form: only image '
      'CLIPs export'
    )
  if model.text_pool == 'last' or (model.text_pool == 'eos' and model.eos_token_id == LEGACY_EOS):
    raise ValueError(
      f'CLIP text_pool={model.text_pool!r} (eos_token_id={model.eos_token_id}) has no Hugging '
      'Face form: transformers pools at the first eos_token_id, or at the largest id when '
      "eos_token_id == 2; use text_pool='eos' with an EOS id other than 2, or 'argmax'"
    )
  if model.activation not in _EXPORT_ACTIVATIONS:
    raise ValueError(f'CLIP activation {model.activation!r} has no Hugging Face name')
  variables = _unstacked(variables)
  params = variables['params']
  p, _, channels, _ = map(int, params['vision']['patch_embed']['kernel'].shape)  # [P, P, C, D]
  num_patches = params['vision']['pos_embed']['embedding'].shape[0] - 1  # [T, D], T = N + 1
  side = int(round(num_patches**0.5))
  if side * side != num_patches:
    raise ValueError(
      f'CLIP has {num_patches} patch positions, not a square number: Hugging Face CLIP '
      'needs square images (image_size x image_size)'
    )
  act = _EXPORT_ACTIVATIONS[model.activation]
  eos = LEGACY_EOS if model.text_pool == 'argmax' else int(model.eos_token_id)
  config = {
    'model_type': 'clip',
    'architectures': ['CLIPModel'],
    'projection_dim': model.projection_dim,
    'logit_scale_init_value': model.logit_scale_init,
    'text_config': {
      'model_type': 'clip_text_model',
      'vocab_size': model.vocab_size,
      'hidden_size': model.text_hidden_size,
      'intermediate_size': model.text_mlp_dim,
      'num_hidden_layers': model.text_layers,
      'num_attention_heads': model.text_heads,
      'max_position_embeddings': model.max_len,
      'hidden_act': act,
      'layer_norm_eps': model.layer_norm_eps,
      'attention_dropout': 0.0,
      'eos_token_id': eos,
      'projection_dim': model.projection_dim,
    },
    'vision_config': {
      'model_type': 'clip_vision_model',
      'hidden_size': model.vision_hidden_size,
      'intermediate_size': model.vision_mlp_dim,
      'num_hidden_layers': model.vision_layers,
      'num_attention_heads': model.vision_heads,
      'num_channels': channels,
      'image_size': side * p,
      'patch_size': p,
      'hidden_act': act,
      'layer_norm_eps': model.layer_norm_eps,
      'attention_dropout': 0.0,
      'projection_dim': model.projection_dim,
    },
  }
  plain = model.clone(scan_layers=False)
  abstract = mapping.abstract_variables(plain, *_inputs(plain, side * p, channels))
  return config, table(plain).export_tensors(variables, abstract)
