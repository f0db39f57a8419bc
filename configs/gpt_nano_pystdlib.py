"""A nano GPT-2 (byte level) on the Python standard library's sources: the embedded
language-modelling example (train, then generate Python-looking code).

Data: the offline `pystdlib` dataset (about 11.6 MB of stdlib `.py` files for training,
0.54 MB of held-out files for validation) cut into windows of 256 bytes, with document
boundaries: a window that spans two files attends within each (`data.doc_boundaries`).
Model: GPT-2's block (learned positions, pre-LN LayerNorm, GELU (tanh), biases, tied
embeddings) at a nano size: 4 layers of width 192, 6 heads, MLP 768, vocabulary 256 bytes.
Recipe (configs/common.py NANO_RECIPE): AdamW lr 3e-3, 100 warm-up steps, cosine to 10%,
weight decay 0.1, clipping at 1, batches of 32 windows, 2000 steps; one evaluation on the
whole validation split at the end.

Command: python train.py --config configs/gpt_nano_pystdlib.py --workdir /tmp/gpt_nano
Expected: TBD (lead measures) bits per byte on the validation files (lstm_pystdlib: 1.798).
Then: python -m bigjax.generate --workdir /tmp/gpt_nano --prompt 'def ' --method sample
"""

from configs import common


def get_config(arg=None):
  return common.byte_gpt_lm(common.GPT2_BLOCK, test=common.is_test(arg))
