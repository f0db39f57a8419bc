"""Weight import and export: parity with Hugging Face transformers, both ways, and the
error messages."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import bigjax
from bigjax.convert import hf_resnet, mapping

try:
  import torch
  import transformers
except ImportError:  # the parity extra is not installed
  torch = transformers = None

needs_torch = pytest.mark.skipif(
  torch is None, reason='needs torch and transformers: pip install -e ".[parity]"'
)
TOL = 1e-4  # max abs logit difference in float32


def _image(seed=0, size=32):
  """The same random image as NCHW (torch) and NHWC (bigjax)."""
  x = np.random.RandomState(seed).randn(2, 3, size, size).astype(np.float32)
  return x, x.transpose(0, 2, 3, 1)


def _torch_logits(model, x_nchw):
  with torch.no_grad():
    out = model(torch.from_numpy(x_nchw))
  return (out.logits if hasattr(out, 'logits') else out.last_hidden_state[:, 0]).numpy()


def _perturb(model, scale=0.1):
  """Adds noise to every parameter so no weight keeps a special value (LN 1/0, zero bias)."""
  with torch.no_grad():
    for p in model.parameters():
      p.add_(scale * torch.randn_like(p))


def _vit_config(**kw):
  return transformers.ViTConfig(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    num_labels=5,
    **kw,
  )


@pytest.fixture(scope='module')
def vit_dir(tmp_path_factory):
  """A saved random ViTForImageClassification and its torch logits on `_image()`."""
  torch.manual_seed(0)
  model = transformers.ViTForImageClassification(_vit_config()).eval()
  _perturb(model)
  path = str(tmp_path_factory.mktemp('hf_vit'))
  model.save_pretrained(path)
  return path, model


@pytest.mark.parity
@needs_torch
def test_vit_matches_transformers(vit_dir, tmp_path):
  path, hf = vit_dir
  x_nchw, x_nhwc = _image()
  ref = _torch_logits(hf, x_nchw)
  model, variables = bigjax.from_pretrained(path)
  assert model.layer_norm_eps == 1e-12 and not model.gelu_approximate
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
  apply = jax.jit(model.apply)
  out = np.asarray(apply(variables, x_nhwc))
  assert out.shape == (2, 5)
  assert np.abs(ref).max() > 0.1  # the comparison is not between near-zero numbers
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)

  # The same weights sharded with an index, and under transformers 5's in-memory names.
  sharded = str(tmp_path / 'sharded')
  hf.save_pretrained(sharded, max_shard_size='20KB')
  assert os.path.exists(os.path.join(sharded, 'model.safetensors.index.json'))
  renamed = str(tmp_path / 'renamed')
  hf.save_pretrained(renamed, save_original_format=False)
  assert 'vit.layers.0.attention.q_proj.weight' in load_file(f'{renamed}/model.safetensors')
  for other in (sharded, renamed):
    _, v = bigjax.from_pretrained(other)
    np.testing.assert_allclose(np.asarray(apply(v, x_nhwc)), out, atol=1e-6, rtol=0)


@pytest.mark.parity
@needs_torch
def test_bare_vit_model_gives_class_token_features(tmp_path):
  torch.manual_seed(1)
  hf = transformers.ViTModel(_vit_config(hidden_act='gelu_new')).eval()
  _perturb(hf)
  hf.save_pretrained(str(tmp_path))
  x_nchw, x_nhwc = _image(seed=1)
  model, variables = bigjax.from_pretrained(str(tmp_path))
  assert model.num_classes == 0 and model.gelu_approximate
  out = np.asarray(model.apply(variables, x_nhwc))
  np.testing.assert_allclose(out, _torch_logits(hf, x_nchw), atol=TOL, rtol=0)


def _resnet(layer_type):
  torch.manual_seed(0)
  expansion = 4 if layer_type == 'bottleneck' else 1
  config = transformers.ResNetConfig(
    embedding_size=8,
    hidden_sizes=[8 * expansion, 16 * expansion],
    depths=[1, 2],
    layer_type=layer_type,
    num_labels=7,
  )
  model = transformers.ResNetForImageClassification(config)
  with torch.no_grad():  # BN statistics and affine terms away from their 0/1 defaults
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0.0, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
  return model.eval()


@pytest.mark.parity
@needs_torch
@pytest.mark.parametrize('layer_type', ['basic', 'bottleneck'])
def test_resnet_matches_transformers(layer_type, tmp_path):
  hf = _resnet(layer_type)
  hf.save_pretrained(str(tmp_path))
  x_nchw, x_nhwc = _image()
  ref = _torch_logits(hf, x_nchw)
  model, variables = bigjax.from_pretrained(str(tmp_path))
  assert model.block == layer_type and model.stage_sizes == (1, 2)
  stem = hf.resnet.embedder.embedder.normalization
  np.testing.assert_array_equal(
    variables['batch_stats']['stem_bn']['var'], stem.running_var.numpy()
  )
  assert 'downsample' in variables['params']['stage_1']['block_0']
  out = np.asarray(jax.jit(model.apply)(variables, x_nhwc))
  assert out.shape == (2, 7)
  assert np.abs(ref).max() > 0.1
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)
  # Train-mode BN uses batch statistics, so it must differ from the converted running stats.
  train_out, _ = model.apply(variables, x_nhwc, train=True, mutable=['batch_stats'])
  assert np.abs(np.asarray(train_out) - ref).max() > 1e-3


# ----- error messages -----


def test_missing_config_is_explained(tmp_path):
  with pytest.raises(FileNotFoundError, match='no config.json .*save_pretrained'):
    bigjax.from_pretrained(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='is not a directory'):
    bigjax.from_pretrained(str(tmp_path / 'nowhere'))


def test_unknown_model_type_lists_supported(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'swin'}))
  with pytest.raises(ValueError, match="model_type 'swin'.*supported model types: .*vit"):
    bigjax.from_pretrained(str(tmp_path))


def test_missing_weights_and_pickles_are_explained(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'resnet'}))
  with pytest.raises(FileNotFoundError, match='no model.safetensors'):
    bigjax.from_pretrained(str(tmp_path))
  (tmp_path / 'pytorch_model.bin').write_bytes(b'not read')
  with pytest.raises(FileNotFoundError, match='never loads pickled weights'):
    bigjax.from_pretrained(str(tmp_path))


@needs_torch
def test_malformed_config_and_truncated_weights_name_the_file(vit_dir, tmp_path):
  vit_dir, _ = vit_dir
  bad_json = tmp_path / 'bad_json'
  shutil.copytree(vit_dir, bad_json)
  (bad_json / 'config.json').write_text('{"model_type": "vit",')
  with pytest.raises(ValueError, match=f'{bad_json}/config.json is not valid JSON'):
    bigjax.from_pretrained(str(bad_json))
  truncated = tmp_path / 'truncated'
  shutil.copytree(vit_dir, truncated)
  weights = truncated / 'model.safetensors'
  weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
  with pytest.raises(ValueError, match=f'{weights} is not a readable safetensors file'):
    bigjax.from_pretrained(str(truncated))


def test_nonstandard_resnet_widths_are_rejected():
  config = {
    'embedding_size': 8,
    'hidden_sizes': [8, 16],
    'depths': [1, 1],
    'layer_type': 'bottleneck',
  }
  with pytest.raises(ValueError, match=r'hidden_sizes=\[32, 64\]'):
    hf_resnet.model_overrides(config, 10)
  with pytest.raises(ValueError, match='v1.5'):
    hf_resnet.model_overrides({**config, 'downsample_in_bottleneck': True}, 10)


def _edited_copy(src, dst, edit_tensors=None, edit_config=None):
  shutil.copytree(src, dst)
  if edit_tensors:
    tensors = load_file(f'{dst}/model.safetensors')
    edit_tensors(tensors)
    save_file(tensors, f'{dst}/model.safetensors')
  if edit_config:
    with open(f'{dst}/config.json') as f:
      config = json.load(f)
    edit_config(config)
    with open(f'{dst}/config.json', 'w') as f:
      json.dump(config, f)
  return str(dst)


@pytest.mark.parity
@needs_torch
def test_missing_extra_and_misshapen_tensors_are_named(vit_dir, tmp_path):
  path, _ = vit_dir
  name = 'vit.encoder.layer.1.attention.attention.value.weight'
  missing = _edited_copy(path, tmp_path / 'missing', edit_tensors=lambda t: t.pop(name))
  with pytest.raises(ValueError, match=f"no tensor '{name}'.*block_1/attn/value/kernel"):
    bigjax.from_pretrained(missing)

  def add(t):
    t['vit.encoder.layer.2.output.dense.weight'] = np.zeros((2, 2), np.float32)

  extra = _edited_copy(path, tmp_path / 'extra', edit_tensors=add)
  with pytest.raises(ValueError, match='does not use: vit.encoder.layer.2.output.dense.weight'):
    bigjax.from_pretrained(extra)

  def widen(c):
    c['intermediate_size'] = 48

  misshapen = _edited_copy(path, tmp_path / 'misshapen', edit_config=widen)
  with pytest.raises(ValueError, match=r'expects \(32, 48\) at params/block_0/mlp/fc1/kernel'):
    bigjax.from_pretrained(misshapen)


# ----- torch.nn.Transformer -----


def _torch_transformer(norm_first, layers=2, d=32, heads=2, ff=64, activation='relu'):
  """A random torch.nn.Transformer (transformer_test's sizes by default), its state dict."""
  torch.manual_seed(0)
  ref = torch.nn.Transformer(
    d_model=d,
    nhead=heads,
    num_encoder_layers=layers,
    num_decoder_layers=layers,
    dim_feedforward=ff,
    dropout=0.0,
    activation=activation,  # torch's 'gelu' is the exact erf form
    batch_first=True,
    norm_first=norm_first,
  ).eval()
  _perturb(ref, 0.3)  # LayerNorms away from (1, 0), so every copied tensor counts
  return ref, {k: v.detach().numpy() for k, v in ref.state_dict().items()}


@pytest.mark.parity
@needs_torch
@pytest.mark.filterwarnings('ignore:enable_nested_tensor')
@pytest.mark.parametrize('norm_first', [False, True], ids=['post_ln', 'pre_ln'])
def test_torch_transformer_converts_to_complete_variables(norm_first):
  from bigjax.convert.torch_transformer import transformer_from_torch, transformer_to_torch

  ref, sd = _torch_transformer(norm_first)
  model = bigjax.create_model(
    'transformer_test',
    pre_norm=norm_first,
    final_norm=True,
    layer_norm_eps=1e-5,
    activation='relu',
    dropout_rate=0.0,
  )
  src_tokens, tgt_tokens = jnp.ones((2, 7), jnp.int32), jnp.ones((2, 6), jnp.int32)
  fresh = model.init(jax.random.key(0), src_tokens, tgt_tokens)
  variables = transformer_from_torch(sd, num_heads=2, into=fresh)
  assert set(variables['params']) == set(fresh['params'])  # embeddings kept: complete
  assert set(transformer_from_torch(sd, num_heads=2)) == {'params'}
  rng = np.random.default_rng(0)
  src = rng.normal(size=(2, 7, 32)).astype(np.float32)
  tgt = rng.normal(size=(2, 6, 32)).astype(np.float32)
  with torch.no_grad():
    want = ref(
      torch.from_numpy(src),
      torch.from_numpy(tgt),
      tgt_mask=torch.triu(torch.ones(6, 6, dtype=torch.bool), 1),
      tgt_is_causal=True,
    ).numpy()

  def stacks(module, src, tgt):
    valid = jnp.ones(src.shape[:2], bool)
    return module.decoder(tgt, module.encoder(src, valid), valid)

  got = model.apply(variables, jnp.asarray(src), jnp.asarray(tgt), method=stacks)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)

  back = transformer_to_torch(variables)
  assert sorted(back) == sorted(sd)
  for k, v in sd.items():
    np.testing.assert_allclose(back[k], v, atol=0, rtol=0, err_msg=k)


