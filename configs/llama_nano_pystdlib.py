"""A nano Llama-style decoder (byte level) on the Python standard library's sources: the
gpt_nano_pystdlib recipe and size with Llama's block.

Model: rotary positions, RMSNorm, SwiGLU with an MLP of 512 (2/3 of GPT's 768, so the MLP
has as many parameters), grouped-query attention with 2 key/value heads for 6 query heads,
no biases, an untied output layer; 4 layers of width 192. Data and recipe: as
gpt_nano_pystdlib (configs/common.py NANO_RECIPE).

Command: python train.py --config configs/llama_nano_pystdlib.py --workdir /tmp/llama_nano
Expected: TBD (lead measures) bits per byte on the validation files.
Then: python -m bigjax.generate --workdir /tmp/llama_nano --prompt 'def ' --method sample
"""

from configs import common


def get_config(arg=None):
  return common.byte_gpt_lm(common.LLAMA_BLOCK, mlp_ratio=2 / 3, test=common.is_test(arg))
