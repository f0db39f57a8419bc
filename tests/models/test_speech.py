"""Speech classifiers: the ResNet backbone is the ResNet family's class, SpecAugment masks
the features in training only, bad sizes fail with a message (the contract covers the rest)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax.layers import audio as audio_lib
from bigjax.models import resnet, speech


def test_resnet_backbone_is_the_resnet_family():
  model = bigjax.create_model('speech_resnet_test')
  x = jnp.zeros((2, 4000))
  variables = jax.eval_shape(lambda k: model.init(k, x), jax.random.key(0))
  plain = resnet.ResNet(stage_sizes=(1, 1), width=4, num_classes=10, zero_init_residual=True)
  expected = jax.eval_shape(lambda k: plain.init(k, jnp.zeros((2, 26, 16, 1))), jax.random.key(0))
  assert jax.tree.map(lambda a: a.shape, variables['params']['backbone']) == jax.tree.map(
    lambda a: a.shape, expected['params']
  )
  with pytest.raises(ValueError, match='no dropout'):
    jax.eval_shape(model.clone(dropout_rate=0.1).init, jax.random.key(0), x)


def test_spec_augment_masks_the_features_in_training_only():
  model = bigjax.create_model('speech_transformer_test')
  x = jax.random.uniform(jax.random.key(0), (2, 4000), minval=-1, maxval=1)
  spectrogram = functools.partial(model.apply, {}, method=speech.SpeechTransformer.spectrogram)

  @jax.jit
  def run(x):
    rngs = {'dropout': jax.random.key(2)}
    clean = audio_lib.normalize_per_utterance(audio_lib.log_mel_spectrogram(x, n_mels=16))
    return clean, spectrogram(x, False), spectrogram(x, True, rngs=rngs)

  clean, evaluated, trained = map(np.asarray, run(x))
  np.testing.assert_array_equal(evaluated, clean)
  assert (trained != clean).any() and np.all((trained == clean) | (trained == 0))


def test_too_many_frames_is_a_clear_error():
  model = bigjax.create_model('speech_transformer_test', max_frames=8)
  with pytest.raises(ValueError, match='frame_stack, max_frames or data.audio_samples'):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4000)))
