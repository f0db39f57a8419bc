"""GPT-2 small (124 M parameters) trained from scratch on One Billion Word (public TFDS
`lm1b`; TFDS has no OpenWebText), with nanoGPT's recipe.

Data: lm1b's 30 M training sentences packed into rows of 1024 tokens with document
boundaries (each sentence followed by EOS, attention within a sentence, padding at the end
of a row scored nowhere; `bigjax.data.sets.lm1b`). Tokenizer: a byte-level BPE of 50257
tokens learned from 200k training sentences on first use and saved in the workdir, or
GPT-2's own with --config.data.tokenizer=/path/to/a/gpt2/folder (its tokenizer.json).
The first run counts every sentence's tokens once (tens of minutes for the training split)
and caches them in the workdir, or in --config.data.index_dir to share between runs.
Model: `gpt2_small` (12 layers, width 768, 12 heads, learned positions, tied embeddings,
vocabulary padded to 50304), no dropout, bfloat16 compute.
Recipe (nanoGPT's GPT-2 reproduction): AdamW lr 6e-4, betas 0.9 / 0.95, weight decay 0.1,
clipping at 1, 2000 warm-up steps then a cosine decay to 10%; 512 rows of 1024 tokens per
update (about 0.5 M tokens; 8 micro-batches of 64 through gradient accumulation), 10k
updates (about 5 G tokens, some five passes over lm1b's ~1 G tokens); every 1000 updates an
evaluation on the whole test split (about 9k rows).

Prepare: `tfds build lm1b --data_dir=DIR --file_format=array_record` (needs network).
Command: python train.py --config configs/gpt2_124m_lm1b.py --workdir runs/gpt2_lm1b \
    --config.data.data_dir=DIR
Expected: not measured (no accelerator was available to this project when it was
written; on 2 CPU cores one update of 0.5 M tokens would take hours). Only its `test`
variant is run, under tfds.testing.mock_data.
Then: python -m bigjax.generate --workdir runs/gpt2_lm1b --prompt 'The ' --method sample
"""

from configs import common

VOCAB = 50257  # GPT-2's vocabulary


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='gpt2_small', vocab_size=VOCAB, max_len=1024, dropout_rate=0.0)
  c.data.update(name='lm1b', max_len=1024, vocab_size=VOCAB, tokenizer='')
  c.data.update(tokenizer_sample=200_000, index_dir='', workers=8)  # workers: tokenizing rows
  c.optim.update(name='adamw', lr=6e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)
  c.optim.update(clip_norm=1.0, grad_accum_steps=8)
  c.schedule.update(name='cosine', warmup_steps=2000, end_factor=0.1)
  c.train.update(steps=10_000, batch_size=512, eval_batch_size=64, eval_steps=-1)
  c.train.update(log_every=50, eval_every=1000, checkpoint_every=1000)
  c.train.compute_dtype = 'bfloat16'
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(common.TEST_SIZE)
    c.model.vocab_size = c.data.vocab_size = 300  # 256 bytes + 3 specials + a few merges
    c.data.update(max_len=32, tokenizer_sample=64, workers=0)
    c.optim.grad_accum_steps = 2
    c.train.compute_dtype = 'float32'
  return c
