"""Distillation demo 3: a GPT-2 teaches a smaller Llama-style Transformer (another block
design, fewer heads and layers) its next-byte distribution and its attention maps.

Teacher: the nano GPT-2 of configs/gpt_nano_pystdlib.py (4 layers, 4 heads, learned
positions, LayerNorm, GELU), as in distill_gpt_to_nano_pystdlib.
Student: Llama's block (RMSNorm, rotary positions, SwiGLU, grouped-query attention with one
key/value head, no biases) at 2 layers of width 64 with 2 heads, trained for 400 steps with
the nano recipe. Soft loss: the KL per byte at temperature 1, alpha 0.5, plus attention-map
distillation with weight 0.1 (MiniLM-style KL between attention distributions; the teacher's
4 heads averaged in 2 groups to meet the student's 2): student layer 0 learns teacher layer
1 and student layer 1 teacher layer 3 (the default even spread, last to last). Tried once
(seed 0, a 1,200-step teacher): scratch 2.427 bits per byte, soft loss alone 2.318, soft
loss + attention maps at weight 0.1 2.284; at weight 1.0 (with an 800-step teacher) the
maps hurt (2.513). The control (`:scratch`)
is the same student, data, steps and seeds with distillation off. Measured (2026-11-29,
seeds 0/1/2, held-out stdlib files): 2.400 +- 0.033 bits per byte from scratch (54 s a
run), 2.267 +- 0.015 distilled (96 s), every seed better.

Command: python train.py --config configs/distill_gpt_to_llama_pystdlib.py --workdir W
"""

from configs import common
from configs.distill_gpt_to_nano_pystdlib import STEPS, STUDENT, TEACHER


def get_config(arg=None):
  test, scratch = common.distill_args(arg)
  c = common.byte_gpt_lm(common.LLAMA_BLOCK, mlp_ratio=2 / 3, test=test)
  c.model.num_kv_heads = 1
  if not test:
    c.model.update(STUDENT)
    c.model.mlp_dim = 168  # 2/3 of 256 (a gated MLP with the dense one's parameters), x8
    c.train.update(steps=STEPS, checkpoint_every=STEPS)
  c.distill.update(teacher='' if scratch else TEACHER, loss='kl', alpha=0.5, temperature=1.0)
  c.distill.attention_weight = 0.1
  return c
