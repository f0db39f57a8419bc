"""WAV in and out: a round trip, multi-channel averaging, one-line errors."""

import wave

import numpy as np
import pytest

from bigjax.data.wav import read_wav, write_wav


def test_round_trip_is_exact_to_one_int16_step(tmp_path):
  audio = np.sin(np.linspace(0, 200, 8000)).astype(np.float32) * 0.9
  path = str(tmp_path / 'a.wav')
  write_wav(path, audio, 16000)
  back, rate = read_wav(path)
  assert rate == 16000 and back.shape == audio.shape
  np.testing.assert_allclose(back, audio, atol=1 / 32768)


def test_stereo_is_averaged_and_clipping(tmp_path):
  path = str(tmp_path / 's.wav')
  pcm = np.array([[1000, 3000], [-2000, 0]], '<i2')
  with wave.open(path, 'wb') as f:
    f.setnchannels(2)
    f.setsampwidth(2)
    f.setframerate(8000)
    f.writeframes(pcm.tobytes())
  audio, rate = read_wav(path)
  np.testing.assert_allclose(audio, np.array([2000, -1000]) / 32768)
  write_wav(path, np.array([2.0, -2.0]), 8000)
  np.testing.assert_allclose(read_wav(path)[0], [32767 / 32768, -1.0])


def test_bad_files_name_the_file(tmp_path):
  path = tmp_path / 'bad.wav'
  path.write_bytes(b'not a wav')
  with pytest.raises(ValueError, match='bad.wav'):
    read_wav(str(path))
  with pytest.raises(ValueError, match='mono'):
    write_wav(str(path), np.zeros((2, 3)), 8000)
