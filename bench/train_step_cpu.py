"""Train-step throughput of bigjax against the PyTorch peer, side by side, same run.

  .venv/bin/python bench/train_step_cpu.py [--steps 50] [--rounds 3] [--models mlp,lenet]
      [--conv_impls xla,patches,auto]

Same architecture, batch, optimiser (Adam) and float32 on both sides; reports median
milliseconds per step after warm-up (compilation excluded for JAX). bigjax and PyTorch are
timed interleaved, step by step in a rotating order (`steps * rounds` turns), so that load
from other processes hits both alike; the median over all steps is reported. CNN cases run
once per `conv_impl` (see bigjax/layers/conv.py). Not a test: numbers go to bench/RESULTS.md
with the date and machine.
"""

import argparse
import statistics
import time

import jax
import ml_collections
import numpy as np
import optax

import bigjax
from bigjax.train import optim
from bigjax.train.state import init_state
from bigjax.train.step import make_train_step
from bigjax.train.tasks import get_task

CASES = {
  # name: (bigjax model, overrides, image shape, batch)
  'mlp': ('mlp', {'depth': 2, 'width': 256}, (8, 8, 1), 128),
  'lenet': ('lenet', {}, (28, 28, 1), 128),
  'resnet18': ('resnet18', {'num_classes': 10}, (32, 32, 3), 32),
  'resnet18_cifar': ('resnet18', {'num_classes': 10, 'cifar_stem': True}, (32, 32, 3), 32),
  'resnet50': ('resnet50', {'num_classes': 10}, (64, 64, 3), 16),
}
CNNS = ('lenet', 'resnet18', 'resnet50')


def jax_step(name, conv_impl=None):
  """A closure running one bigjax train step on a fixed batch (compiled and warmed up)."""
  model_name, kw, shape, batch = CASES[name]
  if conv_impl is not None:
    kw = {**kw, 'conv_impl': conv_impl}
  model = bigjax.create_model(model_name, **kw)
  config = ml_collections.ConfigDict(
    {'train': {'label_smoothing': 0.0}, 'data': {}, 'optim': {'grad_accum_steps': 1}, 'model': {}}
  )
  schedule = optax.constant_schedule(1e-3)
  tx = optim.make_optimizer(ml_collections.ConfigDict({'name': 'adam'}), schedule)
  rng = np.random.default_rng(0)
  data = {
    'image': rng.normal(size=(batch, *shape)).astype(np.float32),
    'label': rng.integers(0, 10, batch).astype(np.int32),
  }
  state = init_state(model, tx, jax.random.key(0), (data['image'][:1],))
  step = jax.jit(
    make_train_step(model, get_task('classification'), config, schedule, tx), donate_argnums=0
  )
  data = jax.device_put(data)
  key = jax.random.key(1)
  box = [state]

  def run():
    box[0], m = step(box[0], data, key)
    jax.block_until_ready(m)

  for _ in range(5):
    run()
  return run


def _torch_resnet(block, stage_sizes, cifar_stem, num_classes=10):
  """torchvision-style ResNet v1.5, written out with torch.nn (torchvision is not assumed)."""
  from torch import nn

  def conv_bn(ci, co, k, s):
    return [nn.Conv2d(ci, co, k, s, k // 2, bias=False), nn.BatchNorm2d(co)]

  class Block(nn.Module):
    def __init__(self, ci, width, stride):
      super().__init__()
      exp = 4 if block == 'bottleneck' else 1
      layout = ((1, False), (3, True), (1, False)) if exp == 4 else ((3, True), (3, False))
      layers, c = [], ci
      for i, (k, strided) in enumerate(layout):
        last = i == len(layout) - 1
        layers += conv_bn(c, width * exp if last else width, k, stride if strided else 1)
        if not last:
          layers.append(nn.ReLU(inplace=True))
        c = width
      self.body = nn.Sequential(*layers)
      self.down = None
      if stride != 1 or ci != width * exp:
        self.down = nn.Sequential(*conv_bn(ci, width * exp, 1, stride))
      self.out = width * exp

    def forward(self, x):
      return (self.body(x) + (x if self.down is None else self.down(x))).relu()

  k, s = (3, 1) if cifar_stem else (7, 2)
  layers = [*conv_bn(3, 64, k, s), nn.ReLU(inplace=True)]
  if not cifar_stem:
    layers.append(nn.MaxPool2d(3, 2, 1))
  c = 64
  for i, n in enumerate(stage_sizes):
    for j in range(n):
      b = Block(c, 64 * 2**i, 2 if i > 0 and j == 0 else 1)
      layers.append(b)
      c = b.out
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
  return nn.Sequential(*layers)


def torch_step(name):
  import torch
  from torch import nn

  _, kw, shape, batch = CASES[name]
  if name == 'mlp':
    d = int(np.prod(shape))
    net = nn.Sequential(
      nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
  elif name == 'lenet':  # LeNet-5 with 'SAME' padding at 28x28, as bigjax's lenet
    net = nn.Sequential(
      nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
      nn.Linear(16 * 7 * 7, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip
  elif name.startswith('resnet18'):
    net = _torch_resnet('basic', (2, 2, 2, 2), kw.get('cifar_stem', False))
  else:
    net = _torch_resnet('bottleneck', (3, 4, 6, 3), False)
  net.train()
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  rng = np.random.default_rng(0)
  x = torch.tensor(rng.normal(size=(batch, shape[2], shape[0], shape[1])).astype(np.float32))
  y = torch.tensor(rng.integers(0, 10, batch))
  loss_fn = nn.CrossEntropyLoss()

  def run():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()

  for _ in range(5):
    run()
  return run


def interleaved(runs, steps, rounds):
  """Median ms/step of each closure in `runs`, alternating step by step.

  Each of the `steps * rounds` turns runs every closure once, in an order rotated by one per
  turn, so that load from other processes (which comes and goes within seconds on a shared
  machine) hits each closure alike; alternating in blocks of many steps let one side take a
  burst of load alone and moved the ratio by up to 1.5x in a run.
  """
  times = {k: [] for k in runs}
  keys = list(runs)
  for turn in range(steps * rounds):
    r = turn % len(keys)
    for k in keys[r:] + keys[:r]:
      t = time.perf_counter()
      runs[k]()
      times[k].append(time.perf_counter() - t)
  return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--models', default='mlp,lenet,resnet18,resnet18_cifar')
  parser.add_argument('--conv_impls', default='xla,auto')
  args = parser.parse_args()
  import torch

  print(
    f'jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, '
    f'torch threads {torch.get_num_threads()}'
  )
  print(
    '| case | batch | image | conv_impl | bigjax ms/step | PyTorch ms/step | PyTorch / bigjax |'
  )
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for name in args.models.split(','):
    model_name, _, shape, batch = CASES[name]
    impls = args.conv_impls.split(',') if model_name in CNNS else [None]
    runs = {impl: jax_step(name, impl) for impl in impls}
    runs['torch'] = torch_step(name)
    ms = interleaved(runs, args.steps, args.rounds)
    t = ms['torch']
    for impl in impls:
      j = ms[impl]
      image = 'x'.join(map(str, shape))
      print(
        f'| {name} | {batch} | {image} | {impl or "-"} | {j:.2f} | {t:.2f} | {t / j:.2f} |',
        flush=True,
      )


if __name__ == '__main__':
  main()
