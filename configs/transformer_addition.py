"""A small pre-LN Transformer learns 8-digit addition ('12345678+87654321' -> '99999999').

Data: the offline `algorithmic` dataset, task `addition` (train: 50k problems with 1..8-digit
operands; test: 1000 held-out problems with two 8-digit operands). The answer is written
most significant digit first, as in the data.

Command: python train.py --config configs/transformer_addition.py --workdir /tmp/tadd
Expected: exact match >= 0.95 on the held-out 8-digit additions (teacher-forced exact match,
which equals greedy decoding). Time: about 10 minutes on 2 CPU cores.
Then: python -m bigjax.generate --workdir /tmp/tadd --prompt '12345678+87654321'
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'transformer_test'
  c.model.vocab_size = 14  # pad, BOS, EOS, ten digits, '+'
  c.model.hidden_size = 128
  c.model.num_heads = 4
  c.model.mlp_dim = 512
  c.model.num_encoder_layers = 2
  c.model.num_decoder_layers = 2
  c.model.dropout_rate = 0.0
  c.model.pre_norm = True
  c.data.name = 'algorithmic'
  c.data.task = 'addition'
  c.data.max_len = 20  # 8 + 1 + 8 digits and EOS; 9 answer digits and BOS / EOS
  c.optim.name = 'adamw'
  c.optim.lr = 1e-3
  c.optim.b2 = 0.98
  c.optim.weight_decay = 0.01
  c.optim.clip_norm = 1.0
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 300
  c.train.steps = 3000
  c.train.batch_size = 128
  c.train.eval_batch_size = 500
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.hidden_size = 32
    c.model.num_heads = 2
    c.model.mlp_dim = 64
    c.model.num_encoder_layers = 1
    c.model.num_decoder_layers = 1
    c.data.num_train = 200  # a small custom problem set prepares in a second
    c.data.num_test = 40
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
