"""Audio front end shared by the speech families: mu-law coding and log-mel features.

Legend: B batch, N samples, F frames, S = n_fft // 2 + 1 frequency bins, M mel bands.

- `mu_law_encode` / `mu_law_decode`: the 8-bit companding of ITU-T G.711 that WaveNet
  (van den Oord et al., 2016, section 2.2) uses for its 256-way categorical output:
  f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu), quantised to `channels` levels. Both work on
  NumPy arrays (in data workers, returning NumPy) and on JAX arrays (under jit).
- `stft`, `mel_filterbank`, `log_mel_spectrogram`: a Hann-windowed short-time Fourier
  transform with centred frames (reflect padding, as librosa and torch.stft with
  center=True), a triangular filterbank on the HTK mel scale (m = 2595 log10(1 + f / 700),
  no area normalisation, as torchaudio's default), and log(power + eps). All in JAX, jit-able.
- `LogMel`: the same as a parameter-free Linen module, so a model can take raw audio.
- `spec_augment` / `SpecAugment`: SpecAugment's frequency and time masking (Park et al.,
  2019, section 2): each of `freq_masks` bands of f ~ U{0..freq_width} consecutive mel
  bands from f0 ~ U{0..M - f}, and each of `time_masks` bands of t ~ U{0..T'} frames,
  T' = min(time_width, floor(time_fraction * F)), set to `mask_value`; drawn per example.
  Time warping (the paper's third policy, which it found the least useful) is left out.
- `normalize_per_utterance`: zero mean, unit variance over each example's [F, M].
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MU_LAW_CHANNELS = 256


def _xp(x):
  return np if isinstance(x, (np.ndarray, np.generic, float, int)) else jnp


def mu_law_encode(audio, channels: int = MU_LAW_CHANNELS):
  """Waveform in [-1, 1] -> integer codes in [0, channels) (int32), same shape."""
  xp = _xp(audio)
  mu = channels - 1
  x = xp.clip(xp.asarray(audio, xp.float32), -1.0, 1.0)
  y = xp.sign(x) * xp.log1p(mu * xp.abs(x)) / math.log1p(mu)  # in [-1, 1]
  return xp.clip(xp.floor((y + 1.0) / 2.0 * mu + 0.5), 0, mu).astype(xp.int32)


def mu_law_decode(codes, channels: int = MU_LAW_CHANNELS):
  """Integer codes in [0, channels) -> waveform in [-1, 1] (float32), same shape."""
  xp = _xp(codes)
  mu = channels - 1
  y = xp.asarray(codes, xp.float32) * (2.0 / mu) - 1.0
  return (xp.sign(y) * xp.expm1(xp.abs(y) * math.log1p(mu)) / mu).astype(xp.float32)


def hz_to_mel(f):
  return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
  return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(
  n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
  """Triangular filters on the HTK mel scale: [S, M] float32 (a constant, built in NumPy)."""
  f_max = sample_rate / 2 if f_max is None else f_max
  freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # [S]
  edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))  # [M + 2]
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # [M] each
  rising = (freqs[:, None] - lower) / (centre - lower)  # [S, M]
  falling = (upper - freqs[:, None]) / (upper - centre)  # [S, M]
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def stft(audio: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
  """Centred, Hann-windowed STFT: audio [B, N] -> complex [B, F, S], F = N // hop + 1."""
  pad = n_fft // 2
  x = jnp.pad(audio.astype(jnp.float32), ((0, 0), (pad, pad)), mode='reflect')
  frames = 1 + (x.shape[-1] - n_fft) // hop_length
  index = jnp.arange(frames)[:, None] * hop_length + jnp.arange(n_fft)[None, :]  # [F, n_fft]
  window = jnp.asarray(np.hanning(n_fft + 1)[:-1], jnp.float32)  # periodic Hann
  return jnp.fft.rfft(x[:, index] * window, axis=-1)  # [B, F, S]


def log_mel_spectrogram(
  audio: jax.Array,
  *,
  sample_rate: int = 16000,
  n_fft: int = 400,
  hop_length: int = 160,
  n_mels: int = 40,
  f_min: float = 0.0,
  f_max: float | None = None,
  eps: float = 1e-6,
) -> jax.Array:
  """audio [B, N] in [-1, 1] -> log mel power [B, F, M] (float32). Defaults: 25 ms windows,
  10 ms hops at 16 kHz, 40 bands (the Speech Commands baseline's front end)."""
  spec = stft(audio, n_fft, hop_length)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2  # [B, F, S]
  fbank = jnp.asarray(mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max))
  return jnp.log(power @ fbank + eps)  # [B, F, M]


