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
  c.model.update(name='vgg16_bn', num_classes=10, pool_size=1, hidden=512, dropout_rate=0.5)
  c.data.update(name='cifar10', image_size=0, **common.image_stats('cifar10'))  # keep 32x32
  c.data.update(augment='crop_flip', crop_padding=4, flip=True)
  c.optim.update(name='momentum', lr=0.05, momentum=0.9, weight_decay=5e-4)
  c.schedule.update(name='cosine', warmup_steps=391)  # 1 epoch at batch 128
  c.train.update(steps=78_200, batch_size=128, eval_batch_size=1000)  # 200 epochs
  c.train.update(log_every=391, eval_every=3910, checkpoint_every=3910, compute_dtype='bfloat16')
  if common.is_test(arg):
    common.shrink_for_test(c)
    # vgg_test: two convolutions, 32-unit classifier.
    c.model.update(name='vgg_test', batch_norm=True, pool_size=2, hidden=32)
    c.train.compute_dtype = 'float32'
  return c