@pytest.mark.parity
@needs_torch
@pytest.mark.filterwarnings('ignore:enable_nested_tensor')
def test_torch_transformer_mismatch_is_explained():
  from bigjax.convert.torch_transformer import transformer_from_torch

  _, sd = _torch_transformer(False, layers=3)
  model = bigjax.create_model('transformer_test', final_norm=True)
  fresh = model.init(jax.random.key(0), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), jnp.int32))
  with pytest.raises(ValueError, match='extra.*block_2.*layer count'):
    transformer_from_torch(sd, num_heads=2, into=fresh)
  _, sd = _torch_transformer(False)
  with pytest.raises(ValueError, match=r'query/kernel: torch gives shape \(32, 4, 8\).*num_heads'):
    transformer_from_torch(sd, num_heads=4, into=fresh)
  with pytest.raises(ValueError, match='no torch.nn.Transformer weights'):
    transformer_from_torch({'fc.weight': np.zeros((2, 2))}, num_heads=2)


@pytest.mark.parity
@needs_torch
@pytest.mark.filterwarnings('ignore:The PyTorch API of nested tensors')
@pytest.mark.filterwarnings('ignore:enable_nested_tensor')
@pytest.mark.parametrize('activation', ['relu', 'gelu'])
def test_torch_transformer_parity_with_padding_masks(activation):
  """Converted weights give torch's outputs with padded sources and targets, for both
  activations (bigjax's 'gelu' is exact, as torch's is)."""
  from bigjax.convert.torch_transformer import transformer_from_torch
  from bigjax.models.transformer import Transformer

  b, s, t, d, h = 3, 7, 6, 32, 4
  ref, sd = _torch_transformer(False, heads=h, activation=activation)
  rng = np.random.default_rng(0)
  src = rng.normal(size=(b, s, d)).astype(np.float32)
  tgt = rng.normal(size=(b, t, d)).astype(np.float32)
  src_valid = np.arange(s)[None] < np.array([[s], [4], [2]])  # [B, S]
  tgt_valid = np.arange(t)[None] < np.array([[t], [t], [3]])  # [B, T]
  with torch.no_grad():
    want = ref(
      torch.from_numpy(src),
      torch.from_numpy(tgt),
      tgt_mask=torch.triu(torch.ones(t, t, dtype=torch.bool), 1),
      tgt_is_causal=True,
      src_key_padding_mask=torch.from_numpy(~src_valid),
      tgt_key_padding_mask=torch.from_numpy(~tgt_valid),
      memory_key_padding_mask=torch.from_numpy(~src_valid),
    ).numpy()
    memory = ref.encoder(
      torch.from_numpy(src), src_key_padding_mask=torch.from_numpy(~src_valid)
    ).numpy()

  model = Transformer(
    vocab_size=16,
    hidden_size=d,
    num_heads=h,
    mlp_dim=64,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dropout_rate=0.0,
    final_norm=True,
    layer_norm_eps=1e-5,
    activation=activation,
  )

  def stacks(module, src, src_valid, tgt, tgt_valid):
    encoded = module.encoder(src, src_valid)
    return encoded, module.decoder(tgt, encoded, src_valid, tgt_valid)

  arrays = [jnp.asarray(x) for x in (src, src_valid, tgt, tgt_valid)]
  encoded, got = model.apply(transformer_from_torch(sd, h), *arrays, method=stacks)
  # torch zeroes padded encoder positions (nested tensors); only valid ones are compared.
  np.testing.assert_allclose(np.asarray(encoded)[src_valid], memory[src_valid], atol=1e-4)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


