"""VGG-16 with batch norm (Simonyan & Zisserman, 2015; BN after every convolution) on
CIFAR-10 (public TFDS; prepare it first: `tfds build cifar10 --data_dir=DIR
--file_format=array_record`).

On 32x32 images the last feature map is 1x1x512, so the classifier is the CIFAR-style
512-512-10 (pool_size=1, hidden=512, dropout 0.5) instead of ImageNet's 25088-4096-4096.
Recipe: SGD momentum 0.9, lr 0.05 at batch 128, weight decay 5e-4, cosine over 200 epochs,
random crops (4 px padding) and flips.

Command: python train.py --config configs/vgg16_cifar10.py --config.data.data_dir=DIR
Expected: test accuracy about 0.93-0.94. Time: about 1 h on one modern GPU (bfloat16); far
too slow for CPU.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'vgg16_bn'
  c.model.num_classes = 10
  c.model.pool_size = 1
  c.model.hidden = 512
  c.model.dropout_rate = 0.5
  c.data.name = 'cifar10'
  c.data.image_size = 0  # keep 32x32
  c.data.augment = 'crop_flip'
  c.data.crop_padding = 4
  c.data.flip = True
  c.data.update(common.image_stats('cifar10'))
  c.optim.name = 'momentum'
  c.optim.lr = 0.05
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 391  # 1 epoch at batch 128
  c.train.steps = 78_200  # 200 epochs
  c.train.batch_size = 128
  c.train.eval_batch_size = 1000
  c.train.log_every = 391
  c.train.eval_every = 3910
  c.train.checkpoint_every = 3910
  c.train.compute_dtype = 'bfloat16'
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.name = 'vgg_test'  # two convolutions, 32-unit classifier
    c.model.batch_norm = True
    c.model.pool_size = 2
    c.model.hidden = 32
    c.train.compute_dtype = 'float32'
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
