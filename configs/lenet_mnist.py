"""LeNet-5 on MNIST (public TFDS; prepare it first: `tfds build mnist --data_dir=DIR
--file_format=array_record` on a machine with network, then pass --config.data.data_dir=DIR).

Command: python train.py --config configs/lenet_mnist.py --config.data.data_dir=DIR
Expected: test accuracy about 0.99 (LeCun et al. report 0.95% error for LeNet-5), in about
10 minutes on 2 CPU cores.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'lenet'
  c.model.num_classes = 10
  c.data.name = 'mnist'
  c.data.image_size = 0
  c.data.update(common.image_stats('mnist'))
  c.optim.name = 'adamw'
  c.optim.lr = 1e-3
  c.optim.weight_decay = 1e-4
  c.schedule.warmup_steps = 200
  c.train.steps = 6000  # about 13 epochs at batch 128
  c.train.batch_size = 128
  c.train.eval_batch_size = 500
  c.train.eval_every = 2000
  c.train.checkpoint_every = 1000
  if arg == 'test':
    common.shrink_for_test(c)
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
