"""16-bit PCM `.wav` files in and out, with the standard library's `wave` module.

`read_wav(path) -> (audio float32 [N] in [-1, 1], sample_rate)` (a multi-channel file is
averaged to mono); `write_wav(path, audio, sample_rate)` clips to [-1, 1] and writes mono
int16. Bad files raise a one-line `ValueError` naming the file.
"""

import wave

import numpy as np

INT16_SCALE = 32768.0


def to_float(pcm: np.ndarray) -> np.ndarray:
  """int16 samples -> float32 in [-1, 1)."""
  return np.asarray(pcm, np.float32) / INT16_SCALE


def to_int16(audio: np.ndarray) -> np.ndarray:
  """float samples in [-1, 1] -> int16 (clipped, rounded)."""
  scaled = np.round(np.clip(np.asarray(audio, np.float64), -1.0, 1.0) * INT16_SCALE)
  return np.clip(scaled, -32768, 32767).astype(np.int16)


def read_wav(path: str) -> tuple[np.ndarray, int]:
  """A 16-bit PCM wav file -> (mono float32 audio [N], sample rate)."""
  try:
    with wave.open(path, 'rb') as f:
      channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
      frames = f.readframes(f.getnframes())
  except (wave.Error, EOFError) as e:
    raise ValueError(f'{path}: not a readable PCM .wav file ({e}); write one as 16-bit PCM') from e
  if width != 2:
    raise ValueError(f'{path}: {8 * width}-bit samples; convert it to 16-bit PCM')
  pcm = np.frombuffer(frames, '<i2').reshape(-1, channels)  # [N, channels]
  return to_float(pcm).mean(axis=1), rate


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
  """Writes mono float audio [N] in [-1, 1] as a 16-bit PCM wav file."""
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise ValueError(f'write_wav takes mono audio [N], got shape {audio.shape}')
  with wave.open(path, 'wb') as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(int(sample_rate))
    f.writeframes(to_int16(audio).astype('<i2').tobytes())
