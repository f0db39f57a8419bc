"""CLIP beyond the model contract: the text pooling rules, the image tower is bigjax's ViT
with CLIP's options, the logits are the scaled cosines of the separately encoded towers,
the temperature is clipped at 100, and the audio front end.

Legend: B batch, T text length, N audio samples, F frames, M mel bands, E embedding width.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax.layers.audio import log_mel_spectrogram
from bigjax.models.clip import pool_positions


def test_pool_positions():
  ids = jnp.asarray([[5, 9, 7, 3, 3, 0], [5, 2, 8, 9, 9, 9]])
  assert pool_positions(ids, 'eos', 9).tolist() == [1, 3]  # the first EOS
  assert pool_positions(ids, 'argmax', None).tolist() == [1, 3]  # the first largest id
  assert pool_positions(ids, 'last', None).tolist() == [4, 5]  # before the pad id 0
  ids = jnp.asarray([[1, 50, 4, 2, 0, 0]])  # an EOS of 2 below the text's ids
  assert pool_positions(ids, 'eos', 2).tolist() == [3]
  assert pool_positions(ids, 'argmax', None).tolist() == [1]  # why HF's legacy rule needs EOS last


def test_image_tower_is_the_vit_with_clip_options_and_logits_are_scaled_cosines():
  model = bigjax.create_model('clip_test', vision_layers=1, text_layers=1)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
  texts = np.array([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11]], np.int32)
  variables = jax.jit(model.init)(jax.random.key(0), images, texts)
  vision = variables['params']['vision']
  assert 'bias' not in vision['patch_embed'] and 'norm_pre' in vision and 'head' not in vision
  np.testing.assert_allclose(variables['params']['logit_scale'], np.log(1 / 0.07), rtol=1e-6)
  params = {**variables['params'], 'logit_scale': jnp.float32(10.0)}  # exp(10) > 100

  @jax.jit
  def run(params):
    v = {'params': params}
    out = model.apply(v, images, texts)
    image = model.apply(v, images, method='encode_image')
    text = model.apply(v, texts, method='encode_text')
    moved = model.apply(v, images, jnp.asarray(texts).at[0, 3].set(3))  # a token after row 0's last
    return out, image, text, moved

  out, image, text, moved = run(params)
  assert float(out.features['logit_scale']) == 100.0  # clipped (section 2.5)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  np.testing.assert_allclose(out.logits, 100 * unit(image) @ unit(text).T, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.features['image_embeds'], unit(image), atol=1e-6)
  # 'last' pooling moves with the text's length; the other rows are unchanged.
  assert not np.allclose(moved.features['text_embeds'][0], out.features['text_embeds'][0])
  np.testing.assert_allclose(moved.features['text_embeds'][1:], out.features['text_embeds'][1:])
  with pytest.raises(ValueError, match='exceed the text tower max_len=16'):
    model.apply({'params': params}, np.zeros((1, 17), np.int32), method='encode_text')


def test_audio_front_end():
  """Raw audio [B, N] -> standardised log-mel [B, F', M', 1], frames edge-padded to a
  multiple of the patch size; the rest of the model is the image model's."""
  model = bigjax.create_model(
    'clip_test',
    vision_layers=1,
    text_layers=1,
    audio=True,
    sample_rate=8000,
    n_fft=128,
    hop_length=64,
    n_mels=16,
  )
  t = np.arange(2100) / 8000
  audio = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 1200 * t) * (t < 0.1)])
  audio = audio.astype(np.float32)
  texts = np.array([[3, 4, 0], [5, 0, 0]], np.int32)

  @jax.jit
  def run(audio):
    variables = model.init(jax.random.key(0), audio, texts)
    image = model.apply(variables, audio, method='audio_image')
    return image, model.apply(variables, audio, texts)

  image, out = run(audio)
  frames = 2100 // 64 + 1  # 33 frames
  assert image.shape == (2, 36, 16, 1)  # 33 -> 36, a multiple of the patch size 4
  features = log_mel_spectrogram(audio, sample_rate=8000, n_fft=128, hop_length=64, n_mels=16)
  standard = (features - features.mean((1, 2), keepdims=True)) / (
    features.std((1, 2), keepdims=True) + 1e-5
  )
  np.testing.assert_allclose(image[:, :frames, :, 0], standard, atol=1e-4)
  np.testing.assert_array_equal(
    image[:, frames:, :, 0], np.repeat(image[:, frames - 1 : frames, :, 0], 3, 1)
  )
  assert out.logits.shape == (2, 2) and np.isfinite(out.logits).all()
