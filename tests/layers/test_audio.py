"""The audio front end against plain NumPy: log-mel, mu-law, SpecAugment."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax.layers import audio


def _runs(mask: np.ndarray) -> list[int]:
  """Lengths of the runs of True in a 1-D bool array."""
  edges = np.diff(np.r_[0, mask.astype(int), 0])
  return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def reference_log_mel(x, sample_rate, n_fft, hop, n_mels, f_min, f_max, eps=1e-6):
  """Loops over frames and filters, float64: the textbook definition."""
  pad = n_fft // 2
  padded = np.pad(x.astype(np.float64), (pad, pad), mode='reflect')
  n = np.arange(n_fft)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
  frames = [padded[s : s + n_fft] * window for s in range(0, len(padded) - n_fft + 1, hop)]
  power = np.abs(np.fft.rfft(np.stack(frames), axis=-1)) ** 2  # [F, S]
  mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731  HTK
  hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
  step = (mel(f_max) - mel(f_min)) / (n_mels + 1)
  edges = [hz(mel(f_min) + i * step) for i in range(n_mels + 2)]
  bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
  fbank = np.zeros((len(bins), n_mels))
  for m in range(n_mels):
    lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
    for k, f in enumerate(bins):
      if lo <= f <= centre:
        fbank[k, m] = (f - lo) / (centre - lo)
      elif centre < f <= hi:
        fbank[k, m] = (hi - f) / (hi - centre)
  return np.log(power @ fbank + eps)  # [F, M]


@pytest.mark.parametrize(
  'rate, n_fft, hop, n_mels, f_min, f_max',
  [(16000, 400, 160, 40, 0.0, 8000.0), (8000, 256, 100, 32, 60.0, 3800.0)],
)
def test_log_mel_equals_a_numpy_reference(rate, n_fft, hop, n_mels, f_min, f_max):
  rng = np.random.default_rng(0)
  t = np.arange(rate) / rate
  x = 0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t) + 0.05 * rng.normal(size=rate)
  x = np.stack([x, rng.uniform(-1, 1, rate)]).astype(np.float32)  # [B=2, N]
  ours = audio.log_mel_spectrogram(
    jnp.asarray(x),
    sample_rate=rate,
    n_fft=n_fft,
    hop_length=hop,
    n_mels=n_mels,
    f_min=f_min,
    f_max=f_max,
  )
  assert ours.shape == (2, rate // hop + 1, n_mels)
  for b in range(2):
    ref = reference_log_mel(x[b], rate, n_fft, hop, n_mels, f_min, f_max)
    np.testing.assert_allclose(np.asarray(ours[b]), ref, rtol=1e-4, atol=1e-4)


def test_log_mel_module_is_the_function():
  x = jax.random.uniform(jax.random.key(0), (1, 4000), minval=-1, maxval=1)
  module = audio.LogMel(n_mels=20)
  np.testing.assert_array_equal(module.apply({}, x), audio.log_mel_spectrogram(x, n_mels=20))


def test_mu_law_round_trip_error_bound():
  mu = 255
  x = np.linspace(-1, 1, 20001).astype(np.float32)
  codes = audio.mu_law_encode(x)
  assert codes.dtype == np.int32 and codes.min() == 0 and codes.max() == mu
  back = audio.mu_law_decode(codes)
  # Half a code step (1 / mu in the companded domain) times the slope of the expansion,
  # dx/dy = ln(1 + mu) (|x| + 1 / mu), taken at the far end of the step.
  bound = 0.5 * (2 / mu) * math.log1p(mu) * (np.abs(x) + 1 / mu) * (1 + mu) ** (1 / mu)
  assert np.all(np.abs(back - x) <= bound + 1e-6)
  assert np.abs(back - x).max() > 0.5 * bound.max()  # the bound is not slack
  every = np.arange(mu + 1)
  np.testing.assert_array_equal(audio.mu_law_encode(audio.mu_law_decode(every)), every)
  np.testing.assert_array_equal(np.asarray(audio.mu_law_encode(jnp.asarray(x))), codes)


def test_spec_augment_masks_what_it_says():
  b, f, m = 3000, 50, 20
  policy = dict(freq_masks=1, freq_width=6, time_masks=2, time_width=9, time_fraction=0.1)
  rng = jax.random.key(0)
  features = jax.random.normal(jax.random.key(1), (b, f, m))

  @jax.jit
  def run(features, rng):
    masks = audio.spec_augment_masks(rng, b, f, m, **policy)
    return masks, audio.spec_augment(features, rng, mask_value=-7.0, **policy)

  (time_mask, freq_mask), out = run(features, rng)
  time_mask, freq_mask = np.asarray(time_mask), np.asarray(freq_mask)
  widths = freq_mask.sum(1)  # one band: its width, uniform on 0..6
  assert widths.max() == 6 and widths.min() == 0 and abs(widths.mean() - 3) < 0.15
  assert all(len(_runs(row)) <= 1 for row in freq_mask)
  # time_fraction 0.1 of 50 frames caps each band at 5 frames; two bands: at most 10.
  assert all(len(_runs(row)) <= 2 and row.sum() <= 10 for row in time_mask)
  assert time_mask.sum(1).max() == 10 and time_mask.sum(1).min() == 0
  starts = np.array([np.flatnonzero(row)[0] for row in freq_mask if row.any()])
  assert starts.min() == 0 and (starts + widths[widths > 0]).max() == m  # reaches both edges

  masked = time_mask[:, :, None] | freq_mask[:, None, :]
  out, features = np.asarray(out), np.asarray(features)
  np.testing.assert_array_equal(out[~masked], features[~masked])
  assert np.all(out[masked] == -7.0)


def test_spec_augment_module_trains_only():
  features = jax.random.normal(jax.random.key(0), (4, 30, 16))
  module = audio.SpecAugment(freq_width=4, time_width=5)
  np.testing.assert_array_equal(module.apply({}, features, train=False), features)
  train = jax.jit(lambda x, k: module.apply({}, x, train=True, rngs={'dropout': k}))
  a, b = train(features, jax.random.key(1)), train(features, jax.random.key(2))
  assert (np.asarray(a) == 0).any() and not np.array_equal(a, b)


def test_normalize_per_utterance():
  x = jax.random.normal(jax.random.key(0), (3, 7, 5)) * jnp.array([1.0, 5.0, 0.1])[:, None, None]
  y = np.asarray(audio.normalize_per_utterance(x + 3.0))
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-3)
