"""bigjax beside its PyTorch peers: training-step time, throughput, time to the first step,
peak memory and MFU, one model at a time, each side in its own process.

  PYTHONPATH=. python bench/suite.py [--small] [--models gpt2,bert,...] [--steps N]
      [--json out.json] [--table out.md] [--ablate [MODEL]] [--repeat R] [--budget S]

Default: the GPU shapes (bf16 compute with fp32 master weights on both sides: bigjax's
`dtype` field, torch autocast) against Hugging Face `transformers` / torch.nn peers, with
`torch.compile` where it helps the peer. `--small`: CPU-sized shapes in float32 against
PyTorch eager with torch.nn / HF peers (no torchvision), torch threads = the core count.

Each measurement runs in a fresh subprocess (JAX preallocates GPU memory and peak-memory
counters are process-wide) with a timeout; `--repeat R` alternates the two sides R times and
keeps the medians. Per side: median ms per step after warm-up (device synchronised every
step), examples/s and tokens/s, time to the first step (model construction, initialisation,
compilation and the first finished step), peak device memory (jax `peak_bytes_in_use`,
`torch.cuda.max_memory_allocated`; on CPU the process's max RSS) and MFU. Both sides are
charged the bigjax FLOP count of the same shapes (`bigjax.train.flops`); the peak is the
spec sheet of a known GPU or a measured matmul on a CPU. The ratio is torch ms / bigjax ms:
above 1 means bigjax is faster.

Only jax, flax, optax, numpy, torch and transformers are needed (no ml_collections, tfds or
grain): the bigjax side builds its step from `bigjax.create_model`, `make_train_step` and
`bigjax.train.optim` with a `PlainConfig`. Not a test; numbers go to bench/RESULTS.md.
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark row: the bigjax model and its PyTorch peer on the same shapes.

  task: 'lm' | 'mlm' | 'classification' | 'seq2seq'; shape: (T,) for token tasks, (H, W, C)
  for images; vocab / classes: the output size; peer: a key of PEERS with its options;
  fast: the bigjax fast-path overrides (model fields and train.* switches), each dropped with
  a note when the model does not have it; compile: torch.compile the peer.
  """

  model: str
  overrides: dict
  task: str
  batch: int
  shape: tuple
  peer: str
  peer_options: dict
  fast: dict = dataclasses.field(default_factory=dict)
  compile: bool = False


# The fast paths by their config names (model.* fields, train.* switches); a model without a
# field runs without it (with a printed note). attention_impl 'auto' is cuDNN's fused kernel
# on a GPU in bf16 (causal without a mask, key padding as lengths) and XLA elsewhere.
GPT_FAST = {
  'attention_impl': 'auto',
  'scan_layers': False,  # unrolled: XLA schedules across the layers
  'remat_policy': None,  # H200 memory holds every activation at these shapes
  'loss_chunk': 0,
  'vocab_multiple': 128,  # GPT-2's 50,257 rows padded to 50,304
  'train.compute_dtype': 'bfloat16',
  'train.donate': True,
}
# XLA flags tried in the GPU ablation (one row with them on): the latency-hiding scheduler
# overlaps independent kernels and copies.
GPU_XLA_FLAGS = '--xla_gpu_enable_latency_hiding_scheduler=true'
ENCODER_FAST = {'attention_impl': 'auto', 'train.compute_dtype': 'bfloat16', 'train.donate': True}
CNN_FAST = {'conv_impl': 'auto', 'train.compute_dtype': 'bfloat16', 'train.donate': True}
RNN_FAST = {'rnn_impl': 'fused', 'train.compute_dtype': 'bfloat16', 'train.donate': True}
CPU_FAST = {'train.donate': True}
# On CPU (float32): what measured fastest on 2 cores; `--ablate` tries the other setting.
CPU_GPT_FAST = {
  'attention_impl': 'auto',
  'scan_layers': False,
  'remat_policy': None,
  'loss_chunk': 0,
  'vocab_multiple': 1,
  **CPU_FAST,
}
CPU_ENCODER_FAST = {'attention_impl': 'auto', 'scan_layers': False, **CPU_FAST}
CPU_CNN_FAST = {'conv_impl': 'auto', **CPU_FAST}
CPU_RNN_FAST = {'rnn_impl': 'fused', 'scan_unroll': 1, **CPU_FAST}

GPT2 = dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072, max_len=1024)
LLAMA = dict(
  position='rotary',
  norm='rmsnorm',
  activation='silu',
  gated_mlp=True,
  use_bias=False,
  tie_embeddings=False,
)

