"""A small CNN on log-mel spectrograms of the offline spoken words (eSpeak NG voices).

20 words (zero..nine, yes, no, up, down, left, right, on, off, stop, go), 6,080 training
utterances from 304 voices; the 1,600 test utterances come from 80 voices whose variants
never speak in training. Raw 16 kHz audio, 1 s, goes through log-mel (40 bands, 10 ms hops),
per-utterance normalisation and SpecAugment (training only) inside the model
(`bigjax.models.speech`), then four conv-BN-ReLU-pool blocks (16 -> 64 channels, 61,700
parameters). Augmentation: random shifts of up to 100 ms.

Argument: '' | 'test' | '8k' | '8k,test'. '8k' trains on audio resampled to 8 kHz (the front
end follows: 200-sample windows, 80-sample hops), e.g. to judge 8 kHz WaveNet samples with
`python -m bigjax.classify`.

Command: python train.py --config configs/speech_cnn_spoken_words.py --workdir runs/speech_cnn
Expected: held-out accuracy 0.984 on the 1,600 utterances of the 80 unseen voices (measured
at step 1500; 0.913 at step 500, 0.963 at step 1000). Measured under load: 10.7 min on 2 CPU
cores shared with other jobs (2 to 5 steps/s); about 5 min on 2 idle cores (estimated from
the fastest 5 steps/s).
"""

from configs import common


def _args(arg):
  """(test, sample_rate) of the argument."""
  words = set(filter(None, (arg or '').split(',')))
  if words - {'test', '8k'}:
    raise ValueError(f'unknown config argument {arg!r}: use no argument, "test", "8k" or "8k,test"')
  return 'test' in words, 8000 if '8k' in words else 16000


def get_config(arg=None):
  test, rate = _args(arg)
  c = common.base_config()
  c.model.update(name='speech_cnn', num_classes=20, dropout_rate=0.1)
  # The front end runs at the data's rate: 25 ms windows, 10 ms hops.
  c.model.update(sample_rate=rate, n_fft=rate // 40, hop_length=rate // 100)
  c.data.update(name='spoken_words', builder_config='full', input_key='audio')
  c.data.update(sample_rate=rate, audio_samples=rate, time_shift=0.1)  # 1 s clips
  c.optim.update(name='adamw', lr=3e-3, weight_decay=1e-4)
  c.schedule.update(name='cosine', warmup_steps=100)
  c.train.update(steps=1500, batch_size=64, eval_batch_size=256)
  c.train.update(log_every=100, eval_every=500, checkpoint_every=500)
  if test:
    common.shrink_for_test(c)
    c.model.update(name='speech_cnn_test')
    c.data.update(builder_config='small', audio_samples=rate // 2)
  return c
