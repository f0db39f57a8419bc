"""A nano GPT-2 (byte level) on the Python standard library's sources: the embedded
language-modelling example (train, then generate Python-looking code).

Data: the offline `pystdlib` dataset (about 11.6 MB of stdlib `.py` files for training,
0.54 MB of held-out files for validation) cut into windows of 128 bytes, with document
boundaries: a window that spans two files attends within each (`data.doc_boundaries`).
Model: GPT-2's block (learned positions, pre-LN LayerNorm, GELU (tanh), biases, tied
embeddings) at a nano size: 4 layers of width 128, 4 heads, MLP 512, 128 positions,
vocabulary 256 bytes (842,496 parameters).
Recipe (configs/common.py NANO_RECIPE): AdamW lr 5e-3 (b2 0.99), 100 warm-up steps, cosine
to 10%, weight decay 0.1, clipping at 1, batches of 32 windows, 2200 steps (9 M bytes,
three quarters of an epoch); one evaluation on the whole validation split at the end. On a
CPU small batches and many updates win: at 8k bytes a step the same time bought fewer,
worse updates (1.94 bits per byte after 1000 steps of 32 x 256).

Command: python train.py --config configs/gpt_nano_pystdlib.py --workdir /tmp/gpt_nano
Expected: 1.691 bits per byte on the validation files in 14 min 19 s on 2 idle CPU cores
(measured 2026-11-29, startup and evaluation included; 2.7 steps/s). lstm_pystdlib: 1.798.
Then: python -m bigjax.generate --workdir /tmp/gpt_nano --prompt 'def ' --method sample \
    --temperature 0.8 --top_k 40 --max_new_tokens 124   (prompt + new bytes <= 128)
"""

from configs import common


def get_config(arg=None):
  return common.byte_gpt_lm(common.GPT2_BLOCK, test=common.is_test(arg))
