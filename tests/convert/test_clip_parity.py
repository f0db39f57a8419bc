"""CLIP weights in and out: parity with Hugging Face transformers both ways, and CLIP's BPE
tokenizer read from a Hugging Face folder.

Legend: B batch, T text length, E projection width.

A small `CLIPModel` is randomly initialised, perturbed so no weight keeps a special value
(LayerNorm scales of 1, zero biases, the initial logit scale), and saved with
`save_pretrained`. `bigjax.from_pretrained` of the folder must give the same image and text
embeddings and logits; `bigjax.save_pretrained` of the result, loaded back by transformers
with no missing or unexpected weights, the same again. The texts are [BOS] ids [EOS]
padded with the EOS, as CLIP's tokenizer pads them; with text_config.eos_token_id == 2
transformers pools at the largest id instead, and so must bigjax.
"""

import json

import jax
import numpy as np
import pytest

import bigjax
from bigjax.convert import hf_clip
from bigjax.data.tokenizers import HFTokenizer, load_tokenizer
from bigjax.data.transforms.caption import encode_caption
from bigjax.layers import stack_layers

torch = pytest.importorskip('torch', reason='parity tests need torch (the parity extra)')
transformers = pytest.importorskip('transformers', reason='parity tests need transformers')

pytestmark = pytest.mark.parity
TOL = 1e-4  # max abs difference in float32
V, BOS, EOS = 99, 97, 98
T = 9


def _config(eos: int):
  text = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=12,
    bos_token_id=BOS,
    eos_token_id=eos,
    pad_token_id=eos,
  )
  vision = dict(
    image_size=32,
    patch_size=8,
    hidden_size=48,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
  )
  return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def _inputs(seed: int = 0):
  """(pixels NCHW [B, 3, 32, 32], ids [B, T]): rows of 5 and 9 tokens, [BOS] ... [EOS] then
  EOS padding (the EOS is also the largest id, as in CLIP's vocabulary)."""
  rng = np.random.RandomState(seed)
  pixels = rng.randn(2, 3, 32, 32).astype(np.float32)
  ids = rng.randint(3, 90, (2, T))
  ids[:, 0] = BOS
  ids[0, 4:] = EOS
  ids[1, -1] = EOS
  return pixels, ids.astype(np.int64)


def _torch_outputs(model, pixels, ids):
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(pixels), input_ids=torch.from_numpy(ids))
    image = model.get_image_features(pixel_values=torch.from_numpy(pixels))
    text = model.get_text_features(input_ids=torch.from_numpy(ids))
  raw = lambda x: getattr(x, 'pooler_output', x).numpy()  # noqa: E731  (5.x returns an output)
  return {
    'logits': out.logits_per_image.numpy(),
    'image_embeds': out.image_embeds.numpy(),
    'text_embeds': out.text_embeds.numpy(),
    'image_features': raw(image),
    'text_features': raw(text),
  }


def _bigjax_outputs(model, variables, pixels, ids):
  images, ids = pixels.transpose(0, 2, 3, 1), ids.astype(np.int32)  # NCHW -> NHWC

  @jax.jit
  def run(variables):
    out = model.apply(variables, images, ids)
    image = model.apply(variables, images, method='encode_image')
    return out, image, model.apply(variables, ids, method='encode_text')

  out, image, text = run(variables)
  return {
    'logits': out.logits,
    'image_embeds': out.features['image_embeds'],
    'text_embeds': out.features['text_embeds'],
    'image_features': image,
    'text_features': text,
  }


