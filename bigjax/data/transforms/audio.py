"""Audio preprocessing as per-record Grain transforms: int16 clips -> fixed-length float32.

Records {'audio': int16 [n] at `source_rate`, 'label', 'voice' (optional)} become
{'audio': float32 [N] in [-1, 1], 'label': int32, 'voice': int32 (0 when absent)}, with
N = `data.audio_samples` at `data.sample_rate`:

  1. int16 -> float32 / 32768 (`bigjax.data.wav.to_float`);
  2. resampled from the source rate to `data.sample_rate` if they differ (polyphase FIR);
  3. fitted to N samples: a shorter clip is zero-padded at the end, a longer one keeps its
     central N samples (`fit_length`, the same function `bigjax.classify` uses).

Training-time augmentation (`data.time_shift`, seconds, default 0): the clip moves by a
uniform whole number of samples in [-shift, shift], zero-filled (the Speech Commands
baseline shifts by up to 100 ms). A `grain.transforms.RandomMap`, seeded per record.
"""

import math

import grain
import ml_collections
import numpy as np

from bigjax.data.wav import to_float

SAMPLE_RATE = 16000  # the default rate of every data set here
AUDIO_SAMPLES = 16000  # 1 s at 16 kHz


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """float32 [n] from `rate_in` to `rate_out` Hz (scipy's polyphase resampler)."""
  if rate_in == rate_out:
    return np.asarray(audio, np.float32)
  from scipy.signal import resample_poly

  g = math.gcd(int(rate_in), int(rate_out))
  return resample_poly(audio, rate_out // g, rate_in // g).astype(np.float32)


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
  """[m] -> [n]: zero-padded at the end when m < n, the central n samples when m > n."""
  m = len(audio)
  if m >= n:
    start = (m - n) // 2
    return audio[start : start + n]
  return np.pad(audio, (0, n - m))


def audio_config(data: ml_collections.ConfigDict) -> tuple[int, int]:
  """(sample_rate, audio_samples) of a data config, checked."""
  rate = int(data.get('sample_rate', SAMPLE_RATE))
  samples = int(data.get('audio_samples', AUDIO_SAMPLES))
  if rate <= 0 or samples <= 0:
    raise ValueError(
      f'data.sample_rate and data.audio_samples must be positive, got {rate} and {samples}'
    )
  return rate, samples


class AudioExample(grain.transforms.Map):
  """{'audio': int16 [n], 'label'(, 'voice')} -> {'audio': float32 [N], 'label', 'voice'}."""

  def __init__(self, source_rate: int, sample_rate: int, num_samples: int):
    self.source_rate, self.sample_rate, self.num_samples = source_rate, sample_rate, num_samples

  def map(self, element):
    audio = resample(to_float(element['audio']), self.source_rate, self.sample_rate)
    return {
      'audio': fit_length(audio, self.num_samples).astype(np.float32),
      'label': np.int32(element['label']),
      'voice': np.int32(element.get('voice', 0)),
    }


class TimeShift(grain.transforms.RandomMap):
  """Moves 'audio' [N] by a uniform shift in [-max_shift, max_shift] samples, zero-filled."""

  def __init__(self, max_shift: int):
    self.max_shift = max_shift

  def random_map(self, element, rng: np.random.Generator):
    audio = element['audio']
    shift = int(rng.integers(-self.max_shift, self.max_shift + 1))
    out = np.zeros_like(audio)
    if shift >= 0:
      out[shift:] = audio[: len(audio) - shift]
    else:
      out[:shift] = audio[-shift:]
    return {**element, 'audio': out}


def audio_transforms(data: ml_collections.ConfigDict, train: bool, source_rate: int) -> list:
  """The per-record transforms of an audio classification data set (module docstring)."""
  rate, samples = audio_config(data)
  transforms = [AudioExample(source_rate, rate, samples)]
  shift = int(round(float(data.get('time_shift', 0.0)) * rate))
  if train and shift > 0:
    transforms.append(TimeShift(min(shift, samples)))
  return transforms
