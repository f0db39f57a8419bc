"""ResNet-18 (He et al., 2016) on CIFAR-10 with the CIFAR stem (3x3 stride-1 conv, no
max-pool), as in the usual CIFAR ResNet-18 (public TFDS; prepare it first:
`tfds build cifar10 --data_dir=DIR --file_format=array_record`).

Recipe: SGD with Nesterov momentum 0.9, lr 0.1 at batch 128, weight decay 5e-4, 1 warmup
epoch then cosine over 200 epochs, random crops (4 px padding) and flips. Weight decay is on
conv and dense kernels only (the default `optim.decay_pattern`); the common PyTorch CIFAR
scripts decay every parameter, BN included: --config.optim.decay_pattern=. does that.

Command: python train.py --config configs/resnet18_cifar10.py --config.data.data_dir=DIR
Expected: test accuracy about 0.95. Time: about 1.5 h on one modern GPU (bfloat16); far
too slow for CPU.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model.name = 'resnet18'
  c.model.num_classes = 10
  c.model.cifar_stem = True
  c.data.name = 'cifar10'
  c.data.image_size = 0  # keep 32x32
  c.data.augment = 'crop_flip'
  c.data.crop_padding = 4
  c.data.flip = True
  c.data.mixup_alpha = 0.0
  c.data.cutmix_alpha = 0.0
  c.data.update(common.image_stats('cifar10'))
  c.optim.name = 'nesterov'
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 391  # 1 epoch: 50,000 / 128 steps
  c.train.steps = 78_200  # 200 epochs
  c.train.batch_size = 128
  c.train.eval_batch_size = 1000
  c.train.log_every = 391
  c.train.eval_every = 3910
  c.train.checkpoint_every = 3910
  c.train.compute_dtype = 'bfloat16'
  if arg == 'test':
    common.shrink_for_test(c)
    c.model.name = 'resnet_test'  # 2 stages of one basic block, 8 -> 16 channels
    c.data.mixup_alpha = 0.2  # exercise the mixup path end to end
    c.train.compute_dtype = 'float32'  # bf16 is covered by tests/test_vision_cnn.py
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return c