GPU_CASES = {
  'gpt2': Case(
    'gpt2_small',
    {'vocab_size': 50257, 'dropout_rate': 0.0},
    'lm',
    16,
    (1024,),
    'hf_gpt2',
    {},
    GPT_FAST,
    compile=True,
  ),
  'bert': Case(
    'bert_base',
    {'head': 'mlm', 'pooler': False, 'dropout_rate': 0.0},
    'mlm',
    32,
    (512,),
    'hf_bert',
    {},
    ENCODER_FAST,
  ),
  'resnet50': Case(
    'resnet50', {}, 'classification', 256, (224, 224, 3), 'resnet', {}, CNN_FAST, compile=True
  ),
  'vit': Case('vit_b16', {}, 'classification', 128, (224, 224, 3), 'hf_vit', {}, ENCODER_FAST),
  'transformer': Case(
    'transformer_base',
    {'dropout_rate': 0.0, 'max_len': 256},
    'seq2seq',
    64,
    (256,),
    'torch_transformer',
    {},
    ENCODER_FAST,
    compile=True,
  ),
  'lstm': Case(
    'lstm_lm',
    {'embed_dim': 1024, 'hidden_size': 1024, 'num_layers': 2},
    'lm',
    64,
    (256,),
    'torch_lstm',
    {},
    RNN_FAST,
  ),
  'llama': Case(
    'gpt2_small',
    {
      **LLAMA,
      'vocab_size': 32000,
      'hidden_size': 1024,
      'num_layers': 8,
      'num_heads': 16,
      'num_kv_heads': 4,
      'mlp_dim': 2816,
    },
    'lm',
    16,
    (1024,),
    'hf_llama',
    {},
    GPT_FAST,
    compile=True,
  ),
  'mixtral': Case(
    'gpt2_small',
    {
      **LLAMA,
      'vocab_size': 32000,
      'hidden_size': 768,
      'num_layers': 6,
      'num_heads': 12,
      'num_kv_heads': 4,
      'mlp_dim': 1536,
      'num_experts': 8,
      'experts_per_token': 2,
    },
    'lm',
    16,
    (1024,),
    'hf_mixtral',
    {},
    GPT_FAST,
  ),
}

SMALL_GPT = dict(hidden_size=256, num_layers=4, num_heads=4, mlp_dim=1024, max_len=128)
SMALL_CASES = {
  'mlp': Case(
    'mlp', {'depth': 2, 'width': 256}, 'classification', 128, (8, 8, 1), 'mlp', {}, CPU_FAST
  ),
  'gpt2': Case(
    'gpt2_small',
    {**SMALL_GPT, 'vocab_size': 256, 'vocab_multiple': 1, 'dropout_rate': 0.0},
    'lm',
    8,
    (128,),
    'hf_gpt2',
    {},
    CPU_GPT_FAST,
  ),
  'bert': Case(
    'bert_base',
    {
      'hidden_size': 256,
      'num_layers': 4,
      'num_heads': 4,
      'mlp_dim': 1024,
      'vocab_size': 2048,
      'max_positions': 128,
      'head': 'mlm',
      'pooler': False,
      'dropout_rate': 0.0,
    },
    'mlm',
    8,
    (128,),
    'hf_bert',
    {},
    CPU_ENCODER_FAST,
  ),
  'resnet18': Case(
    'resnet18', {'num_classes': 10}, 'classification', 32, (32, 32, 3), 'resnet', {}, CPU_CNN_FAST
  ),
  'resnet18_cifar': Case(
    'resnet18',
    {'num_classes': 10, 'cifar_stem': True},
    'classification',
    32,
    (32, 32, 3),
    'resnet',
    {},
    CPU_CNN_FAST,
  ),
  'resnet50': Case(
    'resnet50', {'num_classes': 10}, 'classification', 32, (32, 32, 3), 'resnet', {}, CPU_CNN_FAST
  ),
  'vit': Case(
    'vit_ti4',
    {'num_classes': 10, 'head_zero_init': False},
    'classification',
    32,
    (32, 32, 3),
    'hf_vit',
    {},
    CPU_ENCODER_FAST,
  ),
  'transformer': Case(
    'transformer_base',
    {
      'vocab_size': 1024,
      'hidden_size': 256,
      'num_heads': 4,
      'mlp_dim': 1024,
      'num_encoder_layers': 2,
      'num_decoder_layers': 2,
      'dropout_rate': 0.0,
      'max_len': 64,
    },
    'seq2seq',
    16,
    (64,),
    'torch_transformer',
    {},
    CPU_ENCODER_FAST,
  ),
  'lstm': Case(
    'lstm_lm',
    {'embed_dim': 64, 'hidden_size': 512, 'num_layers': 1},
    'lm',
    32,
    (128,),
    'torch_lstm',
    {},
    CPU_RNN_FAST,
  ),
}
DEFAULT_ABLATE = 'gpt2'


# --- the bigjax side ---------------------------------------------------------------------


