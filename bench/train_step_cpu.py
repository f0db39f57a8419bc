"""Train-step throughput of bigjax against the PyTorch peer, side by side, same run.

  .venv/bin/python bench/train_step_cpu.py [--steps 200] [--models mlp,lenet]
  .venv/bin/python bench/train_step_cpu.py --models lstm_lm,gru_lm --set rnn_impl=fused

Same architecture, batch, optimiser (Adam) and float32 on both sides; reports median
milliseconds per step over `steps` after warm-up (compilation excluded for JAX).
Not a test: numbers go to bench/RESULTS.md with the date and machine.
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

# The byte LMs at configs/lstm_pystdlib.py's shapes (vocab 256, embed 64, width 512, 128 bytes).
RNN_LM = {'vocab_size': 256, 'embed_dim': 64, 'hidden_size': 512, 'num_layers': 1}
CASES = {
  # name: (model overrides, example shape: image [H, W, C] or tokens [T], batch)
  'mlp': ({'depth': 2, 'width': 256}, (8, 8, 1), 128),
  'lenet': ({}, (28, 28, 1), 128),
  'lstm_lm': (RNN_LM, (128,), 32),
  'gru_lm': (RNN_LM, (128,), 32),
}


def _is_lm(name):
  return len(CASES[name][1]) == 1


def bench_jax(name, steps, overrides=None):
  kw, shape, batch = CASES[name]
  model = bigjax.create_model(name, **kw, **(overrides or {}))
  config = ml_collections.ConfigDict(
    {'train': {'label_smoothing': 0.0}, 'data': {}, 'optim': {'grad_accum_steps': 1}, 'model': {}}
  )
  schedule = optax.constant_schedule(1e-3)
  tx = optim.make_optimizer(ml_collections.ConfigDict({'name': 'adam'}), schedule)
  rng = np.random.default_rng(0)
  if _is_lm(name):
    tokens = rng.integers(1, kw['vocab_size'], (batch, shape[0] + 1)).astype(np.int32)
    data = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}
    task, example = get_task('lm'), data['inputs'][:1]
  else:
    data = {
      'image': rng.normal(size=(batch, *shape)).astype(np.float32),
      'label': rng.integers(0, 10, batch).astype(np.int32),
    }
    task, example = get_task('classification'), data['image'][:1]
  state = init_state(model, tx, jax.random.key(0), (example,))
  step = jax.jit(make_train_step(model, task, config, schedule, tx), donate_argnums=0)
  data = jax.device_put(data)
  key = jax.random.key(1)
  for _ in range(10):
    state, m = step(state, data, key)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = step(state, data, key)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return statistics.median(times) * 1e3


def bench_torch(name, steps):
  import torch
  from torch import nn

  kw, shape, batch = CASES[name]
  if _is_lm(name):
    return _bench_torch_lm(name, steps)
  if name == 'mlp':
    d = int(np.prod(shape))
    net = nn.Sequential(
      nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
  else:  # LeNet-5 with 'SAME' padding at 28x28, as bigjax's lenet
    net = nn.Sequential(
      nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
      nn.Linear(16 * 7 * 7, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  rng = np.random.default_rng(0)
  x = torch.tensor(rng.normal(size=(batch, shape[2], shape[0], shape[1])).astype(np.float32))
  y = torch.tensor(rng.integers(0, 10, batch))
  loss_fn = nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    return loss

  return _time_torch(step, steps)


def _bench_torch_lm(name, steps):
  """Embedding, one torch.nn.LSTM / GRU layer (batch-first) and a linear head."""
  import torch
  from torch import nn

  kw, (length,), batch = CASES[name]
  v, e, h = kw['vocab_size'], kw['embed_dim'], kw['hidden_size']
  rnn_cls = nn.LSTM if name.startswith('lstm') else nn.GRU
  embed, rnn, head = (
    nn.Embedding(v, e),
    rnn_cls(e, h, kw['num_layers'], batch_first=True),
    nn.Linear(h, v),
  )
  params = [*embed.parameters(), *rnn.parameters(), *head.parameters()]
  opt = torch.optim.Adam(params, lr=1e-3)
  rng = np.random.default_rng(0)
  tokens = torch.tensor(rng.integers(1, v, (batch, length + 1)))
  x, y = tokens[:, :-1], tokens[:, 1:]
  loss_fn = nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    out, _ = rnn(embed(x))
    loss = loss_fn(head(out).reshape(-1, v), y.reshape(-1))
    loss.backward()
    opt.step()
    return loss

  return _time_torch(step, steps)


def _time_torch(step, steps):
  for _ in range(10):
    step()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
  return statistics.median(times) * 1e3


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--models', default='mlp,lenet')
  parser.add_argument(
    '--set',
    action='append',
    default=[],
    metavar='KEY=VALUE',
    help='bigjax model override, e.g. --set rnn_impl=fused --set scan_unroll=2',
  )
  args = parser.parse_args()
  overrides = {}
  for item in args.set:
    key, value = item.split('=', 1)
    overrides[key] = int(value) if value.lstrip('-').isdigit() else value
  import torch

  print(
    f'jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, '
    f'torch threads {torch.get_num_threads()}'
  )
  print('| model | batch | bigjax ms/step | PyTorch ms/step | PyTorch / bigjax |')
  print('| --- | --- | --- | --- | --- |')
  for name in args.models.split(','):
    j, t = bench_jax(name, args.steps, overrides), bench_torch(name, args.steps)
    print(f'| {name} | {CASES[name][2]} | {j:.3f} | {t:.3f} | {t / j:.2f} |')


if __name__ == '__main__':
  main()
