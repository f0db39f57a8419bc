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
  c.model.update(name='resnet50', num_classes=1000, zero_init_residual=True)
  c.data.update(common.imagenet_data(224, mixup_alpha=0.0, cutmix_alpha=0.0))
  c.optim.update(name='momentum', lr=0.1 * BATCH / 256, momentum=0.9, weight_decay=1e-4)
  c.schedule.update(name='cosine', warmup_steps=5 * EPOCH)
  c.train.update(steps=90 * EPOCH, batch_size=BATCH, eval_batch_size=1000, label_smoothing=0.1)
  c.train.update(log_every=100, eval_every=5 * EPOCH, checkpoint_every=EPOCH)
  c.train.compute_dtype = 'bfloat16'
  if common.is_test(arg):
    common.shrink_for_test(c)
    # The ImageNet stem (7x7/2 conv + max-pool), bottleneck blocks.
    c.model.update(name='resnet_test', block='bottleneck', cifar_stem=False)
    c.data.update(image_size=32, cutmix_alpha=1.0)  # exercise the cutmix path end to end
    c.optim.lr = 0.1 * c.train.batch_size / 256
    c.train.compute_dtype = 'float32'
  return c
