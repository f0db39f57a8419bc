"""Distillation demo 2: a nano GPT teaches a GPT a seventh its size to model Python source.

Teacher: configs/gpt_nano_pystdlib.py (4 layers of width 128, 842,496 parameters); the demo
(bench/distill_demos.py) trains it for 1,200 of its 2,200 steps to fit its time budget.
Student: the same GPT-2 block at 2 layers of width 64, 2 heads, MLP 256, trained for 400
steps of 32 windows of 128 bytes with the nano recipe (AdamW lr 5e-3, cosine). Soft loss:
the KL per byte to the teacher's next-byte distribution at temperature 1 (the padding of a
packed window is excluded by the task's weights), alpha 0.5. The control (`:scratch`) is the
same student, data, steps and seeds with distillation off. Measured (2026-11-29, seeds
0/1/2, held-out stdlib files, teacher 1.943 bits per byte): 2.967 +- 0.028 bits per byte
from scratch (48 s a run), 2.844 +- 0.012 distilled (86 s), every seed better.

Command: python train.py --config configs/gpt_nano_pystdlib.py --workdir runs/gpt_nano_pystdlib
         python train.py --config configs/distill_gpt_to_nano_pystdlib.py --workdir W
"""

import os

from configs import common

TEACHER = os.path.join('runs', 'gpt_nano_pystdlib')
STUDENT = {'hidden_size': 64, 'num_layers': 2, 'num_heads': 2, 'mlp_dim': 256, 'max_len': 128}
STEPS = 400


def get_config(arg=None):
  test, scratch = common.distill_args(arg)
  c = common.byte_gpt_lm(common.GPT2_BLOCK, test=test)
  if not test:
    c.model.update(STUDENT)
    c.train.update(steps=STEPS, checkpoint_every=STEPS)
  c.distill.update(teacher='' if scratch else TEACHER, loss='kl', alpha=0.5, temperature=1.0)
  return c
