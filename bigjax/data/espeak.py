"""eSpeak NG speech synthesis through `ctypes`, for building offline speech data.

The library and its voice data come from the `espeakng-loader` wheel (`pip install
'bigjax[audio]'`), or else from a system `libespeak-ng` (Debian's `espeak-ng` package). eSpeak
NG is GPL-3.0-or-later; bigjax only calls it, in a separate process, to build a data set.

Two things make eSpeak's output vary from run to run, and both are pinned here: it seeds its
noise generator from the clock (each utterance's seed is set to its index in the chunk with
`espeak_ng_SetRandSeed`, eSpeak NG 1.52+), and it keeps state across utterances inside the
library (a static pitch-flutter phase in its wave generator, echo buffers), so the same call
gives slightly different audio depending on what was spoken before, and no API call resets
it. `synthesise` therefore speaks each fixed chunk of requests in a fresh Python process
running this file (which imports nothing from bigjax): the audio is a function of the request
list alone, whatever the number of cores.

A request is (text, voice, rate, pitch): `voice` is an eSpeak voice name with an optional
variant ('en-us+m3', the `!v/` files), `rate` words per minute (80..450, default 175), `pitch`
the base pitch 0..100 (default 50). Output is int16 at eSpeak's rate (22,050 Hz), resampled
to the requested rate with a polyphase filter, silence trimmed (40 dB below the peak, 10 ms
kept either side) and the peak set to a fixed level (eSpeak's loudness varies by voice).
"""

import ctypes
import ctypes.util
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

INSTALL_HINT = "pip install 'bigjax[audio]' (or install the espeak-ng system package)"
CHUNK = 1000  # requests per synthesis process; fixed, so the audio does not depend on cores

# speak_lib.h constants.
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
RATE, PITCH = 1, 3

