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
  c.model.name = 'resnet18'
  c.model.num_classes = 10
  c.model.width = 16
  c.model.zero_init_residual = True
  c.data.name = 'digits'
  c.data.image_size = 32
  c.data.augment = 'crop_flip'
  c.data.crop_padding = 4
  c.data.flip = False
  c.data.update(common.image_stats('digits'))
  c.optim.name = 'nesterov'
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 50
  c.train.steps = 600  # about 53 epochs of the 1,438 training digits at batch 128
  c.train.batch_size = 128
  c.train.eval_batch_size = 128
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.train.label_smoothing = 0.1
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.name = 'resnet_test'
    c.model.width = 8
    c.model.cifar_stem = True
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