def _vocab(case: Case, model) -> int:
  return int(getattr(model, 'vocab_size', 0) or case.overrides.get('vocab_size', 0))


def make_batch(case: Case, vocab: int, classes: int, seed: int = 0) -> dict:
  """A synthetic batch of `case` as numpy arrays (token ids avoid 0, the pad id)."""
  import numpy as np

  rng = np.random.default_rng(seed)
  b = case.batch

  def tokens(*shape):
    return rng.integers(1, vocab, shape).astype(np.int32)

  if case.task == 'classification':
    image = rng.normal(size=(b, *case.shape)).astype(np.float32)
    return {'image': image, 'label': rng.integers(0, classes, b).astype(np.int32)}
  (t,) = case.shape
  if case.task == 'lm':
    return {'inputs': tokens(b, t), 'targets': tokens(b, t)}
  if case.task == 'seq2seq':
    return {'src': tokens(b, t), 'tgt_in': tokens(b, t), 'tgt_out': tokens(b, t)}
  ids = tokens(b, t)
  labels = np.where(rng.random((b, t)) < 0.15, tokens(b, t), -1).astype(np.int32)
  return {'input_ids': ids, 'segment_ids': np.zeros((b, t), np.int32), 'mlm_labels': labels}


def split_fast(case: Case, fast: dict, fields: set) -> tuple[dict, dict, list[str]]:
  """(model overrides, train switches, notes): the fast paths the model accepts."""
  model, train, notes = {}, {}, []
  for key, value in fast.items():
    if key.startswith(('train.', 'optim.')):
      train[key] = value
    elif key in fields:
      model[key] = value
    else:
      notes.append(f'{case.model} has no field {key!r}: run without it')
  return model, train, notes


def run_bigjax(case: Case, steps: int, warmup: int, fast: dict) -> dict:
  """Times `case` on bigjax in this process; returns the measurements."""
  t_start = time.perf_counter()
  import jax
  import jax.numpy as jnp
  import optax

  import bigjax
  from bigjax.registry import model_spec
  from bigjax.train import flops, optim, runtime
  from bigjax.train.plain_config import PlainConfig
  from bigjax.train.state import init_state
  from bigjax.train.step import make_train_step
  from bigjax.train.tasks import get_task

  cls, _ = model_spec(case.model)
  fields = set(cls.__dataclass_fields__)
  model_fast, train, notes = split_fast(case, fast, fields)
  switches = {k.split('.', 1)[1]: v for k, v in train.items() if k.startswith('train.')}
  accum = int(train.get('optim.grad_accum_steps', 1))
  runtime.apply(switches)
  dtype = switches.get('compute_dtype', 'float32')
  overrides = {**case.overrides, **model_fast}
  if dtype != 'float32' and 'dtype' in fields:
    overrides['dtype'] = {'bfloat16': jnp.bfloat16, 'float16': jnp.float16}[dtype]
  t_model = time.perf_counter()
  model = bigjax.create_model(case.model, **overrides)
  classes = int(getattr(model, 'num_classes', 10) or 10)
  config = PlainConfig(
    {
      'train': {'label_smoothing': 0.0},
      'data': {},
      'model': {'num_classes': classes},
      'optim': {'grad_accum_steps': accum},
    }
  )
  task = get_task(case.task, config)
  batch = make_batch(case, _vocab(case, model), classes)
  inputs = task.inputs(batch)
  schedule = optax.constant_schedule(1e-4)
  tx = optim.make_optimizer(PlainConfig({'name': 'adam'}), schedule)
  state = jax.jit(lambda rng: init_state(model, tx, rng, tuple(x[:1] for x in inputs)))(
    jax.random.key(0)
  )
  donate = 0 if switches.get('donate', True) else ()
  step = jax.jit(make_train_step(model, task, config, schedule, tx), donate_argnums=donate)
  batch = jax.device_put(batch)
  key = jax.random.key(1)
  state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - t_model
  for _ in range(max(warmup - 1, 0)):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  loss = float(metrics['loss'][0] / metrics['loss'][1])
  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  if stats and 'peak_bytes_in_use' in stats:
    memory, memory_source = int(stats['peak_bytes_in_use']), 'device peak'
  else:
    memory, memory_source = _max_rss(), 'process max RSS'
  peak, peak_source = flops.peak_flops(dtype, device=device)
  return {
    'ms': statistics.median(times) * 1e3,
    'first_step_s': first,
    'startup_s': t_model - t_start,
    'memory_bytes': memory,
    'memory_source': memory_source,
    'loss': loss,
    'flops_per_step': float(flops.train_step_flops(model, inputs)),
    'tokens_per_step': case.batch * flops.tokens_per_example(inputs),
    'peak_flops': peak,
    'peak_source': peak_source,
    'device': getattr(device, 'device_kind', device.platform),
    'versions': {'jax': jax.__version__, 'flax': _version('flax'), 'optax': optax.__version__},
    'notes': notes,
    'settings': {**{k: str(v) for k, v in overrides.items()}, **train, 'dtype': dtype},
  }


