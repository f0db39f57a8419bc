"""LeNet-5 on MNIST (public TFDS; prepare it first: `tfds build mnist --data_dir=DIR
--file_format=array_record` on a machine with network, then pass --config.data.data_dir=DIR).

Command: python train.py --config configs/lenet_mnist.py --config.data.data_dir=DIR
Expected: test accuracy about 0.99 (LeCun et al. report 0.95% error for LeNet-5), in about
10 minutes on 2 CPU cores.
"""

from configs import common


def get_config(arg=None):
  run = {'steps': 6000, 'eval_every': 2000, 'checkpoint_every': 1000}  # ~13 epochs at batch 128
  return common.lenet_tfds('mnist', weight_decay=1e-4, train=run, test=common.is_test(arg))
