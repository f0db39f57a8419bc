"""CLIP on sound and text, offline: a spoken word against its written word.

The offline multimodal demonstration (`spoken_words_text`): each of the 6,080 training clips
of `spoken_words` (20 words, eSpeak NG voices) is paired with the word it says, as bytes.
The "image" tower is `bigjax.models.clip`'s ViT behind the audio front end (8 kHz, 1 s:
log-mel, 32 bands, 16 ms hops, standardised per clip; 8 x 8 patches of the [64, 32]
spectrogram, 2 layers of width 96), the text tower a causal Transformer over the word's
bytes (2 layers of width 64); 254k parameters in all (`clip_tiny`), both towers trained
from scratch with CLIP's symmetric contrastive loss, the temperature learned, the clips
shifted at random by up to 50 ms in training. Nothing tells the model which word a clip is
but its pairing with a text.

Evaluation is on the 1,600 clips of the test voices, whose voice variants never speak in
training: zero-shot classification (each clip against the 20 written words as prompts;
chance 0.05) and retrieval recall@1/5/10 over all test pairs, where a text matches every
clip of its word (task.match_key='label').

Command: python train.py --config configs/clip_spoken_words.py --workdir DIR
Expected (measured here, 800 steps of 128 pairs, about 17 epochs): zero-shot accuracy on
the unseen voices 0.981 (chance 0.05; 0.949 at step 400), audio -> word recall@1 0.981 and
@5 1.000, word -> audio recall@1 1.000.
Time: 3 min 49 s on 2 CPU cores shared with other jobs (load average 5 to 6.5; 4.2 min of
CPU time; the first step, compilation included, took 11 s), so less on 2 idle cores.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  # clip_tiny: a 2-layer ViT (width 96, 8 x 8 patches) and a 2-layer byte-level text tower
  # (width 64, 8 bytes, pooled at the last byte), 64-wide embeddings.
  c.model.update(name='clip_tiny', audio=True, sample_rate=8000, n_fft=256, hop_length=128)
  c.model.update(n_mels=32)
  c.data.update(name='spoken_words_text', builder_config='full', input_key='audio')
  c.data.update(sample_rate=8000, audio_samples=8000, time_shift=0.05, max_len=8)
  c.data.update(prompt_template='{}')  # the prompts are the words themselves
  c.task.update(name='contrastive', match_key='label')
  c.optim.update(name='adamw', lr=2e-3, weight_decay=0.05, clip_norm=1.0)
  c.schedule.update(name='cosine', warmup_steps=100)
  c.train.update(steps=800, batch_size=128, eval_batch_size=200)
  c.train.update(log_every=100, eval_every=400, checkpoint_every=400)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(vision_hidden_size=32, vision_layers=1, vision_heads=2, vision_mlp_dim=64)
    c.model.update(text_hidden_size=32, text_layers=1, text_mlp_dim=64, projection_dim=16)
    c.data.update(builder_config='small')
    c.train.checkpoint_every = 6  # one checkpoint, at the end
  return c
