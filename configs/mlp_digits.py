"""MLP on the offline scikit-learn digits (the default of `python train.py`).

Command: python train.py --config configs/mlp_digits.py
Expected: held-out accuracy about 0.97-0.98 on the 359 test digits, in about 20 s on
2 CPU cores (data preparation and compilation included).
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='mlp', num_classes=10, depth=2, width=256, activation='relu')
  c.model.dropout_rate = 0.1
  c.data.update(name='digits', image_size=0, **common.image_stats('digits'))
  c.optim.update(name='adamw', lr=2e-3, weight_decay=1e-4)
  c.schedule.update(name='cosine', warmup_steps=50)
  c.train.update(steps=600, batch_size=128, eval_batch_size=128)
  c.train.update(log_every=100, eval_every=200, checkpoint_every=200)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.width = 32
  return c
