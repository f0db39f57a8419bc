"""WaveNet on Google's Speech Commands (v0.02), conditioned on the label.

TFDS `speech_commands`: 1 s clips at 16 kHz from 2,618 speakers, 12 labels (the ten command
words, `_silence_` and `_unknown_`); 85,511 training clips, evaluated on the 4,890-clip
test split. The recipe of wavenet_spoken_words (8 kHz, 8-bit mu-law, random 0.25 s training
crops, global conditioning on the label) with the paper's depth: 3 cycles of dilations
1..512 (wavenet_base's pattern), 64 residual and 256 skip channels, a receptive field of
3,071 samples (384 ms at 8 kHz).

Prepare the data once, on a machine with network and TensorFlow:
  tfds build speech_commands --data_dir=DIR --file_format=array_record

Command: python train.py --config configs/wavenet_speech_commands.py --config.data.data_dir=DIR
Then:    python -m bigjax.generate --workdir WORKDIR --word yes --out yes.wav
Expected: not run here (no network). Real recordings with background noise are much harder
to model than synthetic speech; expect well under 8 bits per sample (a uniform guess) and
under the previous-code baseline of bench/wavenet_baselines.py, after hours on a GPU
(50,000 steps of 32 crops).
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='wavenet_base', num_labels=12, sample_rate=8000)
  c.task.update(name='audio_lm', label_key='label')
  c.data.update(name='speech_commands', sample_rate=8000, audio_samples=8000, crop_samples=2000)
  c.optim.update(name='adam', lr=1e-3, clip_norm=1.0)
  c.schedule.update(name='cosine', warmup_steps=1000, end_factor=0.05)
  c.train.update(steps=50000, batch_size=32, eval_batch_size=64, eval_steps=20)
  c.train.update(log_every=100, eval_every=5000, checkpoint_every=5000)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(name='wavenet_test', dilation_cycles=1)
    c.data.update(audio_samples=800, crop_samples=200)
  return c
