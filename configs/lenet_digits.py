"""LeNet-5-style CNN on the offline scikit-learn digits (8x8, padded convolutions).

Command: python train.py --config configs/lenet_digits.py
Expected: held-out accuracy about 0.98 on the 359 test digits, in about 1 minute on 2 CPU
cores.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='lenet', num_classes=10, features=(16, 32), hidden=(120, 84))
  c.model.update(kernel_size=3, dropout_rate=0.1)
  c.data.update(name='digits', image_size=0, **common.image_stats('digits'))
  c.optim.update(name='adamw', lr=2e-3, weight_decay=1e-4)
  c.schedule.warmup_steps = 50
  c.train.update(steps=1500, batch_size=128, eval_batch_size=128)
  c.train.update(eval_every=500, checkpoint_every=250)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(features=(4, 8), hidden=(16,))
  return c