def _version(name: str) -> str:
  try:
    from importlib.metadata import version

    return version(name)
  except Exception:  # noqa: BLE001 - a version is informational
    return '?'


def _max_rss() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# --- the PyTorch side --------------------------------------------------------------------


def _torch_resnet(nn, stages, block, classes, cifar_stem, width=64):
  """torchvision's ResNet (v1.5: stride on the 3x3) in torch.nn, as bigjax's resnet."""

  class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, c, stride):
      super().__init__()
      self.body = nn.Sequential(
        nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
      )  # fmt: skip
      self.short = _shortcut(cin, c, stride)

    def forward(self, x):
      return (self.body(x) + self.short(x)).relu()

  class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, c, stride):
      super().__init__()
      self.body = nn.Sequential(
        nn.Conv2d(cin, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        nn.Conv2d(c, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        nn.Conv2d(c, 4 * c, 1, bias=False), nn.BatchNorm2d(4 * c),
      )  # fmt: skip
      self.short = _shortcut(cin, 4 * c, stride)

    def forward(self, x):
      return (self.body(x) + self.short(x)).relu()

  def _shortcut(cin, cout, stride):
    if stride == 1 and cin == cout:
      return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  unit = Basic if block == 'basic' else Bottleneck
  if cifar_stem:
    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
  else:
    layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
    layers.append(nn.MaxPool2d(3, 2, 1))
  cin = width
  for i, n in enumerate(stages):
    for j in range(n):
      layers.append(unit(cin, width * 2**i, 2 if (i and not j) else 1))
      cin = width * 2**i * unit.expansion
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
  return nn.Sequential(*layers)


def build_peer(case: Case, model_opts: dict, classes: int):
  """(module, forward(batch) -> loss) of the PyTorch peer of `case`; `model_opts` are the
  bigjax model's options (class defaults, registry defaults, the case's overrides)."""
  import torch
  from torch import nn
  from torch.nn import functional as F

  o, peer = {**model_opts, **case.peer_options}, case.peer
  ce = F.cross_entropy
  if peer == 'mlp':
    d = math.prod(case.shape)
    w = o['width']
    net = nn.Sequential(
      nn.Flatten(), nn.Linear(d, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, classes)
    )
    return net, lambda b: ce(net(b['image']), b['label'])
  if peer == 'resnet':
    net = _torch_resnet(nn, o['stage_sizes'], o['block'], classes, o['cifar_stem'], o['width'])
    return net, lambda b: ce(net(b['image']), b['label'])
  if peer == 'torch_lstm':

    class LM(nn.Module):
      def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(o['vocab_size'], o['embed_dim'])
        self.rnn = nn.LSTM(o['embed_dim'], o['hidden_size'], o['num_layers'], batch_first=True)
        self.head = nn.Linear(o['hidden_size'], o['vocab_size'])

      def forward(self, x):
        return self.head(self.rnn(self.embed(x))[0])

    net = LM()
    return net, lambda b: ce(net(b['inputs']).flatten(0, 1).float(), b['targets'].flatten())
  if peer == 'torch_transformer':
    d, t = o['hidden_size'], case.shape[0]

    class Seq2Seq(nn.Module):
      def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(o['vocab_size'], d)
        pos = torch.arange(t)[:, None] / 10000 ** (torch.arange(0, d, 2) / d)
        self.register_buffer('pos', torch.cat([pos.sin(), pos.cos()], -1))
        self.core = nn.Transformer(
          d, o['num_heads'], o['num_encoder_layers'], o['num_decoder_layers'], o['mlp_dim'],
          dropout=0.0, batch_first=True,
        )  # fmt: skip
        self.register_buffer('causal', nn.Transformer.generate_square_subsequent_mask(t))

      def forward(self, src, tgt):
        e = self.embed(src) * d**0.5 + self.pos
        y = self.embed(tgt) * d**0.5 + self.pos
        h = self.core(e, y, tgt_mask=self.causal, tgt_is_causal=True)
        return h @ self.embed.weight.T  # tied output, as bigjax's

    net = Seq2Seq()
    return net, lambda b: ce(
      net(b['src'], b['tgt_in']).flatten(0, 1).float(), b['tgt_out'].flatten()
    )
  import transformers as tr

  if peer in ('hf_gpt2',):
    cfg = tr.GPT2Config(
      vocab_size=o['vocab_size'], n_positions=o.get('max_len', 1024), n_embd=o['hidden_size'],
      n_layer=o['num_layers'], n_head=o['num_heads'], n_inner=o['mlp_dim'],
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    net = tr.GPT2LMHeadModel(cfg)
  elif peer in ('hf_llama', 'hf_mixtral'):
    common = dict(
      vocab_size=o['vocab_size'], hidden_size=o['hidden_size'], intermediate_size=o['mlp_dim'],
      num_hidden_layers=o['num_layers'], num_attention_heads=o['num_heads'],
      num_key_value_heads=o['num_kv_heads'], max_position_embeddings=case.shape[0],
      tie_word_embeddings=False,
    )  # fmt: skip
    if peer == 'hf_llama':
      net = tr.LlamaForCausalLM(tr.LlamaConfig(**common))
    else:
      cfg = tr.MixtralConfig(
        **common, num_local_experts=o['num_experts'], num_experts_per_tok=o['experts_per_token']
      )
      net = tr.MixtralForCausalLM(cfg)
  if peer in ('hf_gpt2', 'hf_llama', 'hf_mixtral'):

    def lm_loss(b):
      logits = net(input_ids=b['inputs']).logits
      return ce(logits.flatten(0, 1).float(), b['targets'].flatten())

    return net, lm_loss
  if peer == 'hf_bert':
    cfg = tr.BertConfig(
      vocab_size=o['vocab_size'], hidden_size=o['hidden_size'], num_hidden_layers=o['num_layers'],
      num_attention_heads=o['num_heads'], intermediate_size=o['mlp_dim'],
      max_position_embeddings=o.get('max_positions', 512), hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    net = tr.BertForMaskedLM(cfg)

    def mlm_loss(b):
      logits = net(input_ids=b['input_ids'], token_type_ids=b['segment_ids']).logits
      return ce(logits.flatten(0, 1).float(), b['mlm_labels'].flatten().long(), ignore_index=-1)

    return net, mlm_loss
  if peer == 'hf_vit':
    cfg = tr.ViTConfig(
      image_size=case.shape[0], patch_size=o['patch_size'],
      hidden_size=o['hidden_size'], num_hidden_layers=o['num_layers'],
      num_attention_heads=o['num_heads'], intermediate_size=o['mlp_dim'],
      num_labels=classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    net = tr.ViTForImageClassification(cfg)
    return net, lambda b: ce(net(pixel_values=b['image']).logits, b['label'])
  raise ValueError(f'unknown peer {peer!r}')


def run_torch(case: Case, steps: int, warmup: int, small: bool) -> dict:
  """Times the PyTorch peer of `case` in this process."""
  t_start = time.perf_counter()
  import numpy as np
  import torch

  cuda = torch.cuda.is_available() and not small
  dev = torch.device('cuda' if cuda else 'cpu')
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  from bigjax.registry import model_spec  # the defaults of the bigjax model, for the shapes

  cls, defaults = model_spec(case.model)
  fields = {
    k: f.default
    for k, f in cls.__dataclass_fields__.items()
    if f.default is not dataclasses.MISSING
  }
  model_opts = {**fields, **defaults, **case.overrides}
  classes = int(model_opts.get('num_classes', 1000))
  vocab = int(model_opts.get('vocab_size', 0))
  t_model = time.perf_counter()
  net, loss_fn = build_peer(case, model_opts, classes)
  net = net.to(dev).train()
  batch = make_batch(case, vocab, classes)
  if 'image' in batch:  # NHWC -> NCHW
    batch['image'] = np.ascontiguousarray(batch['image'].transpose(0, 3, 1, 2))
  batch = {k: torch.from_numpy(v).to(dev) for k, v in batch.items()}
  if cuda and case.task == 'classification' and case.peer == 'resnet':
    net = net.to(memory_format=torch.channels_last)
    batch['image'] = batch['image'].contiguous(memory_format=torch.channels_last)
  for k in ('label', 'targets', 'tgt_out', 'inputs', 'src', 'tgt_in', 'input_ids'):
    if k in batch:
      batch[k] = batch[k].long()
  opt = torch.optim.Adam(net.parameters(), lr=1e-4, **({'fused': True} if cuda else {}))
  forward = torch.compile(loss_fn) if (case.compile and cuda) else loss_fn

  def step():
    opt.zero_grad(set_to_none=True)
    if cuda:
      with torch.autocast('cuda', dtype=torch.bfloat16):
        loss = forward(batch)
    else:
      loss = forward(batch)
    loss.backward()
    opt.step()
    return loss

  sync = torch.cuda.synchronize if cuda else (lambda: None)
  loss = step()
  sync()
  first = time.perf_counter() - t_model
  for _ in range(max(warmup - 1, 0)):
    loss = step()
  sync()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    loss = step()
    sync()
    times.append(time.perf_counter() - t)
  if cuda:
    memory, source = int(torch.cuda.max_memory_allocated()), 'device peak'
  else:
    memory, source = _max_rss(), 'process max RSS'
  return {
    'ms': statistics.median(times) * 1e3,
    'first_step_s': first,
    'startup_s': t_model - t_start,
    'memory_bytes': memory,
    'memory_source': source,
    'loss': float(loss),
    'device': torch.cuda.get_device_name() if cuda else 'cpu',
    'versions': {'torch': torch.__version__, 'transformers': _version('transformers')},
    'compiled': bool(case.compile and cuda),
    'threads': torch.get_num_threads(),
  }


# --- the driver --------------------------------------------------------------------------


def _worker(args) -> None:
  cases = SMALL_CASES if args.small else GPU_CASES
  case = cases[args.name]
  fast = json.loads(args.fast) if args.fast else case.fast
  if args.side == 'bigjax':
    result = run_bigjax(case, args.steps, args.warmup, fast)
  else:
    result = run_torch(case, args.steps, args.warmup, args.small)
  print('RESULT ' + json.dumps(result), flush=True)


def _spawn(side: str, name: str, args, timeout: float, fast: dict | None = None) -> dict:
  """Runs one side of one case in a fresh process; its result, or {'error': ...}."""
  cmd = [sys.executable, os.path.abspath(__file__), '--worker', side, '--name', name]
  cmd += ['--steps', str(args.steps), '--warmup', str(args.warmup)]
  cmd += ['--small'] if args.small else []
  cmd += ['--fast', json.dumps(fast)] if fast is not None else []
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')])}
  if args.small:
    env.setdefault('JAX_PLATFORMS', 'cpu')
  if side == 'torch':
    # The torch side imports bigjax's registry for the shapes: keep jax off the GPU there
    # (it would preallocate most of the device's memory).
    env['JAX_PLATFORMS'] = 'cpu'
  t = time.perf_counter()
  try:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(timeout, 1))
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout:.0f}s'}
  for line in reversed(out.stdout.splitlines()):
    if line.startswith('RESULT '):
      result = json.loads(line[len('RESULT ') :])
      result['wall_s'] = time.perf_counter() - t
      return result
  tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ['no output']
  return {'error': f'exit {out.returncode}: {tail[0][:300]}'}


def _median_runs(runs: list[dict]) -> dict:
  good = [r for r in runs if 'error' not in r]
  if not good:
    return runs[-1]
  result = dict(good[-1])
  for key in ('ms', 'first_step_s', 'memory_bytes'):
    result[key] = statistics.median(r[key] for r in good)
  result['runs'] = len(good)
  return result


def _with_rates(side: dict, cost: dict) -> dict:
  """Adds throughput and MFU from the bigjax FLOP count and peak (`cost`)."""
  if 'error' in side:
    return side
  per_sec = 1e3 / side['ms']
  side['examples_per_sec'] = cost['batch'] * per_sec
  if cost.get('tokens_per_step'):
    side['tokens_per_sec'] = cost['tokens_per_step'] * per_sec
  if cost.get('flops_per_step'):
    side['tflops_per_sec'] = cost['flops_per_step'] * per_sec / 1e12
    side['mfu'] = cost['flops_per_step'] * per_sec / cost['peak_flops']
  return side


class Clock:
  """The time left of `--budget` seconds (inf without one)."""

  def __init__(self, budget: float):
    self.end = time.perf_counter() + budget if budget > 0 else math.inf

  def left(self) -> float:
    return self.end - time.perf_counter()


def measure(name: str, case: Case, args, clock: Clock) -> dict:
  """Both sides of one case, alternating `args.repeat` times."""
  runs = {'bigjax': [], 'torch': []}
  for _ in range(args.repeat):
    for side in ('bigjax', 'torch'):
      if clock.left() < 5:
        runs[side].append({'error': 'skipped: out of the time budget'})
        continue
      fast = case.fast if side == 'bigjax' else None
      runs[side].append(_spawn(side, name, args, min(args.timeout, clock.left()), fast=fast))
  jx, pt = _median_runs(runs['bigjax']), _median_runs(runs['torch'])
  plain = {k: v for k, v in case.fast.items() if k.startswith(('train.', 'optim.'))}
  if 'error' in jx and plain != case.fast and clock.left() > 5:
    # A fast path the model does not support on this device (say cuDNN attention with a
    # padding mask) must not cost the row: measure without the model-level ones.
    failed = jx['error']
    jx = _spawn('bigjax', name, args, min(args.timeout, clock.left()), fast=plain)
    jx.setdefault('notes', []).append(f'with the fast paths: {failed}; measured without them')
  row = {'name': name, 'model': case.model, 'task': case.task, 'batch': case.batch}
  row['shape'] = list(case.shape)
  cost = {'batch': case.batch}
  if 'error' not in jx:
    for key in ('flops_per_step', 'tokens_per_step', 'peak_flops', 'peak_source', 'device'):
      row[key] = cost[key] = jx[key]
  row['bigjax'], row['torch'] = _with_rates(jx, cost), _with_rates(pt, cost)
  if 'error' not in jx and 'error' not in pt:
    row['ratio'] = pt['ms'] / jx['ms']  # above 1: bigjax is faster
  return row


# The other setting of each fast path in an ablation: (value in the case -> the one tried).
ALTERNATIVES = {
  'attention_impl': lambda v: 'xla' if v in ('auto', 'cudnn') else 'auto',
  'scan_layers': lambda v: not v,
  'remat_policy': lambda v: 'dots_no_batch' if v is None else None,
  'loss_chunk': lambda v: 2048 if not v else 0,
  'rnn_impl': lambda v: 'scan' if v == 'fused' else 'fused',
  'conv_impl': lambda v: 'xla' if v != 'xla' else 'auto',
  'scan_unroll': lambda v: 4 if v == 1 else 1,
  'vocab_multiple': lambda v: 1 if v != 1 else 128,
  'train.compute_dtype': lambda v: 'float32' if v != 'float32' else 'bfloat16',
  'train.donate': lambda v: not v,
}


def ablate(name: str, case: Case, args, clock: Clock) -> list[dict]:
  """bigjax's step with the case's fast-path settings, then with each switched to its other
  setting in turn (ALTERNATIVES), then grad accumulation, XLA flags (GPU) and the persistent
  compilation cache (cold, then warm)."""
  rows = []
  variants = [('as configured', case.fast)]
  for key, value in case.fast.items():
    if key in ALTERNATIVES:
      other = ALTERNATIVES[key](value)
      variants.append((f'{key}={other}', {**case.fast, key: other}))
  if not args.small and 'train.xla_flags' not in case.fast:
    variants.append(
      (f'train.xla_flags={GPU_XLA_FLAGS}', {**case.fast, 'train.xla_flags': GPU_XLA_FLAGS})
    )
  if case.batch % 2 == 0 and 'optim.grad_accum_steps' not in case.fast:
    variants.append(('optim.grad_accum_steps=2', {**case.fast, 'optim.grad_accum_steps': 2}))
  with tempfile.TemporaryDirectory() as cache:
    # The persistent compilation cache: the first run fills it, the second loads from it;
    # the row is the second (its `first_step_s` is the time to the first step, warm).
    cached = {**case.fast, 'train.compilation_cache_dir': cache}
    variants += [
      ('compilation cache (cold: filling)', cached),
      ('compilation cache (warm)', cached),
    ]
    for label, fast in variants:
      if clock.left() < 5:
        break
      result = _spawn('bigjax', name, args, min(args.timeout, clock.left()), fast=fast)
      rows.append({'variant': label, **_with_rates(result, {'batch': case.batch, **result})})
  return rows


def _fmt(value, spec: str, scale: float = 1.0) -> str:
  return 'n/a' if value is None else format(value * scale, spec)


def table(rows: list[dict], small: bool) -> str:
  """The markdown table of `rows`."""
  mem = 'max RSS MB' if small else 'peak mem GB'
  mem_scale = 1e-6 if small else 1e-9
  head = (
    f'| model | batch x shape | bigjax ms | torch ms | torch/bigjax | bigjax ex/s | torch ex/s '
    f'| bigjax tok/s | torch tok/s | bigjax MFU | torch MFU | bigjax 1st step s '
    f'| torch 1st step s | bigjax {mem} | torch {mem} |'
  )
  lines = [head, '|' + '|'.join([' --- '] * (head.count('|') - 1)) + '|']
  for r in rows:
    j, t = r['bigjax'], r['torch']

    def cell(side, key, spec, scale=1.0):
      return f'error: {side["error"]}'[:60] if 'error' in side else _fmt(side.get(key), spec, scale)

    shape = 'x'.join(str(s) for s in r['shape'])
    lines.append(
      f'| {r["name"]} ({r["model"]}) | {r["batch"]} x {shape} | {cell(j, "ms", ".1f")} '
      f'| {cell(t, "ms", ".1f")} | {_fmt(r.get("ratio"), ".2f")} '
      f'| {cell(j, "examples_per_sec", ".4g")} | {cell(t, "examples_per_sec", ".4g")} '
      f'| {cell(j, "tokens_per_sec", ".4g")} | {cell(t, "tokens_per_sec", ".4g")} '
      f'| {cell(j, "mfu", ".1%")} | {cell(t, "mfu", ".1%")} '
      f'| {cell(j, "first_step_s", ".1f")} | {cell(t, "first_step_s", ".1f")} '
      f'| {cell(j, "memory_bytes", ".3g", mem_scale)} '
      f'| {cell(t, "memory_bytes", ".3g", mem_scale)} |'
    )
  return '\n'.join(lines)


def ablation_table(name: str, rows: list[dict]) -> str:
  lines = [f'Ablation of {name} (bigjax only):', '', '| variant | ms/step | MFU | 1st step s |']
  lines.append('| --- | --- | --- | --- |')
  for r in rows:
    if 'error' in r:
      lines.append(f'| {r["variant"]} | error: {r["error"][:80]} | | |')
    else:
      lines.append(
        f'| {r["variant"]} | {r["ms"]:.1f} | {_fmt(r.get("mfu"), ".1%")} '
        f'| {r["first_step_s"]:.1f} |'
      )
  return '\n'.join(lines)


def _setting(item: str, parser) -> tuple[str, object]:
  key, sep, text = item.partition('=')
  if not sep or not key:
    parser.error(f'--set takes KEY=VALUE, got {item!r}')
  try:
    return key, json.loads(text)
  except json.JSONDecodeError:
    return key, text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--small', action='store_true', help='CPU shapes, float32, torch eager')
  parser.add_argument('--models', default='', help='comma-separated case names (default: all)')
  parser.add_argument('--steps', type=int, default=10, help='timed steps after warm-up')
  parser.add_argument('--warmup', type=int, default=3, help='steps before timing (1st included)')
  parser.add_argument('--repeat', type=int, default=1, help='alternate the sides R times')
  parser.add_argument('--json', default='', help='write the results here')
  parser.add_argument('--table', default='', help='write the markdown table here')
  parser.add_argument('--ablate', nargs='?', const=DEFAULT_ABLATE, default='', help='a model')
  parser.add_argument('--timeout', type=float, default=600.0, help='seconds per subprocess')
  parser.add_argument('--budget', type=float, default=0.0, help='seconds in all (0 = none)')
  parser.add_argument(
    '--set',
    action='append',
    default=[],
    metavar='KEY=VALUE',
    help='a fast-path setting for every bigjax row (model field or train.*/optim.* key; the '
    'value is read as JSON, else as a string), e.g. --set conv_impl=xla',
  )
  parser.add_argument('--worker', choices=('bigjax', 'torch'), dest='side', help=argparse.SUPPRESS)
  parser.add_argument('--name', help=argparse.SUPPRESS)
  parser.add_argument('--fast', default='', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.side:
    _worker(args)
    return 0
  cases = SMALL_CASES if args.small else GPU_CASES
  if args.set:
    settings = dict(_setting(item, parser) for item in args.set)
    cases = {k: dataclasses.replace(c, fast={**c.fast, **settings}) for k, c in cases.items()}
  names = [n for n in args.models.split(',') if n] or list(cases)
  unknown = [n for n in names + ([args.ablate] if args.ablate else []) if n not in cases]
  if unknown:
    parser.error(f'unknown model(s) {unknown}; choose from {", ".join(cases)}')
  for flag, value, low in (('steps', args.steps, 1), ('warmup', args.warmup, 1),
                           ('repeat', args.repeat, 1), ('timeout', args.timeout, 1e-9),
                           ('budget', args.budget, 0)):  # fmt: skip
    if value < low:
      parser.error(f'--{flag} must be at least {low:g}, got {value:g}')
  clock = Clock(args.budget)
  started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  rows = []
  for name in names:
    row = measure(name, cases[name], args, clock)
    rows.append(row)
    print(f'{name}: ' + json.dumps({k: v for k, v in row.items() if k not in ('bigjax', 'torch')}))
    for side in ('bigjax', 'torch'):
      for note in row[side].get('notes', []):
        print(f'  note ({side}): {note}')
      if 'error' in row[side]:
        print(f'  {side} error: {row[side]["error"]}')
  ablation = ablate(args.ablate, cases[args.ablate], args, clock) if args.ablate else []
  versions = {}
  for r in rows:
    for side in ('bigjax', 'torch'):
      versions.update(r[side].get('versions', {}))
  meta = {
    'date': started,
    'mode': 'small (CPU shapes, float32, torch eager)' if args.small else 'GPU (bf16 compute)',
    'host': platform.node(),
    'cpus': os.cpu_count(),
    'python': platform.python_version(),
    'versions': versions,
    'steps': args.steps,
    'warmup': args.warmup,
    'repeat': args.repeat,
  }
  text = f'{meta["mode"]}, {meta["date"]}, {versions}\n\n' + table(rows, args.small)
  if ablation:
    text += '\n\n' + ablation_table(args.ablate, ablation)
  print(text)
  if args.table:
    with open(args.table, 'w') as f:
      f.write(text + '\n')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'meta': meta, 'rows': rows, 'ablation': ablation}, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
