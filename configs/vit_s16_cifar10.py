"""ViT-S trained from scratch on CIFAR-10, with 4x4 patches (public TFDS; prepare it first:
`tfds build cifar10 --data_dir=DIR --file_format=array_record`).

ViT-S/16 itself would cut a 32x32 image into only 4 patches, so this is the ViT-S width and
depth (D=384, 6 heads, 12 layers; Touvron et al., 2021) with P=4: 64 patch tokens plus the
class token, the usual way to train ViTs on CIFAR (Lee et al., 2021, "Vision Transformer for
Small-Size Datasets"). Recipe: AdamW (lr 1e-3 at batch 512, weight decay 0.05, clip 1.0),
5 warmup epochs then cosine, label smoothing 0.1, dropout 0.1, random crops (4 px padding)
and flips, mixup 0.8 / cutmix 1.0 (as in DeiT), 200 epochs. Weight decay on kernels only
(the default `optim.decay_pattern`; DeiT/timm skip biases, norms, `pos_embed` and
`cls_token`).

Command: python train.py --config configs/vit_s16_cifar10.py --config.data.data_dir=DIR
Expected: test accuracy roughly 0.85-0.90. This is an estimate from published from-scratch
CIFAR-10 ViT results, not a measured run: ViTs lack the convolutional prior and lean on
augmentation; with the full small-dataset recipe (adding AutoAugment, stochastic depth,
random erasing, none of which bigjax has) Lee et al. report 0.936 for a smaller ViT (9
layers of width 192), and a ResNet-18 reaches 0.95 with crops and flips alone
(configs/resnet18_cifar10.py).
Time: about 1 h on one modern GPU (bfloat16); far too slow for CPU.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'vit_s4'  # ViT-S with 4x4 patches
  c.model.num_classes = 10
  c.model.dropout_rate = 0.1
  c.model.pool = 'cls'
  c.data.name = 'cifar10'
  c.data.image_size = 0  # keep 32x32
  c.data.augment = 'crop_flip'
  c.data.crop_padding = 4
  c.data.flip = True
  c.data.mixup_alpha = 0.8  # DeiT's mixup / cutmix: ViTs need the regularisation on CIFAR
  c.data.cutmix_alpha = 1.0
  c.data.update(common.image_stats('cifar10'))
  c.optim.name = 'adamw'
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.05
  c.optim.b2 = 0.999
  c.optim.clip_norm = 1.0
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 500  # 5 epochs at batch 512
  c.train.steps = 19_600  # 200 epochs: 50,000 / 512 = 98 steps per epoch
  c.train.batch_size = 512
  c.train.eval_batch_size = 1000
  c.train.eval_every = 1960
  c.train.checkpoint_every = 1960
  c.train.log_every = 98
  c.train.label_smoothing = 0.1
  c.train.compute_dtype = 'bfloat16'
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.name = 'vit_test'  # 2 layers of width 32, 4x4 patches
    c.train.compute_dtype = 'float32'  # bf16 is covered by tests/test_vit.py; f32 compiles faster
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