# ----- export: bigjax.save_pretrained -----


def _load_hf(cls, folder):
  """A transformers model from `folder`, checking that every weight came from the folder."""
  model, info = cls.from_pretrained(folder, output_loading_info=True)
  assert not info['unexpected_keys'] and not info['mismatched_keys'], info
  return model.eval(), info['missing_keys']


@pytest.mark.parity
@needs_torch
def test_vit_round_trips_through_transformers(vit_dir, tmp_path):
  path, hf = vit_dir
  x_nchw, _ = _image()
  model, variables = bigjax.from_pretrained(path)
  out = str(tmp_path / 'out')
  bigjax.save_pretrained(model, variables, out)
  assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors']
  back, missing = _load_hf(transformers.ViTForImageClassification, out)
  assert not missing
  for key in ('hidden_act', 'layer_norm_eps', 'image_size', 'patch_size', 'num_labels'):
    assert getattr(back.config, key) == getattr(hf.config, key), key
  np.testing.assert_allclose(
    _torch_logits(back, x_nchw), _torch_logits(hf, x_nchw), atol=TOL, rtol=0
  )

  # Sharded: several files and an index, which both libraries read back identically.
  sharded = str(tmp_path / 'sharded')
  bigjax.save_pretrained(model, variables, sharded, max_shard_size=20_000)
  with open(os.path.join(sharded, 'model.safetensors.index.json')) as f:
    shards = set(json.load(f)['weight_map'].values())
  assert len(shards) > 2 and shards <= set(os.listdir(sharded))
  assert 'model.safetensors' not in os.listdir(sharded)
  back, _ = _load_hf(transformers.ViTForImageClassification, sharded)
  np.testing.assert_allclose(
    _torch_logits(back, x_nchw), _torch_logits(hf, x_nchw), atol=TOL, rtol=0
  )
  _, again = bigjax.from_pretrained(sharded)
  jax.tree.map(np.testing.assert_array_equal, again, variables)


