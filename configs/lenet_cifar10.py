"""LeNet-5 on CIFAR-10 (public TFDS; prepare it first: `tfds build cifar10 --data_dir=DIR
--file_format=array_record`, then pass --config.data.data_dir=DIR).

Command: python train.py --config configs/lenet_cifar10.py --config.data.data_dir=DIR
Expected: test accuracy about 0.62-0.66 (LeNet-5 is small for CIFAR), in about 15 minutes
on 2 CPU cores.
"""

from configs import common


def get_config(arg=None):
  run = {'steps': 10000, 'eval_every': 2500, 'checkpoint_every': 2500}  # ~25 epochs at batch 128
  return common.lenet_tfds('cifar10', weight_decay=5e-4, train=run, test=common.is_test(arg))
