"""An attentive LSTM encoder-decoder (Bahdanau et al., 2015) learns to reverse digit strings.

Data: the offline `algorithmic` dataset, task `reverse` ('3141' -> '1413'): 20k training
strings of 1..16 digits, 1000 held-out test strings (no test string is in the training set).
Model: `seq2seq_lstm`, a bidirectional LSTM encoder (128 units each way), an LSTM decoder
of 128 units fed [embedding; attention context], additive attention of width 128.

Command: python train.py --config configs/seq2seq_reverse.py --workdir /tmp/s2s_reverse
Expected: exact match 1.00 on the 1000 held-out strings (teacher-forced exact match, which
equals greedy decoding; measured 1.000, and 0.998 at step 200); 572 k parameters; about
3 minutes on 2 CPU cores (measured 3m38s on a busy machine).
Then: python -m bigjax.generate --workdir /tmp/s2s_reverse --prompt '1234567'
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'seq2seq_lstm'
  c.model.vocab_size = 14  # pad, BOS, EOS, ten digits, '+'
  c.model.embed_dim = 64
  c.model.hidden_size = 128
  c.model.attention_dim = 128
  c.model.num_layers = 1
  c.model.dropout_rate = 0.0
  c.data.name = 'algorithmic'
  c.data.task = 'reverse'
  c.data.max_len = 18  # 16 digits and EOS (source); BOS / EOS and 16 digits (target)
  c.optim.name = 'adam'
  c.optim.lr = 3e-3
  c.optim.clip_norm = 1.0
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 50
  c.train.steps = 600  # exact match reaches 1.0 by about step 400
  c.train.batch_size = 128
  c.train.eval_batch_size = 500
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.embed_dim = 8
    c.model.hidden_size = 16
    c.model.attention_dim = 8
    c.data.num_train = 200  # a small custom problem set prepares in a second
    c.data.num_test = 40
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