@pytest.mark.parity
@needs_torch
def test_bare_vit_model_round_trips_through_transformers(tmp_path):
  torch.manual_seed(1)
  hf = transformers.ViTModel(_vit_config(hidden_act='gelu_new')).eval()
  _perturb(hf)
  hf.save_pretrained(str(tmp_path / 'in'))
  model, variables = bigjax.from_pretrained(str(tmp_path / 'in'))
  bigjax.save_pretrained(model, variables, str(tmp_path / 'out'))
  back, missing = _load_hf(transformers.ViTModel, str(tmp_path / 'out'))
  # The pooler (dense + tanh) feeds no bigjax output, so it is not exported.
  assert sorted(missing) == ['pooler.dense.bias', 'pooler.dense.weight']
  assert back.config.architectures == ['ViTModel']
  x_nchw, _ = _image(seed=1)
  np.testing.assert_allclose(
    _torch_logits(back, x_nchw), _torch_logits(hf, x_nchw), atol=TOL, rtol=0
  )


@pytest.mark.parity
@needs_torch
@pytest.mark.parametrize('layer_type', ['basic', 'bottleneck'])
def test_resnet_round_trips_through_transformers(layer_type, tmp_path):
  hf = _resnet(layer_type)
  hf.save_pretrained(str(tmp_path / 'in'))
  model, variables = bigjax.from_pretrained(str(tmp_path / 'in'))
  bigjax.save_pretrained(model, variables, str(tmp_path / 'out'))
  back, missing = _load_hf(transformers.ResNetForImageClassification, str(tmp_path / 'out'))
  assert all(k.endswith('num_batches_tracked') for k in missing), missing
  assert (back.config.layer_type, back.config.depths) == (layer_type, [1, 2])
  x_nchw, _ = _image()
  ref = _torch_logits(hf, x_nchw)
  assert np.abs(ref).max() > 0.1
  np.testing.assert_allclose(_torch_logits(back, x_nchw), ref, atol=TOL, rtol=0)


