"""CLIP beyond the model contract: the text pooling rules, the image tower is bigjax's ViT
with CLIP's options, and, on the audio front end, the logits are the scaled cosines of the
separately encoded towers with the temperature clipped at 100.

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


def test_image_tower_is_the_vit_with_clip_options():
  """Its parameters (traced abstractly, nothing compiled): no patch bias, a LayerNorm before
  the blocks, no head; the temperature starts at 1 / 0.07."""
  model = bigjax.create_model('clip_test', vision_layers=1, text_layers=1)
  images, texts = np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 4), np.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images, texts)['params']
  vision = shapes['vision']
  assert 'bias' not in vision['patch_embed'] and 'norm_pre' in vision and 'head' not in vision
  assert vision['patch_embed']['kernel'].shape == (4, 4, 3, 32)
  assert shapes['image_proj']['kernel'].shape == (32, 16) and 'bias' not in shapes['text_proj']
  assert shapes['logit_scale'].shape == ()
  with pytest.raises(ValueError, match='exceed the text tower max_len=16'):
    jax.eval_shape(model.init, jax.random.key(0), images, np.zeros((1, 17), np.int32))


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
    v = {'params': {**variables['params'], 'logit_scale': jnp.float32(10.0)}}  # exp(10) > 100
    image = model.apply(v, audio, method='audio_image')
    out = model.apply(v, audio, texts)
    sound = model.apply(v, audio, method='encode_image')
    text = model.apply(v, texts, method='encode_text')
    moved = model.apply(v, audio, jnp.asarray(texts).at[1, 1].set(7))  # after row 1's last
    return variables, image, out, sound, text, moved

  variables, image, out, sound, text, moved = run(audio)
  np.testing.assert_allclose(variables['params']['logit_scale'], np.log(1 / 0.07), rtol=1e-6)
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
  # The logits are the clipped scale (100, section 2.5) times the cosines of the towers.
  assert float(out.features['logit_scale']) == 100.0
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  np.testing.assert_allclose(out.logits, 100 * unit(sound) @ unit(text).T, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.features['text_embeds'], unit(text), atol=1e-6)
  # 'last' pooling follows the text's length: row 1 moves, row 0 does not.
  old, new = out.features['text_embeds'], moved.features['text_embeds']
  assert not np.allclose(new[1], old[1]) and np.allclose(new[0], old[0], atol=1e-6)
