"""Speech data sets: the offline `spoken_words` and the public `speech_commands`.

  spoken_words     the project's builder (`bigjax.data.builders.spoken_words`): 20 words
                   (`WORDS`: zero..nine, yes, no, up, down, left, right, on, off, stop, go)
                   spoken by eSpeak NG voices, prepared offline on first use (needs the
                   `audio` extra); test voices are never heard in training.
                   `data.builder_config`: 'full' (default) or 'small' (tests).
  speech_commands  TFDS `speech_commands` (Warden, 2018; v0.02): 1 s clips at 16 kHz, 12
                   labels in TFDS's order (down, go, left, no, off, on, right, stop, up,
                   yes, _silence_, _unknown_), splits train / validation / test; evaluation
                   uses 'test'. Prepare it beforehand with `tfds build speech_commands
                   --file_format=array_record` (that step needs TensorFlow; reading does not).

Both have task 'classification' (set `data.input_key='audio'`) and yield {'audio': float32 [N]
in [-1, 1], 'label': int32, 'voice': int32} (`bigjax.data.transforms.audio`); speech_commands
has no speaker feature in TFDS, so its voice is 0. Data config fields: data.sample_rate
(16000), data.audio_samples (16000), data.time_shift (seconds, training only, 0).

TFDS's `speech_commands` builder declares its audio as `tfds.features.Audio`, which imports
TensorFlow when it is constructed. `SpeechCommandsReader` is that builder with the audio
declared as what Audio stores when not lazy, an int16 Tensor [n], so the prepared
ArrayRecord files read back through `as_data_source` without TensorFlow (and work under
`tfds.testing.mock_data`).
"""

import os

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bigjax.data.builders.prepare import open_prepared
from bigjax.data.builders.spoken_words import SAMPLE_RATE, WORDS, SpokenWords
from bigjax.data.sources import not_prepared_error
from bigjax.data.spec import DatasetSpec
from bigjax.data.transforms.audio import audio_transforms

SPEECH_COMMANDS_LABELS = (
  'down', 'go', 'left', 'no', 'off', 'on', 'right', 'stop', 'up', 'yes', '_silence_',
  '_unknown_',
)  # fmt: skip
SPOKEN_WORDS_CONFIGS = tuple(c.name for c in SpokenWords.BUILDER_CONFIGS)
LABELS = {'spoken_words': WORDS, 'speech_commands': SPEECH_COMMANDS_LABELS}


def label_names(name: str) -> tuple[str, ...]:
  """The class names of the speech data set `name`, in label order."""
  if name not in LABELS:
    raise ValueError(f'{name!r} is not a speech data set; those are {", ".join(LABELS)}')
  return LABELS[name]


def _spoken_words_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  config = data.get('builder_config', 'full')
  if config not in SPOKEN_WORDS_CONFIGS:
    raise ValueError(
      f'data.builder_config={config!r} is not a spoken_words config; choose one of '
      f'{list(SPOKEN_WORDS_CONFIGS)}'
    )
  return open_prepared(SpokenWords, split, data_dir, config=config)


def _spoken_words_transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  return audio_transforms(data, train, SAMPLE_RATE)


class SpeechCommandsReader(tfds.builder_cls('speech_commands'), skip_registration=True):
  """TFDS `speech_commands` read without TensorFlow (module docstring); reading only."""

  name = 'speech_commands'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          'audio': tfds.features.Tensor(shape=(None,), dtype=np.int16),
          'label': tfds.features.ClassLabel(names=SPEECH_COMMANDS_LABELS),
        }
      ),
      supervised_keys=('audio', 'label'),
    )


def _speech_commands_split(split: str, data_dir: str | None, data: ml_collections.ConfigDict):
  del data
  try:
    return SpeechCommandsReader(data_dir=data_dir, file_format='array_record').as_data_source(split)
  except (AssertionError, FileNotFoundError, KeyError, NotImplementedError) as e:
    where = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
    raise not_prepared_error('speech_commands', where, '', e) from None


def _speech_commands_transforms(data: ml_collections.ConfigDict, train: bool) -> list:
  return audio_transforms(data, train, 16000)


SPOKEN_WORDS = DatasetSpec('classification', _spoken_words_split, _spoken_words_transforms)
SPEECH_COMMANDS = DatasetSpec(
  'classification', _speech_commands_split, _speech_commands_transforms, eval_split='test'
)
