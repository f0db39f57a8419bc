"""WaveNet on the offline spoken words, conditioned on the word (global conditioning).

20 words (zero..nine, yes, no, up, down, left, right, on, off, stop, go) spoken by eSpeak NG
voices: 6,080 training utterances; the 1,600 test utterances come from voices never heard
in training. Audio resampled to 8 kHz and fitted to 0.6 s (4,800 samples; a shorter clip is
zero-padded at the end, a longer one keeps its centre), 8-bit mu-law codes. wavenet_small:
2 cycles of dilations 1..128, 32 residual and 64 skip channels, a receptive field of 512
samples (64 ms), trained on random 0.25 s crops that avoid the clips' zero padding (Adam at
4e-3, 1,200 steps of 16 crops); evaluation scores every sample of every test clip.

Command: python train.py --config configs/wavenet_spoken_words.py --workdir /tmp/wavenet
Then:    python -m bigjax.generate --workdir /tmp/wavenet --word yes --out yes.wav --seconds 0.6
Baselines: PYTHONPATH=. python bench/wavenet_baselines.py --workdir /tmp/wavenet
Expected (measured 2026-11-29 on 2 CPU cores shared with other jobs, load average about 2):
held-out 3.40 bits per sample on the 1,600 test clips of unseen voices, against 8 for a
uniform guess, 5.62 for the train histogram of codes and 4.12 for the previous-code table
(bench/wavenet_baselines.py); 9 min 52 s wall, startup and the final evaluation included
(2.3 steps/s). Same protocol at 1,000 steps, 400 test clips: lr 2e-3 3.60 bits, 4e-3 3.51;
uniform crops (padding included) 3.63. Generated words are not yet intelligible: a speech
CNN trained at 8 kHz (configs/speech_cnn_spoken_words.py:8k, 0.989 on real test voices)
names 16% of 100 generated clips right at temperature 1.0, 21% at 0.8 (chance 5%).
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='wavenet_small', num_labels=20, sample_rate=8000)
  c.task.update(name='audio_lm', label_key='label')
  c.data.update(name='spoken_words', builder_config='full')
  c.data.update(sample_rate=8000, audio_samples=4800, crop_samples=2000)
  c.optim.update(name='adam', lr=4e-3, clip_norm=1.0)
  c.schedule.update(name='cosine', warmup_steps=50, end_factor=0.05)
  c.train.update(steps=1200, batch_size=16, eval_batch_size=100)
  c.train.update(log_every=50, eval_every=0, checkpoint_every=500)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(name='wavenet_test', dilation_cycles=1)
    c.data.update(builder_config='small', audio_samples=800, crop_samples=200)
  return c
