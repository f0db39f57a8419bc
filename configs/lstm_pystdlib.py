"""A byte-level LSTM language model on the Python standard library's sources.

Data: the offline `pystdlib` dataset (about 11.6 MB of stdlib `.py` files for training,
0.54 MB of held-out files for validation), cut into windows of `data.seq_len` bytes.
Model: a one-layer LSTM of width 512 over 64-dim byte embeddings (1.33 M parameters; the
character-level LSTM LM of Graves, 2013, "Generating Sequences With Recurrent Neural
Networks", made small). Recipe for a CPU
budget: 1000 Adam steps of 32 x 128 bytes (about 4 M bytes, a third of an epoch) at a
high learning rate with gradient clipping and a cosine decay. Cost per byte does not
depend on the batch size on a CPU, so small batches buy more updates for the same time.

Command: python train.py --config configs/lstm_pystdlib.py --workdir /tmp/lstm
Expected: 1.80 bits per byte on the validation files (a unigram model gets 4.67; measured
1.798, and 1.880 with lr 8e-3); 8 minutes on 2 idle CPU cores (measured 7m52s, startup
and evaluation included, 2.5 steps/s; 11m12s with another job on the machine for half
the run: it needs about 14 CPU-minutes).
Then: python -m bigjax.generate --workdir /tmp/lstm --prompt 'def ' --method sample
"""

from configs import common


def get_config(arg=None):
  # lr: high for Adam; still stable here (grad norms ~0.1) and far faster.
  return common.byte_rnn_lm('lstm_lm', lr=1.5e-2, steps=1000, test=common.is_test(arg))
