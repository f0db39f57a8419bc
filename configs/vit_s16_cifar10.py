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
  c.model.update(name='vit_s4', num_classes=10, dropout_rate=0.1, pool='cls')  # 4x4 patches
  c.data.update(name='cifar10', image_size=0, **common.image_stats('cifar10'))  # keep 32x32
  c.data.update(augment='crop_flip', crop_padding=4, flip=True)
  # DeiT's mixup / cutmix: ViTs need the regularisation on CIFAR.
  c.data.update(mixup_alpha=0.8, cutmix_alpha=1.0)
  c.optim.update(name='adamw', lr=1e-3, weight_decay=0.05, b2=0.999, clip_norm=1.0)
  c.schedule.update(name='cosine', warmup_steps=500)  # 5 epochs at batch 512
  # 200 epochs: 50,000 / 512 = 98 steps per epoch.
  c.train.update(steps=19_600, batch_size=512, eval_batch_size=1000, label_smoothing=0.1)
  c.train.update(log_every=98, eval_every=1960, checkpoint_every=1960, compute_dtype='bfloat16')
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.name = 'vit_test'  # 2 layers of width 32, 4x4 patches
    # bf16 is covered by tests/models/test_vit.py; f32 compiles faster
    c.train.compute_dtype = 'float32'
  return c