class LogMel(nn.Module):
  """Raw audio [B, N] -> log-mel features [B, F, M]; no parameters."""

  sample_rate: int = 16000
  n_fft: int = 400
  hop_length: int = 160
  n_mels: int = 40

  def __call__(self, audio: jax.Array) -> jax.Array:
    return log_mel_spectrogram(
      audio,
      sample_rate=self.sample_rate,
      n_fft=self.n_fft,
      hop_length=self.hop_length,
      n_mels=self.n_mels,
    )


def _band_mask(rng: jax.Array, batch: int, size: int, count: int, max_width: int) -> jax.Array:
  """[B, size] bool: the union of `count` bands per row, each of a width drawn uniformly
  from 0..max_width (at most `size`) at a start drawn uniformly from 0..size - width."""
  if count == 0 or max_width == 0:
    return jnp.zeros((batch, size), bool)
  k_width, k_start = jax.random.split(rng)
  width = jax.random.randint(k_width, (batch, count), 0, min(max_width, size) + 1)  # [B, n]
  u = jax.random.uniform(k_start, (batch, count))
  start = jnp.floor(u * (size - width + 1)).astype(jnp.int32)  # [B, n], in 0..size - width
  index = jnp.arange(size)  # [size]
  inside = (index >= start[..., None]) & (index < (start + width)[..., None])  # [B, n, size]
  return inside.any(axis=1)


def spec_augment_masks(
  rng: jax.Array,
  batch: int,
  frames: int,
  mels: int,
  *,
  freq_masks: int = 2,
  freq_width: int = 8,
  time_masks: int = 2,
  time_width: int = 10,
  time_fraction: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """(time mask [B, F], frequency mask [B, M]), bool, True where masked (module docstring)."""
  k_time, k_freq = jax.random.split(rng)
  widest = min(time_width, int(math.floor(time_fraction * frames)))
  return (
    _band_mask(k_time, batch, frames, time_masks, widest),
    _band_mask(k_freq, batch, mels, freq_masks, freq_width),
  )


def spec_augment(
  features: jax.Array,
  rng: jax.Array,
  *,
  freq_masks: int = 2,
  freq_width: int = 8,
  time_masks: int = 2,
  time_width: int = 10,
  time_fraction: float = 1.0,
  mask_value: float = 0.0,
) -> jax.Array:
  """features [B, F, M] -> the same with SpecAugment's time and frequency bands set to
  `mask_value` (0: the mean of features normalised per utterance)."""
  batch, frames, mels = features.shape
  time_mask, freq_mask = spec_augment_masks(
    rng,
    batch,
    frames,
    mels,
    freq_masks=freq_masks,
    freq_width=freq_width,
    time_masks=time_masks,
    time_width=time_width,
    time_fraction=time_fraction,
  )
  masked = time_mask[:, :, None] | freq_mask[:, None, :]  # [B, F, M]
  return jnp.where(masked, jnp.asarray(mask_value, features.dtype), features)


class SpecAugment(nn.Module):
  """`spec_augment` in training (rng stream 'dropout'), the identity in evaluation."""

  freq_masks: int = 2
  freq_width: int = 8
  time_masks: int = 2
  time_width: int = 10
  time_fraction: float = 1.0
  mask_value: float = 0.0

  def __call__(self, features: jax.Array, *, train: bool = False) -> jax.Array:
    """features [B, F, M] -> [B, F, M]."""
    if not train or not (self.freq_masks or self.time_masks):
      return features
    return spec_augment(
      features,
      self.make_rng('dropout'),
      freq_masks=self.freq_masks,
      freq_width=self.freq_width,
      time_masks=self.time_masks,
      time_width=self.time_width,
      time_fraction=self.time_fraction,
      mask_value=self.mask_value,
    )


def normalize_per_utterance(features: jax.Array, eps: float = 1e-5) -> jax.Array:
  """features [B, F, M] -> zero mean and unit variance over each example's [F, M]."""
  x = features.astype(jnp.float32)
  mean = x.mean(axis=(1, 2), keepdims=True)
  std = x.std(axis=(1, 2), keepdims=True)
  return (x - mean) / (std + eps)
