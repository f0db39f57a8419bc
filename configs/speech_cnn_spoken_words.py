"""A small CNN on log-mel spectrograms of the offline spoken words (eSpeak NG voices).

20 words (zero..nine, yes, no, up, down, left, right, on, off, stop, go), 6,080 training
utterances from 304 voices; the 1,600 test utterances come from 80 voices whose variants
never speak in training. Raw 16 kHz audio, 1 s, goes through log-mel (40 bands, 10 ms hops),
per-utterance normalisation and SpecAugment (training only) inside the model
(`bigjax.models.speech`), then four conv-BN-ReLU-pool blocks (16 -> 64 channels).
Augmentation: random shifts of up to 100 ms.

Command: python train.py --config configs/speech_cnn_spoken_words.py
Expected: held-out accuracy on unseen voices TBD.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='speech_cnn', num_classes=20, dropout_rate=0.1)
  c.data.update(name='spoken_words', builder_config='full', input_key='audio')
  c.data.update(sample_rate=16000, audio_samples=16000, time_shift=0.1)
  c.optim.update(name='adamw', lr=3e-3, weight_decay=1e-4)
  c.schedule.update(name='cosine', warmup_steps=100)
  c.train.update(steps=1500, batch_size=64, eval_batch_size=256)
  c.train.update(log_every=100, eval_every=500, checkpoint_every=500)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(name='speech_cnn_test')
    c.data.update(builder_config='small', audio_samples=8000)
  return c
