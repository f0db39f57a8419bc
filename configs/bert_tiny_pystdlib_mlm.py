"""BERT-tiny (L2/H128/A2) pre-trained with masked LM + next-sentence prediction on the
Python standard library's sources: step 1 of the offline pre-train-then-fine-tune example
(`examples/bert_pystdlib.py`, README "Pre-train, then fine-tune").

Data: `pystdlib_mlm`, the stdlib split by file as `pystdlib` is; each example is a pair of
segments of a few lines, the second the real continuation or (half the time) a segment of
another file; dynamic masking (15% of tokens: 80% [MASK], 10% random, 10% kept), redrawn
every epoch. A WordPiece vocabulary of 8000 is learned from the training split on first
use and saved as `tokenizer.json` in the workdir, where step 2 reads it.
Recipe (BERT's, scaled to a CPU): AdamW lr 1e-3 (small models take a larger rate, as in
Turc et al., 2019), weight decay 0.01, 10% warm-up then linear decay, sequences of 128.
Command: python train.py --config configs/bert_tiny_pystdlib_mlm.py
Measured: see README and bench/RESULTS.md.
"""

from configs import common

VOCAB = 8000


def get_config(arg=None):
  test = common.is_test(arg)
  c = common.base_config()
  c.task.name = 'mlm'
  # No dropout: a run this short (about one pass over the corpus) does not overfit.
  c.model.update(name='bert_tiny', head='pretraining', vocab_size=VOCAB, dropout_rate=0.0)
  c.data.update(name='pystdlib_mlm', max_len=128, vocab_size=VOCAB, tokenizer='')
  c.data.max_predictions = 20  # MLM logits at the 15% selected positions only, as BERT
  c.data.tokenizer_sample = 2000  # training files read to learn the WordPiece vocabulary
  c.optim.update(name='adamw', lr=1e-3, weight_decay=0.01, b2=0.98, eps=1e-6, clip_norm=1.0)
  c.schedule.update(name='linear', warmup_steps=250)
  c.train.update(steps=2500, batch_size=32, eval_batch_size=256, eval_steps=8)
  c.train.update(log_every=100, eval_every=0, checkpoint_every=2500)
  if test:
    common.shrink_for_test(c)
    c.model.update(name='bert_test', vocab_size=200)
    c.data.update(max_len=32, max_predictions=5, vocab_size=200, tokenizer_sample=20)
  return c
