"""A nano Llama-style decoder (byte level) on the Python standard library's sources: the
gpt_nano_pystdlib recipe and size with Llama's block.

Model: rotary positions, RMSNorm, SwiGLU with an MLP of 344 (2/3 of GPT's 512, so the MLP
has about as many parameters), grouped-query attention with 2 key/value heads for 4 query
heads, no biases, an untied output layer; 4 layers of width 128 (791,680 parameters). Data
and recipe: as gpt_nano_pystdlib (configs/common.py NANO_RECIPE).

Command: python train.py --config configs/llama_nano_pystdlib.py --workdir /tmp/llama_nano
Expected: 1.682 bits per byte on the validation files in 14 min 34 s on 2 idle CPU cores
(measured 2026-11-29; gpt_nano_pystdlib: 1.691 in 14 min 19 s).
Then: python -m bigjax.generate --workdir /tmp/llama_nano --prompt 'def ' --method sample
"""

from configs import common


def get_config(arg=None):
  return common.byte_gpt_lm(common.LLAMA_BLOCK, mlp_ratio=2 / 3, test=common.is_test(arg))
