"""A nano mixture-of-experts decoder (byte level, Mixtral-style) on the Python standard
library's sources: llama_nano_pystdlib with each MLP replaced by 4 experts, each token
routed to the top 2 (dropless: exact, no token dropped).

Model: llama_nano_pystdlib's block with 4 SwiGLU experts of MLP width 168 (a third of the
dense 512: a token's two experts cost about what the Llama MLP of 344 costs) in each of the
4 layers of width 128 (1,297,536 parameters), router load-balancing loss (weight 0.01) and
z-loss (1e-3) added to the objective; the per-expert load is reported as expert_load/0..3.
Data and recipe: as gpt_nano_pystdlib (configs/common.py NANO_RECIPE), 1200 steps.

Command: python train.py --config configs/moe_nano_pystdlib.py --workdir /tmp/moe_nano
Expected: 1.787 bits per byte on the validation files in 15 min 26 s on 2 idle CPU cores
(measured 2026-11-29, 1.4 steps/s; expert loads 0.24-0.26, balance loss 1.01).
Then: python -m bigjax.generate --workdir /tmp/moe_nano --prompt 'def ' --method sample
"""

from configs import common

EXPERTS = {'num_experts': 4, 'experts_per_token': 2, 'capacity_factor': 0.0}  # 0: dropless


# The experts' grouped matmuls (jax.lax.ragged_dot) run at about 1.5 steps/s on 2 CPU
# cores against 2.7 for the dense nano models: 1200 steps is the same 15-minute budget.
STEPS = 1200


def get_config(arg=None):
  block = {**common.LLAMA_BLOCK, **EXPERTS}
  c = common.byte_gpt_lm(block, mlp_ratio=1 / 3, test=common.is_test(arg))
  if not common.is_test(arg):
    c.train.steps = STEPS
  return c
