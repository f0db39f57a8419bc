"""TFDS builder for spoken words synthesised offline with eSpeak NG (`bigjax.data.espeak`).

Twenty words, the ten digits and the ten core command words of Speech Commands (Warden,
2018), each spoken once by every voice. A voice is an English accent of eSpeak NG (8:
British, American, Scottish, RP, Lancastrian, West Midlands, Caribbean, New York) with one
of its voice variants (`!v/`: male, female, whispered, Klatt-synthesised, ...), and each
utterance draws its own base pitch (0..100) and speaking rate (words per minute) from a
generator seeded by (voice, word), so the data are the same on every machine.

Splits are by variant: the test variants never speak in training, in any accent, so test
voices are unseen speakers (timbre, pitch range, breathiness), while every accent occurs on
both sides. Records: {'audio': int16 [N] at 16 kHz (silence trimmed, peak at 0.7 of full
scale, N about 0.2 to 0.8 s), 'label': index in `WORDS`, 'voice': int id of (accent,
variant), 'voice_name': 'en-us+m3', 'pitch', 'rate'}. Features are TF-free, so the builder
prepares to ArrayRecord and reads back through `as_data_source` without TensorFlow.

Configs: 'full' (8 accents x 48 variants x 20 words = 7,680 utterances; 6,080 train from 38
variants, 1,600 test from 10) and 'small' (2 accents x 6 variants: 240, for tests).
Needs the `audio` extra (`pip install 'bigjax[audio]'`); eSpeak NG is GPL-3.0-or-later and
runs in a separate process only while the data set is built.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from bigjax.data import espeak

WORDS = (
  'zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine',
  'yes', 'no', 'up', 'down', 'left', 'right', 'on', 'off', 'stop', 'go',
)  # fmt: skip
SAMPLE_RATE = 16000
# eSpeak NG's English accents (espeak-ng-data/lang/gmw), in a fixed order: voice ids use it.
ACCENTS = (
  'en', 'en-us', 'en-gb-scotland', 'en-gb-x-rp', 'en-gb-x-gbclan', 'en-gb-x-gbcwmd',
  'en-029', 'en-us-nyc',
)  # fmt: skip
# Voice variants (espeak-ng-data/voices/!v) that sound like a person; robot, echo and
# novelty variants are left out. Test variants: 3 male, 3 female, one whispered, one Klatt.
TRAIN_VARIANTS = (
  'm1', 'm2', 'm3', 'm5', 'm6', 'm8', 'f1', 'f2', 'f4', 'croak', 'klatt', 'klatt2',
  'klatt4', 'Alex', 'Andy', 'Denis', 'Jacky', 'Mario', 'Mike', 'adam', 'benjamin', 'boris',
  'david', 'ed', 'gustave', 'iven', 'kaukovalta', 'max', 'quincy', 'robert', 'travis',
  'whisperf', 'Alicia', 'Annie', 'aunty', 'linda', 'grandma', 'zac',
)  # fmt: skip
TEST_VARIANTS = (
  'm4', 'm7', 'f3', 'f5', 'whisper', 'klatt3', 'Gene', 'paul', 'belinda', 'shelby',
)  # fmt: skip
VARIANTS = TRAIN_VARIANTS + TEST_VARIANTS  # fixed order: voice ids use it
PITCH_RANGE = (25, 75)  # eSpeak base pitch, 0..100 (default 50)
RATE_RANGE = (120, 230)  # words per minute (default 175)
SEED = 0


def voice_id(accent: str, variant: str) -> int:
  return ACCENTS.index(accent) * len(VARIANTS) + VARIANTS.index(variant)


def voice_name(accent: str, variant: str) -> str:
  return f'{accent}+{variant}'


@dataclasses.dataclass(eq=False)
class SpokenWordsConfig(tfds.core.BuilderConfig):
  """Which accents and variants speak, per split."""

  accents: tuple[str, ...] = ACCENTS
  train_variants: tuple[str, ...] = TRAIN_VARIANTS
  test_variants: tuple[str, ...] = TEST_VARIANTS


def utterances(config: SpokenWordsConfig, split: str) -> list[dict]:
  """Every utterance of `split`, in a fixed order: voice, word, pitch and rate."""
  variants = config.train_variants if split == 'train' else config.test_variants
  out = []
  for accent in config.accents:
    for variant in variants:
      voice = voice_id(accent, variant)
      for label, word in enumerate(WORDS):
        rng = np.random.default_rng([SEED, voice, label])
        out.append(
          {
            'word': word,
            'label': label,
            'voice': voice,
            'voice_name': voice_name(accent, variant),
            'pitch': int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            'rate': int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
          }
        )
  return out


class SpokenWords(tfds.core.GeneratorBasedBuilder):
  """WORDS spoken by eSpeak NG voices, split so that test voices are unseen."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'eSpeak NG 1.52 voices, split by variant.'}
  BUILDER_CONFIGS = [
    SpokenWordsConfig(name='full', description='8 accents x 48 variants x 20 words'),
    SpokenWordsConfig(
      name='small',
      description='2 accents x 6 variants x 20 words, for tests',
      accents=('en-us', 'en-gb-scotland'),
      train_variants=('m1', 'f2', 'croak', 'klatt'),
      test_variants=('m4', 'f3'),
    ),
  ]
  DEFAULT_CONFIG_NAME = 'full'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description='Spoken words synthesised with eSpeak NG, 16 kHz int16.',
      features=tfds.features.FeaturesDict(
        {
          'audio': tfds.features.Tensor(shape=(None,), dtype=np.int16),
          'label': tfds.features.ClassLabel(names=WORDS),
          'voice': tfds.features.Scalar(dtype=np.int32),
          'voice_name': tfds.features.Text(),
          'pitch': tfds.features.Scalar(dtype=np.int32),
          'rate': tfds.features.Scalar(dtype=np.int32),
        }
      ),
      supervised_keys=('audio', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: eSpeak NG synthesises everything
    splits = {split: utterances(self.builder_config, split) for split in ('train', 'test')}
    every = splits['train'] + splits['test']  # one request list: the audio depends on it alone
    requests = [(u['word'], u['voice_name'], u['rate'], u['pitch']) for u in every]
    audio = espeak.synthesise(requests, SAMPLE_RATE)
    n = len(splits['train'])
    parts = {'train': audio[:n], 'test': audio[n:]}
    return {split: self._generate_examples(splits[split], parts[split]) for split in splits}

  def _generate_examples(self, items, audio):
    for item, pcm in zip(items, audio):
      record = {k: v for k, v in item.items() if k != 'word'}
      yield f'{item["voice_name"]}/{item["word"]}', {**record, 'audio': pcm}
