"""A byte-level LSTM language model on the Python standard library's sources.

Data: the offline `pystdlib` dataset (about 11.6 MB of stdlib `.py` files for training,
0.54 MB of held-out files for validation), cut into windows of `data.seq_len` bytes.
Model: a one-layer LSTM of width 512 over 64-dim byte embeddings (about 1.2 M
parameters), Adam with gradient clipping and a cosine decay (the char-rnn recipe,
Karpathy et al., 2015, on a CPU budget).

Command: python train.py --config configs/lstm_pystdlib.py --workdir /tmp/lstm
Expected: about 2.0 bits per byte on the validation files (a unigram model gets 4.67);
about 13 minutes on 2 CPU cores.
Then: python -m bigjax.generate --workdir /tmp/lstm --prompt 'def '
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'lstm_lm'
  c.model.vocab_size = 256
  c.model.embed_dim = 64
  c.model.hidden_size = 512
  c.model.num_layers = 1
  c.model.dropout_rate = 0.0  # under one epoch: no overfitting to fight
  c.data.name = 'pystdlib'
  c.data.seq_len = 128
  c.optim.name = 'adam'
  c.optim.lr = 2e-3
  c.optim.clip_norm = 1.0
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 20
  c.schedule.end_factor = 0.05
  c.train.steps = 600
  c.train.batch_size = 128
  c.train.eval_batch_size = 256
  c.train.log_every = 25
  c.train.eval_every = 0  # only at the end: the whole validation split
  c.train.checkpoint_every = 200
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.embed_dim = 8
    c.model.hidden_size = 16
    c.data.seq_len = 16
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