def _assert_close(got, want):
  for name in want:
    np.testing.assert_allclose(np.asarray(got[name]), want[name], atol=TOL, err_msg=name)


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """(folder, torch outputs) of a perturbed random CLIPModel saved by transformers."""
  torch.manual_seed(0)
  model = transformers.CLIPModel(_config(EOS)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  folder = tmp_path_factory.mktemp('hf_clip')
  model.save_pretrained(folder)
  return folder, _torch_outputs(model, *_inputs())


def test_from_pretrained_matches_transformers(saved):
  folder, want = saved
  model, variables = bigjax.from_pretrained(str(folder))
  assert (model.text_pool, model.eos_token_id, model.activation) == ('eos', EOS, 'quick_gelu')
  _assert_close(_bigjax_outputs(model, variables, *_inputs()), want)


def test_legacy_eos_id_two_pools_at_the_largest_id(saved, tmp_path):
  """transformers reads eos_token_id == 2 as 'pool at the largest id' (positions 2 and 1
  here), not at the first end marker (40, at positions 5 and 8), and bigjax must follow."""
  folder, _ = saved
  config = json.loads((folder / 'config.json').read_text())
  config['text_config']['eos_token_id'] = 2
  for name in ('config.json', 'model.safetensors'):
    data = (folder / name).read_bytes() if name != 'config.json' else json.dumps(config).encode()
    (tmp_path / name).write_bytes(data)
  torch_model = transformers.CLIPModel.from_pretrained(tmp_path).eval()
  pixels, _ = _inputs()
  ids = np.array([[5, 7, 96, 8, 9, 40, 40, 40, 40], [6, 95, 11, 12, 13, 14, 15, 16, 40]])
  want = _torch_outputs(torch_model, pixels, ids)
  model, variables = bigjax.from_pretrained(str(tmp_path))
  assert model.text_pool == 'argmax'
  _assert_close(_bigjax_outputs(model, variables, pixels, ids), want)
  eos_pooled = model.clone(text_pool='eos', eos_token_id=40)
  moved = eos_pooled.apply(variables, ids.astype(np.int32), method='encode_text')
  assert np.abs(np.asarray(moved) - want['text_features']).max() > 1e-2  # the rule matters


def test_save_pretrained_round_trips_through_transformers(saved, tmp_path):
  folder, want = saved
  model, variables = bigjax.from_pretrained(str(folder))
  out = tmp_path / 'export'
  bigjax.save_pretrained(model, variables, str(out))
  reloaded, info = transformers.CLIPModel.from_pretrained(out, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  _assert_close(_torch_outputs(reloaded.eval(), *_inputs()), want)
  # Scanned towers export the same tensors as unrolled ones.
  params = dict(variables['params'])
  for tower, layers in (('vision', model.vision_layers), ('text', model.text_layers)):
    params[tower] = stack_layers(params[tower], layers)
  _, plain = hf_clip.export(model, variables)
  _, scanned = hf_clip.export(model.clone(scan_layers=True), {'params': params})
  assert plain.keys() == scanned.keys()
  for name in plain:
    np.testing.assert_array_equal(plain[name], scanned[name], err_msg=name)


def test_models_without_a_hugging_face_form_are_refused(saved, tmp_path):
  folder, _ = saved
  model, variables = bigjax.from_pretrained(str(folder))
  with pytest.raises(ValueError, match="text_pool='last'.*no Hugging"):
    bigjax.save_pretrained(model.clone(text_pool='last'), variables, str(tmp_path / 'a'))
  with pytest.raises(ValueError, match='audio front end'):
    bigjax.save_pretrained(model.clone(audio=True), variables, str(tmp_path / 'b'))
  params = jax.tree.map(np.asarray, variables['params'])
  del params['logit_scale']
  with pytest.raises(ValueError, match='logit_scale'):
    bigjax.save_pretrained(model, {'params': params}, str(tmp_path / 'c'))


def test_clip_tokenizer_from_a_hugging_face_folder(tmp_path):
  """A tiny CLIP BPE (the byte alphabet with and without CLIP's '</w>' word ends, a few
  merges), saved by transformers' CLIPTokenizer, reads back through `load_tokenizer`, and
  `encode_caption` gives transformers' padded input_ids."""
  from tokenizers import pre_tokenizers

  chars = pre_tokenizers.ByteLevel.alphabet()
  merges = [('a', 't</w>'), ('c', 'at</w>'), ('d', 'o'), ('do', 'g</w>'), ('p', 'h'), ('ph', 'o')]
  tokens = chars + [c + '</w>' for c in chars] + ['at</w>', 'cat</w>', 'do', 'dog</w>', 'ph']
  tokens += ['pho', '<|startoftext|>', '<|endoftext|>']
  hf = transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
  hf.save_pretrained(tmp_path)
  tok = load_tokenizer(str(tmp_path))
  assert isinstance(tok, HFTokenizer)
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (len(tokens) - 2, len(tokens) - 1, len(tokens) - 1)
  texts = ['a photo of a Cat', 'a dog', 'the photo of the dog and the cat!']
  want = hf(texts, padding='max_length', max_length=12, truncation=True).input_ids
  got = [encode_caption(tok, text, 12).tolist() for text in texts]
  assert got[:2] == want[:2]
  assert got[2][:-1] == want[2][:-1] and got[2][-1] == tok.eos_id  # cut: the EOS is kept
