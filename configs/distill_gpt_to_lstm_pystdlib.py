"""Distillation demo 3: a Transformer teaches an LSTM (another family) to model Python source.

Teacher: the nano GPT of configs/gpt_nano_pystdlib.py (as in distill_gpt_to_nano_pystdlib).
Student: a one-layer byte LSTM of width 128 over 32-dim embeddings (configs/lstm_pystdlib.py
made small), 400 Adam steps of 32 windows of 128 bytes (lr 1.5e-2, clipping at 1, cosine).
Both read the same windows (without document boundaries, which the LSTM does not take); the
soft loss is the KL per byte to the GPT's next-byte distribution at temperature 1, alpha
0.5. The control (`:scratch`) is the same LSTM, data, steps and seeds with distillation off.
Measured once (seed 0): 2.701 bits per byte from scratch, 2.680 distilled from the 1,200-step
teacher (1.943), 2.693 from an 800-step one (2.152); alpha 0.3 / 0.9 / 1.0 and temperature 2
did no better, nor did a wider LSTM (256: 2.352 scratch, 2.373 distilled). The LSTM learns
fast at this budget, and the teacher's soft targets add little to it: the Transformer
students (distill_gpt_to_nano_pystdlib, distill_gpt_to_llama_pystdlib) gain 0.1 bits.

Command: python train.py --config configs/distill_gpt_to_lstm_pystdlib.py --workdir W
"""

from configs import common
from configs.distill_gpt_to_nano_pystdlib import STEPS, TEACHER


def get_config(arg=None):
  test, scratch = common.distill_args(arg)
  c = common.byte_rnn_lm('lstm_lm', lr=1.5e-2, steps=STEPS, test=test)
  if not test:
    c.model.update(embed_dim=32, hidden_size=128)
    c.train.checkpoint_every = STEPS
  c.distill.update(teacher='' if scratch else TEACHER, loss='kl', alpha=0.5, temperature=1.0)
  return c
