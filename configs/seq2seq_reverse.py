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
  c.model.update(name='seq2seq_lstm', vocab_size=14)  # pad, BOS, EOS, ten digits, '+'
  c.model.update(embed_dim=64, hidden_size=128, attention_dim=128, num_layers=1, dropout_rate=0.0)
  # max_len: 16 digits and EOS (source); BOS / EOS and 16 digits (target).
  c.data.update(name='algorithmic', task='reverse', max_len=18)
  c.optim.update(name='adam', lr=3e-3, clip_norm=1.0)
  c.schedule.update(name='cosine', warmup_steps=50)
  # 600 steps: exact match reaches 1.0 by about step 400.
  c.train.update(steps=600, batch_size=128, eval_batch_size=500)
  c.train.update(log_every=50, eval_every=200, checkpoint_every=200)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(embed_dim=8, hidden_size=16, attention_dim=8)
    c.data.update(num_train=200, num_test=40)  # a small custom problem set prepares in a second
  return c
