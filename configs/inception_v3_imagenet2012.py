"""Inception v3 (Szegedy et al., 2016) on ImageNet-1k at 299x299, with the auxiliary
classifier weighted 0.4 and label smoothing 0.1 as in the paper (public TFDS
`imagenet2012`, which needs the ILSVRC2012 tars in DIR/downloads/manual/ and
`tfds build imagenet2012 --data_dir=DIR --file_format=array_record`).

The paper trains with RMSProp (decay 0.9, eps 1.0), lr 0.045 decayed by 0.94 every 2
epochs, on 50 GPUs. This config uses the recipe that reproduces it on one host: SGD
momentum 0.9, lr 0.1 x batch / 256, 5 warmup epochs then cosine over 100 epochs, weight
decay 1e-4, random-resized crops + flips, resize 342 + centre crop 299 at evaluation.

Command: python train.py --config configs/inception_v3_imagenet2012.py --config.data.data_dir=DIR
Expected: top-1 validation accuracy about 0.77-0.78 (the paper reports 0.788 single crop).
Time: about 4 days on one modern GPU (bfloat16; --config.data.workers=16 for JPEG decoding).
"""

from configs import common

BATCH = 512
EPOCH = 1_281_167 // BATCH  # steps per epoch


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'inception_v3'
  c.model.num_classes = 1000
  c.model.dropout_rate = 0.5
  c.data.name = 'imagenet2012'
  c.data.image_size = 299
  c.data.augment = 'inception'
  c.data.flip = True
  c.data.mixup_alpha = 0.0
  c.data.cutmix_alpha = 0.0
  c.data.update(common.image_stats('imagenet2012'))
  c.optim.name = 'momentum'
  c.optim.lr = 0.1 * BATCH / 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 5 * EPOCH
  c.train.steps = 100 * EPOCH
  c.train.batch_size = BATCH
  c.train.eval_batch_size = 500
  c.train.log_every = 100
  c.train.eval_every = 5 * EPOCH
  c.train.checkpoint_every = EPOCH
  c.train.label_smoothing = 0.1
  c.train.aux_loss_weight = 0.4
  c.train.compute_dtype = 'bfloat16'
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.name = 'inception_test'  # 1/16 of every width, padded for small images
    c.model.num_classes = 1000
    c.data.image_size = 32
    c.optim.lr = 0.1 * c.train.batch_size / 256
    c.train.compute_dtype = 'float32'
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