def _random_variables(model, seed=0):
  """Variables of `model` for 32x32 images, every leaf random (numpy, nothing compiled), so
  a layout that does not invert cannot hide behind 0s and 1s."""
  rng = np.random.default_rng(seed)
  image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return jax.tree.map(
    lambda x: rng.uniform(0.5, 1.5, x.shape).astype(np.float32),
    mapping.abstract_variables(model, image),
  )


@pytest.mark.parametrize(
  'name, overrides',
  [
    ('vit_test', {}),
    ('vit_test', {'num_classes': 0, 'gelu_approximate': True}),
    ('resnet_test', {'cifar_stem': False}),
    ('resnet_test', {'cifar_stem': False, 'block': 'bottleneck', 'stage_sizes': (2, 1)}),
  ],
  ids=['vit', 'vit_headless', 'resnet_basic', 'resnet_bottleneck'],
)
def test_bigjax_variables_export_and_import_bit_identical(name, overrides, tmp_path):
  model = bigjax.create_model(name, **overrides)
  variables = _random_variables(model)
  bigjax.save_pretrained(model, variables, str(tmp_path))
  loaded, again = bigjax.from_pretrained(str(tmp_path))
  assert type(loaded) is type(model)
  for key, value in overrides.items():
    assert getattr(loaded, key) == value, key
  assert jax.tree.structure(again) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_scanned_vit_exports_as_unrolled_blocks(tmp_path):
  from bigjax.layers import unstack_layers

  model = bigjax.create_model('vit_test', scan_layers=True)
  variables = _random_variables(model)
  bigjax.save_pretrained(model, variables, str(tmp_path))
  loaded, again = bigjax.from_pretrained(str(tmp_path))
  assert not loaded.scan_layers and loaded.num_layers == model.num_layers
  jax.tree.map(np.testing.assert_array_equal, again['params'], unstack_layers(variables['params']))


