"""A Transformer encoder over log-mel frames of the offline spoken words (eSpeak NG voices).

The data and front end of speech_cnn_spoken_words (20 words, test voices unseen in
training; log-mel, per-utterance normalisation, SpecAugment), then pairs of 10 ms frames
stacked into 50 tokens, a linear embedding, learned positions and 4 pre-LN encoder blocks
of width 128 from `bigjax.layers` (as ViT), mean-pooled (575,892 parameters).

Command: python train.py --config configs/speech_transformer_spoken_words.py
Expected: held-out accuracy 0.965 on the 1,600 utterances of the 80 unseen voices (measured
at step 1500; 0.904 at step 500, 0.948 at step 1000), below the CNN's 0.984 at 2.3 times its
FLOPs. Measured under load: 17.3 min on 2 CPU cores shared with other jobs (load average
about 9; 68 to 128 examples/s); roughly 8 to 10 min on 2 idle cores (an estimate).
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='speech_transformer', num_classes=20, dropout_rate=0.1)
  c.data.update(name='spoken_words', builder_config='full', input_key='audio')
  c.data.update(sample_rate=16000, audio_samples=16000, time_shift=0.1)
  c.optim.update(name='adamw', lr=1e-3, weight_decay=0.05, clip_norm=1.0)
  c.schedule.update(name='cosine', warmup_steps=150)
  c.train.update(steps=1500, batch_size=64, eval_batch_size=256)
  c.train.update(log_every=100, eval_every=500, checkpoint_every=500)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(name='speech_transformer_test')
    c.data.update(builder_config='small', audio_samples=8000)
  return c
