"""The spoken_words builder (eSpeak NG) and the speech data sets' transforms."""

import builtins
import ctypes.util

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigjax.data import espeak
from bigjax.data.builders import spoken_words
from bigjax.data.builders.prepare import prepare_builder
from bigjax.data.datasets import dataset_spec
from bigjax.data.transforms.audio import AudioExample, TimeShift, audio_transforms, fit_length


def _records(builder, split):
  source = builder.as_data_source(split)
  return sorted((source[i] for i in range(len(source))), key=lambda r: (r['voice'], r['label']))


@pytest.fixture(scope='module')
def small(data_dir):
  """The 'small' config prepared in the session's data_dir (other tests reuse it)."""
  pytest.importorskip('espeakng_loader')  # the `audio` extra
  return prepare_builder(spoken_words.SpokenWords, data_dir, config='small')


def test_builder_is_deterministic(small, tmp_path):
  again = prepare_builder(spoken_words.SpokenWords, str(tmp_path), config='small')
  for split in ('train', 'test'):
    first, second = _records(small, split), _records(again, split)
    assert len(first) == len(second) == small.info.splits[split].num_examples
    for a, b in zip(first, second):
      assert a['voice_name'] == b['voice_name'] and a['label'] == b['label']
      np.testing.assert_array_equal(a['audio'], b['audio'])


def test_splits_share_no_voice_and_cover_every_word(small):
  config = small.builder_config
  train, test = _records(small, 'train'), _records(small, 'test')
  train_voices = {r['voice'] for r in train}
  test_voices = {r['voice'] for r in test}
  assert train_voices and test_voices and not train_voices & test_voices
  # Stronger: no test variant (timbre) speaks in training, in any accent.
  variant = lambda r: r['voice_name'].decode().split('+')[1]  # noqa: E731
  assert {variant(r) for r in train}.isdisjoint({variant(r) for r in test})
  assert len(test) == len(config.accents) * len(config.test_variants) * len(spoken_words.WORDS)
  for records in (train, test):
    assert sorted({int(r['label']) for r in records}) == list(range(20))
    for r in records:
      assert r['audio'].dtype == np.int16 and 0.1 * 16000 < len(r['audio']) <= 16000
      assert np.abs(r['audio']).max() > 10000  # peak-normalised speech, not silence
      name = r['voice_name'].decode()
      assert r['voice'] == spoken_words.voice_id(*name.split('+'))


def test_words_differ_and_voices_differ(small):
  """Different words of one voice and one word of different voices are different audio."""
  train = _records(small, 'train')
  by = {(int(r['voice']), int(r['label'])): r['audio'] for r in train}
  voices = sorted({v for v, _ in by})
  assert len(by[voices[0], 0]) != len(by[voices[0], 1]) or not np.array_equal(
    by[voices[0], 0], by[voices[0], 1]
  )
  assert not np.array_equal(by[voices[0], 7][:2000], by[voices[1], 7][:2000])


def test_missing_library_says_to_install_the_extra(monkeypatch):
  real_import = builtins.__import__

  def no_loader(name, *args, **kwargs):
    if name == 'espeakng_loader':
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, '__import__', no_loader)
  monkeypatch.setattr(ctypes.util, 'find_library', lambda name: None)
  with pytest.raises(FileNotFoundError, match=r"pip install 'bigjax\[audio\]'"):
    espeak.synthesise([('yes', 'en', 175, 50)])


def test_spoken_words_examples(small, data_dir):
  data = ml_collections.ConfigDict(
    {'name': 'spoken_words', 'builder_config': 'small', 'audio_samples': 12000}
  )
  spec = dataset_spec('spoken_words')
  source = spec.open_split('test', data_dir, data)
  (transform,) = spec.transforms(data, False)
  record = source[0]
  example = transform.map(record)
  assert example['audio'].shape == (12000,) and example['audio'].dtype == np.float32
  n = min(len(record['audio']), 12000)
  start = (len(record['audio']) - n) // 2
  np.testing.assert_array_equal(
    example['audio'][:n], record['audio'][start : start + n].astype(np.float32) / 32768
  )
  assert example['label'] == record['label'] and example['voice'] == record['voice']
  with pytest.raises(ValueError, match='builder_config'):
    spec.open_split('test', data_dir, ml_collections.ConfigDict({'builder_config': 'huge'}))


def test_fit_length_pads_at_the_end_and_crops_the_centre():
  x = np.arange(1, 11, dtype=np.float32)
  np.testing.assert_array_equal(fit_length(x, 13), np.r_[x, 0, 0, 0])
  np.testing.assert_array_equal(fit_length(x, 4), x[3:7])


def test_resampling_keeps_a_tone_and_sets_the_length():
  rate = 16000
  t = np.arange(rate) / rate
  pcm = (np.sin(2 * np.pi * 440 * t) * 16000).astype(np.int16)
  example = AudioExample(rate, 8000, 8000).map({'audio': pcm, 'label': 3})
  audio = example['audio']
  assert audio.shape == (8000,) and example['voice'] == 0 and example['label'] == 3
  peak = np.argmax(np.abs(np.fft.rfft(audio)))  # 1 Hz bins over 1 s
  assert peak == 440 and abs(np.abs(audio[100:-100]).max() - 16000 / 32768) < 0.01


def test_time_shift_is_random_in_training_only():
  data = ml_collections.ConfigDict({'time_shift': 0.1})
  assert not any(isinstance(t, TimeShift) for t in audio_transforms(data, False, 16000))
  (shift,) = [t for t in audio_transforms(data, True, 16000) if isinstance(t, TimeShift)]
  assert shift.max_shift == 1600
  audio = np.arange(1, 16001, dtype=np.float32)
  out = shift.random_map({'audio': audio, 'label': 0}, np.random.default_rng(0))['audio']
  lag = int(np.flatnonzero(out)[0]) if out[0] == 0 else -int(out[0] - 1)
  assert out.shape == audio.shape and 0 < abs(lag) <= 1600
  np.testing.assert_array_equal(out[out != 0], audio[max(-lag, 0) : 16000 - max(lag, 0)])


def test_speech_commands_under_mock_data():
  data = ml_collections.ConfigDict(
    {'name': 'speech_commands', 'sample_rate': 8000, 'audio_samples': 8000}
  )
  spec = dataset_spec('speech_commands')
  assert spec.eval_split == 'test'
  with tfds.testing.mock_data(num_examples=3):
    source = spec.open_split('test', None, data)
    examples = [spec.transforms(data, False)[0].map(source[i]) for i in range(len(source))]
  assert len(examples) == 3
  for e in examples:
    assert e['audio'].shape == (8000,) and e['audio'].dtype == np.float32
    assert 0 <= e['label'] < 12 and e['voice'] == 0
    assert np.abs(e['audio']).max() <= 1.0


def test_speech_commands_not_prepared_says_how(tmp_path):
  spec = dataset_spec('speech_commands')
  with pytest.raises(FileNotFoundError, match='tfds build speech_commands'):
    spec.open_split('train', str(tmp_path), ml_collections.ConfigDict())
