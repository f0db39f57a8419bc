"""The small speech CNN of speech_cnn_spoken_words on Google's Speech Commands (v0.02).

TFDS `speech_commands`: 1 s clips at 16 kHz from 2,618 speakers, 12 labels (the ten command
words, `_silence_` and `_unknown_`); 85,511 training clips, evaluated on the 4,890-clip test
split. Same front end and model as the spoken-words config (log-mel, per-utterance
normalisation, SpecAugment, four conv-BN-ReLU-pool blocks), 100 ms random shifts.

Prepare the data once, on a machine with network and TensorFlow:
  tfds build speech_commands --data_dir=DIR --file_format=array_record

Command: python train.py --config configs/speech_cnn_speech_commands.py --config.data.data_dir=DIR
Expected: not run here (no network); small CNNs on log-mel reach roughly 0.90-0.95 test
accuracy on this 12-label task (Warden, 2018, reports 0.88 for its baseline CNN). About 9
epochs: 6,000 steps of 128, an hour or more on 2 CPU cores, minutes on a GPU.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='speech_cnn', num_classes=12, dropout_rate=0.1)
  c.data.update(name='speech_commands', input_key='audio')
  c.data.update(sample_rate=16000, audio_samples=16000, time_shift=0.1)
  c.optim.update(name='adamw', lr=3e-3, weight_decay=1e-4)
  c.schedule.update(name='cosine', warmup_steps=200)
  c.train.update(steps=6000, batch_size=128, eval_batch_size=256)
  c.train.update(log_every=100, eval_every=1000, checkpoint_every=1000)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(name='speech_cnn_test', num_classes=12)
    c.data.update(audio_samples=8000)
  return c
