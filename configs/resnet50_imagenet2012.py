"""ResNet-50 v1.5 (He et al., 2016) on ImageNet-1k, the "ImageNet in 1 hour" recipe
(Goyal et al., 2017) with a cosine schedule (public TFDS `imagenet2012`, which needs the
ILSVRC2012 tars in DIR/downloads/manual/ and `tfds build imagenet2012 --data_dir=DIR
--file_format=array_record`).

Recipe: SGD momentum 0.9 (no Nesterov), lr 0.1 x batch / 256, 5 warmup epochs then cosine
over 90 epochs, weight decay 1e-4 on conv and dense kernels only (not on BN scales and
shifts, nor biases: the default `optim.decay_pattern`), label smoothing 0.1, zero-init of
the last BN gamma in each block, random-resized crops + flips at 224, resize 256 + centre
crop 224 at evaluation. Mixup / cutmix are off (`data.mixup_alpha`, `data.cutmix_alpha`).

Command: python train.py --config configs/resnet50_imagenet2012.py --config.data.data_dir=DIR
Expected: top-1 validation accuracy about 0.77 (0.761 without label smoothing and cosine).
Time: about 2-3 days on one modern GPU (bfloat16; the JPEG decoding wants
--config.data.workers=16); hours on a multi-GPU host.
"""

from configs import common

BATCH = 1024
EPOCH = 1_281_167 // BATCH  # steps per epoch


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'resnet50'
  c.model.num_classes = 1000
  c.model.zero_init_residual = True
  c.data.name = 'imagenet2012'
  c.data.image_size = 224
  c.data.augment = 'inception'
  c.data.flip = True
  c.data.mixup_alpha = 0.0
  c.data.cutmix_alpha = 0.0
  c.data.update(common.image_stats('imagenet2012'))
  c.optim.name = 'momentum'  # nesterov off
  c.optim.lr = 0.1 * BATCH / 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 5 * EPOCH
  c.train.steps = 90 * EPOCH
  c.train.batch_size = BATCH
  c.train.eval_batch_size = 1000
  c.train.log_every = 100
  c.train.eval_every = 5 * EPOCH
  c.train.checkpoint_every = EPOCH
  c.train.label_smoothing = 0.1
  c.train.compute_dtype = 'bfloat16'
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.name = 'resnet_test'
    c.model.block = 'bottleneck'
    c.model.cifar_stem = False  # the ImageNet stem: 7x7/2 conv + max-pool
    c.model.num_classes = 1000
    c.data.image_size = 32
    c.data.cutmix_alpha = 1.0  # exercise the cutmix path end to end
    c.optim.lr = 0.1 * c.train.batch_size / 256
    c.train.compute_dtype = 'float32'
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