def test_save_pretrained_refuses_and_writes_nothing(tmp_path):
  model = bigjax.create_model('resnet_test', cifar_stem=False)
  variables = _random_variables(model)
  folder = tmp_path / 'out'
  folder.mkdir()
  (folder / 'notes.txt').write_text('keep')
  with pytest.raises(ValueError, match='exists and is not empty.*overwrite=True'):
    bigjax.save_pretrained(model, variables, str(folder))
  assert os.listdir(folder) == ['notes.txt']

  cifar = bigjax.create_model('resnet_test')
  with pytest.raises(ValueError, match='cifar_stem=True has no Hugging Face form'):
    bigjax.save_pretrained(cifar, variables, str(tmp_path / 'cifar'))
  vit = bigjax.create_model('vit_test', pool='mean')
  with pytest.raises(ValueError, match="pool='mean' has no Hugging Face form"):
    bigjax.save_pretrained(vit, {}, str(tmp_path / 'vit'))
  other = bigjax.create_model('transformer_test')
  with pytest.raises(
    ValueError, match='cannot export Transformer models.*: Bert, CLIP, Gpt, ResNet, ViT'
  ):
    bigjax.save_pretrained(other, {}, str(tmp_path / 'other'))
  with pytest.raises(
    ValueError,
    match=r'at params/head/bias \(the model has shape \(3,\), the variables have shape \(10,\)',
  ):
    wide = bigjax.create_model('resnet_test', cifar_stem=False, num_classes=3)
    bigjax.save_pretrained(wide, variables, str(tmp_path / 'wide'))
  assert sorted(os.listdir(tmp_path)) == ['out']  # no folder, no temporary left behind

  bigjax.save_pretrained(model, variables, str(folder), overwrite=True)
  assert sorted(os.listdir(folder)) == ['config.json', 'model.safetensors']
  assert sorted(os.listdir(tmp_path)) == ['out']
