"""The audio_lm task: mu-law codes in, the next code scored, bits per sample; the model's
conditioning inputs follow its options; training crops are windows of the clips."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import losses
from bigjax.layers.audio import mu_law_encode
from bigjax.outputs import ModelOutput
from bigjax.train.plain_config import PlainConfig
from bigjax.train.step import add_metrics, summarize
from bigjax.train.tasks import get_task


def _config(model=None, data=None, task=None):
  return PlainConfig({'model': model or {}, 'data': data or {}, 'task': task or {}, 'train': {}})


def _batch(n=9):
  rng = np.random.default_rng(0)
  audio = np.clip(rng.normal(0, 0.3, (2, n)), -1, 1).astype(np.float32)
  return {
    'audio': audio,
    'label': np.array([3, 5], np.int32),
    'voice': np.array([1, 0], np.int32),
    'mask': np.array([True, False]),
  }


def test_inputs_follow_the_models_conditioning():
  batch = _batch()
  codes = mu_law_encode(batch['audio'])
  (x,) = get_task('audio_lm', _config()).inputs(batch)
  np.testing.assert_array_equal(x, codes[:, :-1])
  x, label = get_task('audio_lm', _config({'num_labels': 20})).inputs(batch)
  np.testing.assert_array_equal(label, [3, 5])
  voice = get_task('audio_lm', _config({'num_labels': 4}, task={'label_key': 'voice'}))
  np.testing.assert_array_equal(voice.inputs(batch)[1], [1, 0])
  x, label, audio = get_task('audio_lm', _config({'mel_bands': 8})).inputs(batch)
  assert audio is batch['audio'] and x.shape == (2, 8)


def test_loss_is_the_next_codes_cross_entropy_and_bits_per_sample():
  batch = _batch()
  task = get_task('audio_lm', _config())
  loss, metrics = jax.jit(task.loss), jax.jit(task.metrics)  # one compile, not many eager ops
  targets = mu_law_encode(batch['audio'])[:, 1:]  # [2, 8]
  logits = jax.random.normal(jax.random.key(0), (2, 8, 256))
  expected = jax.jit(losses.softmax_cross_entropy)(logits, jnp.asarray(targets))  # [2, 8]
  np.testing.assert_allclose(loss(logits, batch), expected, rtol=1e-6)
  w = task.weights(batch)
  np.testing.assert_array_equal(w, np.repeat([[1.0], [0.0]], 8, axis=1))  # mask False: 0
  result = summarize(add_metrics(None, metrics(logits, batch)), task)
  np.testing.assert_allclose(result['loss'], expected[0].mean(), rtol=1e-5)
  np.testing.assert_allclose(result['bits_per_sample'], result['loss'] / math.log(2), rtol=1e-6)
  right = np.argmax(np.asarray(logits[0]), -1) == targets[0]
  np.testing.assert_allclose(result['accuracy'], right.mean())
  # A mixture output is scored by its own NLL.
  mixture = jax.random.normal(jax.random.key(1), (2, 8, 6))
  out = ModelOutput(logits=logits, features={'mixture': mixture})
  nll = jax.jit(losses.discretized_logistic_mixture_nll)(mixture, jnp.asarray(targets))
  np.testing.assert_allclose(loss(out, batch), nll, rtol=1e-6)
  assert 'accuracy' not in metrics(out, batch)


def test_training_crops_are_windows_of_each_clip():
  batch = _batch(n=40)
  task = get_task('audio_lm', _config(data={'crop_samples': 16}))
  cropped = task.augment(batch, jax.random.key(0))
  assert cropped['audio'].shape == (2, 16)
  for clip, window in zip(batch['audio'], np.asarray(cropped['audio'])):
    starts = [s for s in range(25) if np.array_equal(clip[s : s + 16], window)]
    assert starts, 'a crop is not a window of its clip'
  # A clip padded with zeros after 20 samples: its windows end before the padding.
  padded = {**batch, 'audio': np.where(np.arange(40) < 20, batch['audio'], 0.0)}
  padded['audio'][1] = 0.0  # a silent clip: any window
  starts, augment = [], jax.jit(task.augment)
  for seed in range(8):
    window = np.asarray(augment(padded, jax.random.key(seed))['audio'][0])
    starts += [s for s in range(25) if np.array_equal(padded['audio'][0, s : s + 16], window)]
  assert set(starts) <= set(range(5)) and len(set(starts)) > 1
  assert get_task('audio_lm', _config()).augment(batch, jax.random.key(0)) is batch
  with pytest.raises(ValueError, match='crop_samples'):
    get_task('audio_lm', _config(data={'crop_samples': 1}))
