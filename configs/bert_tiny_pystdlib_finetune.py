"""BERT-tiny fine-tuned to tell valid Python from corrupted Python: step 2 of the offline
pre-train-then-fine-tune example (`examples/bert_pystdlib.py`).

Data: `pystdlib_syntax`, snippets of 3-8 lines of the stdlib labelled by `compile()`: half
compile, half had one small corruption (a dropped bracket or colon, two tokens swapped, a
broken indent) that makes `compile()` reject them; split by file as `pystdlib` is.
`init_from` loads the encoder of the pre-training run (`bert_tiny_pystdlib_mlm`; its MLM and
NSP heads are dropped, the classifier is new) and `data.tokenizer` reads that run's
WordPiece vocabulary (an empty `data.tokenizer` means the tokenizer of the `init_from`
folder). For the from-scratch control pass `--config.init_from=` with
`--config.data.tokenizer=<pre-training workdir>`, so both arms read the same vocabulary.
Recipe: BERT's fine-tuning recipe at the small-model rate of Turc et al. (2019): AdamW lr
1e-4, weight decay 0.01, 10% warm-up then linear decay, sequences of 128; 300 steps of 32.
Command: python train.py --config configs/bert_tiny_pystdlib_finetune.py
Measured: see README and bench/RESULTS.md.
"""

import os

from configs import bert_tiny_pystdlib_mlm as mlm
from configs import common

PRETRAINED = os.path.join('runs', 'bert_tiny_pystdlib_mlm')


def get_config(arg=None):
  test = common.is_test(arg)
  c = common.base_config()
  c.task.name = 'text_classification'
  c.model.update(name='bert_tiny', head='classification', num_classes=2, vocab_size=mlm.VOCAB)
  c.model.dropout_rate = 0.1
  c.init_from = PRETRAINED
  c.data.update(name='pystdlib_syntax', max_len=128, vocab_size=mlm.VOCAB)
  c.data.tokenizer = ''  # '' -> the init_from run's tokenizer.json
  c.optim.update(name='adamw', lr=1e-4, weight_decay=0.01, eps=1e-6, clip_norm=1.0)
  c.schedule.update(name='linear', warmup_steps=30)
  c.train.update(steps=300, batch_size=32, eval_batch_size=256)
  c.train.update(log_every=100, eval_every=0, checkpoint_every=300)
  if test:
    common.shrink_for_test(c)
    c.model.update(name='bert_test', vocab_size=200)
    c.data.update(max_len=32, vocab_size=200)
    c.init_from = os.path.join('runs', 'bert_tiny_pystdlib_mlm_test')
  return c
