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
  c.model.update(name='inception_v3', num_classes=1000, dropout_rate=0.5)
  c.data.update(common.imagenet_data(299, mixup_alpha=0.0, cutmix_alpha=0.0))
  c.optim.update(name='momentum', lr=0.1 * BATCH / 256, momentum=0.9, weight_decay=1e-4)
  c.schedule.update(name='cosine', warmup_steps=5 * EPOCH)
  c.train.update(steps=100 * EPOCH, batch_size=BATCH, eval_batch_size=500, label_smoothing=0.1)
  c.train.update(log_every=100, eval_every=5 * EPOCH, checkpoint_every=EPOCH)
  c.train.update(aux_loss_weight=0.4, compute_dtype='bfloat16')
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.name = 'inception_test'  # 1/16 of every width, padded for small images
    c.data.image_size = 32
    c.optim.lr = 0.1 * c.train.batch_size / 256
    c.train.compute_dtype = 'float32'
  return c
