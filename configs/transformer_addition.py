"""A small pre-LN Transformer learns 8-digit addition ('12345678+87654321' -> '99999999').

Data: the offline `algorithmic` addition problems (train: 50k problems with 1..8-digit
operands; test: 1000 held-out problems with two 8-digit operands) through
`algorithmic_reversed`, which writes every answer least significant digit first and
left-pads the operands with zeros to 8 digits (`data.pad_operands`): each answer digit then
depends on two operand digits at fixed positions and on the previous answer digit (the
carry). The held-out 8-digit problems are unchanged by the padding. `bigjax.generate`
applies the same formatting and prints answers in the usual order.
Model: D=64, 4 heads, d_ff 256, 2+2 layers, pre-LN, no dropout (235k parameters); AdamW
lr 2e-3, 300 warm-up steps, cosine, batch 128, 2000 steps.

Command: python train.py --config configs/transformer_addition.py --workdir /tmp/tadd
Expected: exact match 1.000 on the 1000 held-out 8-digit additions (0.999 at step 1500;
teacher-forced exact match, which equals greedy decoding). Time: 9 minutes on 2 busy CPU
cores (load ~8), about 5 on idle ones.
Then: python -m bigjax.generate --workdir /tmp/tadd --prompt '58274615+49263748'
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='transformer_test', vocab_size=14)  # pad, BOS, EOS, ten digits, '+'
  c.model.update(hidden_size=64, num_heads=4, mlp_dim=256, dropout_rate=0.0, pre_norm=True)
  c.model.update(num_encoder_layers=2, num_decoder_layers=2)
  # algorithmic_reversed: answers least significant digit first; pad_operands: '12+345' ->
  # '00000012+00000345'; max_len: 8 + 1 + 8 digits and EOS, 9 answer digits and BOS / EOS.
  c.data.update(name='algorithmic_reversed', task='addition', pad_operands=True, max_len=20)
  c.optim.update(name='adamw', lr=2e-3, b2=0.98, weight_decay=0.01, clip_norm=1.0)
  c.schedule.update(name='cosine', warmup_steps=300)
  c.train.update(steps=2000, batch_size=128, eval_batch_size=500)
  c.train.update(log_every=100, eval_every=500, checkpoint_every=1000)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(hidden_size=32, num_heads=2, mlp_dim=64)
    c.model.update(num_encoder_layers=1, num_decoder_layers=1)
    c.data.update(num_train=200, num_test=40)  # a small custom problem set prepares in a second
  return c
