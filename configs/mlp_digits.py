"""MLP on the offline scikit-learn digits (the default of `python train.py`).

Command: python train.py --config configs/mlp_digits.py
Expected: held-out accuracy about 0.97-0.98 on the 359 test digits, in about 20 s on
2 CPU cores (data preparation and compilation included).
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'mlp'
  c.model.num_classes = 10
  c.model.depth = 2
  c.model.width = 256
  c.model.activation = 'relu'
  c.model.dropout_rate = 0.1
  c.data.name = 'digits'
  c.data.image_size = 0
  c.data.update(common.image_stats('digits'))
  c.optim.name = 'adamw'
  c.optim.lr = 2e-3
  c.optim.weight_decay = 1e-4
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 50
  c.train.steps = 600
  c.train.batch_size = 128
  c.train.eval_batch_size = 128
  c.train.log_every = 100
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.width = 32
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
