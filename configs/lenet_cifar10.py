"""LeNet-5 on CIFAR-10 (public TFDS; prepare it first: `tfds build cifar10 --data_dir=DIR
--file_format=array_record`, then pass --config.data.data_dir=DIR).

Command: python train.py --config configs/lenet_cifar10.py --config.data.data_dir=DIR
Expected: test accuracy about 0.62-0.66 (LeNet-5 is small for CIFAR), in about 15 minutes
on 2 CPU cores.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'lenet'
  c.model.num_classes = 10
  c.data.name = 'cifar10'
  c.data.image_size = 0
  c.data.update(common.image_stats('cifar10'))
  c.optim.name = 'adamw'
  c.optim.lr = 1e-3
  c.optim.weight_decay = 5e-4
  c.schedule.warmup_steps = 200
  c.train.steps = 10000  # about 25 epochs at batch 128
  c.train.batch_size = 128
  c.train.eval_batch_size = 500
  c.train.eval_every = 2500
  c.train.checkpoint_every = 2500
  if arg == 'test':
    common.shrink_for_test(c)
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