_CALLBACK = ctypes.CFUNCTYPE(
  ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def find_library() -> tuple[str, str | None]:
  """(path of libespeak-ng, its data folder or None for the library's default)."""
  try:
    import espeakng_loader
  except ImportError:
    path = ctypes.util.find_library('espeak-ng')
    if path is None:
      raise FileNotFoundError(f'eSpeak NG is not installed: {INSTALL_HINT}') from None
    return path, None
  return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


class Espeak:
  """One initialised libespeak-ng (one per process: the library is a global singleton)."""

  def __init__(self):
    path, data = find_library()
    lib = ctypes.CDLL(path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
      ctypes.c_char_p,  # text
      ctypes.c_size_t,  # size in bytes, with the terminating zero
      ctypes.c_uint,  # position
      ctypes.c_int,  # position type
      ctypes.c_uint,  # end position
      ctypes.c_uint,  # flags
      ctypes.c_void_p,  # unique identifier out
      ctypes.c_void_p,  # user data
    ]
    self.sample_rate = lib.espeak_Initialize(
      AUDIO_OUTPUT_SYNCHRONOUS, 0, None if data is None else data.encode(), 0
    )
    if self.sample_rate <= 0:
      raise FileNotFoundError(f'eSpeak NG failed to start (data folder {data}): {INSTALL_HINT}')
    self._chunks: list[np.ndarray] = []
    self._callback = _CALLBACK(self._collect)  # kept alive as long as the library uses it
    lib.espeak_SetSynthCallback(self._callback)
    # eSpeak seeds its noise (breath, flutter jitter) from the clock; fix it (1.52 and later).
    self._seed = getattr(lib, 'espeak_ng_SetRandSeed', None)
    if self._seed is not None:
      self._seed.argtypes = [ctypes.c_long]
    self.lib = lib

  def _collect(self, wav, n, events):
    del events
    if n > 0:
      self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    return 0  # continue

  def speak(
    self, text: str, voice: str, rate: int = 175, pitch: int = 50, seed: int = 0
  ) -> np.ndarray:
    """int16 [N] at `self.sample_rate`."""
    if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
      raise ValueError(f'eSpeak NG has no voice {voice!r}; check `espeak-ng --voices=en`')
    self.lib.espeak_SetParameter(RATE, int(rate), 0)
    self.lib.espeak_SetParameter(PITCH, int(pitch), 0)
    if self._seed is not None:
      self._seed(seed)
    self._chunks = []
    data = text.encode() + b'\0'
    error = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    if error != 0:
      raise RuntimeError(f'espeak_Synth failed with code {error} on {text!r} ({voice})')
    return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def trim_silence(audio: np.ndarray, threshold_db: float = -40.0, margin: int = 160) -> np.ndarray:
  """Drops leading and trailing samples quieter than `threshold_db` below the peak, keeping
  `margin` samples either side (10 ms at 16 kHz)."""
  level = np.abs(audio.astype(np.float32))
  if level.size == 0 or level.max() == 0:
    return audio
  loud = np.flatnonzero(level > level.max() * 10 ** (threshold_db / 20))
  return audio[max(loud[0] - margin, 0) : loud[-1] + 1 + margin]


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """float audio from `rate_in` to `rate_out` Hz (polyphase FIR, scipy)."""
  if rate_in == rate_out:
    return audio
  from scipy.signal import resample_poly

  g = math.gcd(rate_in, rate_out)
  return resample_poly(audio, rate_out // g, rate_in // g)


def _speak_all(requests, sample_rate: int, peak: float) -> list[np.ndarray]:
  engine = Espeak()
  out = []
  for i, (text, voice, rate, pitch) in enumerate(requests):
    audio = engine.speak(text, voice, rate, pitch, seed=i).astype(np.float32) / 32768.0
    audio = resample(audio, engine.sample_rate, sample_rate)
    audio = trim_silence(audio, margin=sample_rate // 100)
    top = np.abs(audio).max() if audio.size else 0.0
    if top > 0:
      audio = audio * (peak / top)  # eSpeak's loudness varies by voice; set each peak
    out.append(np.round(audio * 32767).astype(np.int16))
  return out


def _run_chunk(requests, sample_rate: int, peak: float) -> list[np.ndarray]:
  """Speaks `requests` in a fresh process (see the module docstring for why)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'audio.npz')
    job = json.dumps({'requests': requests, 'sample_rate': sample_rate, 'peak': peak})
    done = subprocess.run(
      [sys.executable, '-P', os.path.abspath(__file__), out],
      input=job,
      text=True,
      capture_output=True,
    )
    if done.returncode != 0:
      lines = done.stderr.strip().splitlines() or ['no output']
      message = lines[-1]
      if 'FileNotFoundError' in message:
        raise FileNotFoundError(message.split(': ', 1)[-1])
      raise RuntimeError(f'eSpeak NG synthesis failed: {message}')
    with np.load(out) as f:
      lengths, flat = f['lengths'], f['audio']
  return np.split(flat, np.cumsum(lengths)[:-1])


def synthesise(requests, sample_rate: int = 16000, peak: float = 0.7, workers: int | None = None):
  """Speaks each (text, voice, rate, pitch) request: a list of int16 [N_i] at `sample_rate`,
  trimmed, peak at `peak` of full scale. Deterministic: chunks of `CHUNK` requests, each in a
  fresh process, up to `workers` at a time (default: the CPU count)."""
  find_library()  # a missing library fails here, in one line
  requests = [(str(t), str(v), int(r), int(p)) for t, v, r, p in requests]
  chunks = [requests[i : i + CHUNK] for i in range(0, len(requests), CHUNK)]
  workers = max(1, min(workers or os.cpu_count() or 1, len(chunks)))
  if workers == 1:
    parts = [_run_chunk(c, sample_rate, peak) for c in chunks]
  else:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:  # threads that each wait on a process
      parts = list(pool.map(lambda c: _run_chunk(c, sample_rate, peak), chunks))
  return [a for part in parts for a in part]


def _main(out_path: str) -> None:
  job = json.load(sys.stdin)
  audio = _speak_all(job['requests'], job['sample_rate'], job['peak'])
  lengths = np.asarray([len(a) for a in audio], np.int64)
  flat = np.concatenate(audio) if audio else np.zeros(0, np.int16)
  np.savez(out_path, audio=flat, lengths=lengths)


if __name__ == '__main__':
  _main(sys.argv[1])
