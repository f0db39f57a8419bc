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
  c.model.update(name='resnet18', num_classes=10, cifar_stem=True)
  c.data.update(name='cifar10', image_size=0, **common.image_stats('cifar10'))  # keep 32x32
  c.data.update(augment='crop_flip', crop_padding=4, flip=True, mixup_alpha=0.0, cutmix_alpha=0.0)
  c.optim.update(name='nesterov', lr=0.1, momentum=0.9, weight_decay=5e-4)
  c.schedule.update(name='cosine', warmup_steps=391)  # 1 epoch: 50,000 / 128 steps
  c.train.update(steps=78_200, batch_size=128, eval_batch_size=1000)  # 200 epochs
  c.train.update(log_every=391, eval_every=3910, checkpoint_every=3910, compute_dtype='bfloat16')
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.name = 'resnet_test'  # 2 stages of one basic block, 8 -> 16 channels
    c.data.mixup_alpha = 0.2  # exercise the mixup path end to end
    c.train.compute_dtype = 'float32'  # bf16 is covered by tests/models/test_vision_cnn.py
  return c
