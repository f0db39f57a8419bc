"""The config skeleton every experiment fills in, and the pieces several experiments share.

Imports only ml_collections.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Every section with its defaults; experiments override what they need."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Resuming a workdir with settings that differ from its config.json (other than logging,
  # evaluation, checkpoint and I/O settings, the mesh and init_from) is refused unless True.
  c.allow_changes = False
  c.model = ml_collections.ConfigDict({'name': 'mlp'})
  # Fine-tuning (bigjax.train.init_from): a bigjax workdir or a Hugging Face style folder
  # (config.json + *.safetensors) whose parameters are loaded where name and shape match;
  # the rest start fresh. Ignored when the workdir already holds a checkpoint (resume).
  c.init_from = ''
  # Regex over '/'-joined parameter names (re.search) that are initialised fresh even when
  # the source has them with the same shape, e.g. '^head/' for a new classifier; a name in
  # both with another shape is an error unless this matches it.
  c.init_from_skip = ''
  # True: the loaded parameters get no updates (no optimiser state, no weight decay).
  c.freeze_loaded = False
  # What the trainer optimises and reports (bigjax.train.tasks): 'classification', 'lm',
  # 'seq2seq'; '' = the data set's default.
  c.task = ml_collections.ConfigDict({'name': ''})
  # Knowledge distillation (bigjax.train.distill): a frozen teacher's soft targets (and
  # optionally feature hints and attention maps) join the task's loss.
  c.distill = ml_collections.ConfigDict(
    {
      # '' = off; a bigjax workdir (latest checkpoint), <workdir>/checkpoints/<step>, or a
      # Hugging Face folder (config.json + model.safetensors).
      'teacher': '',
      'teacher_ema': False,  # a bigjax teacher's moving average (its train.ema_decay > 0)
      'loss': 'kl',  # 'kl' | 'reverse_kl' | 'mse' | 'topk'
      'alpha': 0.5,  # weight of the soft loss; the task's own loss gets 1 - alpha
      'temperature': 2.0,
      'top_k': 0,  # 'topk' loss and the precomputed store: the teacher's k likeliest classes
      'precompute': False,  # True: teacher outputs computed once, read by example index
      'hints': '',  # 'student_path:teacher_path,...' of sown intermediates ('features:features')
      'hint_weight': 0.0,
      'attention_weight': 0.0,
      'attention_layers': '',  # 'i:j,...' student:teacher layers; '' = spread evenly
    }
  )
  c.data = ml_collections.ConfigDict(
    {
      'name': 'digits',
      'data_dir': '',  # '' -> TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR)
      'train_split': '',  # '' -> the dataset's own default
      'eval_split': '',
      'workers': 0,  # Grain worker processes; 0 reads in the main process
      'workdir': '',  # set by nothing: datasets that save files (tokenizers) use it
    }
  )
  c.optim = ml_collections.ConfigDict(
    {
      'name': 'adamw',
      'lr': 1e-3,
      'weight_decay': 0.0,
      'momentum': 0.9,
      'b1': 0.9,
      'b2': 0.999,
      'eps': 1e-8,
      'clip_norm': 0.0,  # 0 = no clipping
      # Regex over '/'-joined parameter paths (re.search) that weight decay applies to;
      # '' = kernels only (no biases, norm scales, embeddings, position embeddings, tokens).
      'decay_pattern': '',
      # Split each update's train.batch_size examples into k micro-batches run one after
      # another in the same step (less memory, same update); steps still count updates.
      'grad_accum_steps': 1,
      # Layer-wise learning-rate decay (ELECTRA, Clark et al., 2020; BEiT, Bao et al., 2022):
      # the learning rate of a parameter at depth k of L + 1 is scaled by d^(L + 1 - k):
      # embeddings 0, block_{i} i + 1, final norm / pooler / heads L + 1. 1.0 = off.
      'layer_decay': 1.0,
    }
  )
  c.schedule = ml_collections.ConfigDict({'name': 'cosine', 'warmup_steps': 0, 'end_factor': 0.0})
  c.train = ml_collections.ConfigDict(
    {
      'steps': 1000,  # every step count here and in `schedule` counts optimiser updates
      'batch_size': 128,  # the global batch of one update (all devices, all micro-batches)
      'eval_batch_size': 256,
      'eval_steps': -1,  # -1 = the whole eval split
      'log_every': 100,
      'eval_every': 500,  # 0 = only at the end
      'checkpoint_every': 500,
      'keep_checkpoints': 3,
      'compute_dtype': 'float32',
      'label_smoothing': 0.0,
      'aux_loss_weight': 0.4,  # weight of each auxiliary head (ModelOutput.aux_logits)
      # On many hosts, how often (in steps) the processes agree on a SIGTERM / SIGINT; after
      # a signal every host stops within this many steps and saves the same checkpoint.
      'stop_check_every': 10,
      # Donate the state's buffers to the jitted step (updated in place: half the state's
      # memory); False keeps the state passed in usable after the step (debugging).
      'donate': True,
      # A folder for jax's persistent compilation cache: a rerun loads the compiled step
      # instead of compiling it again; '' = off.
      'compilation_cache_dir': '',
      # Flags appended to XLA_FLAGS before jax starts its backend (e.g.
      # '--xla_gpu_enable_latency_hiding_scheduler=true'); '' = none.
      'xla_flags': '',
      # Peak TFLOP/s of one device for the MFU in the training log; 0 = the spec sheet of a
      # known GPU (bigjax.train.flops.PEAK_TFLOPS), or a measured matmul on a CPU.
      'peak_tflops': 0.0,
      # Memory of one device in GB for the "will it fit" check before the first step
      # (bigjax.train.memory); 0 = what the device reports (its bytes_limit), on a CPU the
      # host's memory shared by its local devices.
      'device_memory_gb': 0.0,
      # An update whose loss or gradients are not finite is never applied. 'halt': at the
      # next logging step, save the last good state and exit with code 3 naming the step;
      # 'skip': go on, and halt after max_nonfinite_skips such updates in a row; 'off': apply
      # every update as it is.
      'nonfinite': 'halt',
      # > 0: also keep an exponential moving average of the parameters (e.g. 0.999), evaluated
      # beside them (ema_* metrics) and selectable with --ema in generate / restore_from_workdir.
      'ema_decay': 0.0,
      'max_nonfinite_skips': 10,
    }
  )
  # Mesh axis sizes (data=-1 takes the devices the others leave) and the sharding rules
  # preset (bigjax.layers.partitioning.PRESETS; 'auto' shards over every axis of size > 1).
  c.mesh = ml_collections.ConfigDict(
    {'data': -1, 'fsdp': 1, 'expert': 1, 'tensor': 1, 'rules': 'auto'}
  )
  return c


def image_stats(name: str) -> dict:
  """Per-channel mean/std on the 0..1 scale for the image datasets the configs use."""
  return {
    'digits': {'mean': (0.30,), 'std': (0.38,)},
    'mnist': {'mean': (0.1307,), 'std': (0.3081,)},
    'cifar10': {'mean': (0.4914, 0.4822, 0.4465), 'std': (0.2470, 0.2435, 0.2616)},
    'imagenet2012': {'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)},
  }[name]


def imagenet_data(image_size: int, *, mixup_alpha: float, cutmix_alpha: float) -> dict:
  """`data` settings for ImageNet-1k (TFDS `imagenet2012`): random-resized ('inception') crops
  and flips at `image_size` for training, resize + centre crop at evaluation."""
  return {
    'name': 'imagenet2012',
    'image_size': image_size,
    'augment': 'inception',
    'flip': True,
    'mixup_alpha': mixup_alpha,
    'cutmix_alpha': cutmix_alpha,
    **image_stats('imagenet2012'),
  }


def shrink_for_test(c: ml_collections.ConfigDict) -> None:
  """Makes a config run in seconds on CPU: a few steps, small batches, frequent saves."""
  c.train.update(steps=6, batch_size=16, eval_batch_size=16, eval_steps=2)
  c.train.update(log_every=2, eval_every=4, checkpoint_every=3)
  c.schedule.warmup_steps = min(c.schedule.warmup_steps, 2)


def is_test(arg: str | None) -> bool:
  """True for the `test` argument, False for none; any other argument is a user error."""
  if arg == 'test':
    return True
  if arg:
    raise ValueError(f'unknown config argument {arg!r}: use no argument or "test"')
  return False


def distill_args(arg: str | None) -> tuple[bool, bool]:
  """(test, scratch) of a distillation demo's argument: '', 'test', 'scratch' or
  'scratch,test'. 'scratch' is the demo's control: the same student, data, steps and seeds
  with distillation off (`distill.teacher = ''`)."""
  words = set(filter(None, (arg or '').split(',')))
  if words - {'test', 'scratch'}:
    raise ValueError(
      f'unknown config argument {arg!r}: use no argument, "test", "scratch" or "scratch,test"'
    )
  return 'test' in words, 'scratch' in words


def byte_rnn_lm(model: str, *, lr: float, steps: int, test: bool) -> ml_collections.ConfigDict:
  """A one-layer byte-level RNN language model on the `pystdlib` sources.

  The CPU recipe of configs/lstm_pystdlib.py and configs/gru_pystdlib.py, which differ only
  in the model, `lr` and `steps`: width 512 over 64-dim byte embeddings, windows of 128
  bytes, Adam at a high `lr` with clipping at 1, 50 warm-up steps and a cosine decay to 5%,
  one evaluation on the whole validation split at the end. `test` shrinks it for CPU tests.
  """
  c = base_config()
  c.model.update(name=model, vocab_size=256, embed_dim=64, hidden_size=512, num_layers=1)
  c.model.dropout_rate = 0.0  # under one epoch: no overfitting to fight
  c.data.update(name='pystdlib', seq_len=128)
  c.optim.update(name='adam', lr=lr, clip_norm=1.0)
  c.schedule.update(name='cosine', warmup_steps=50, end_factor=0.05)
  # Small batches: more updates for the same bytes, at the same cost per byte on a CPU.
  c.train.update(steps=steps, batch_size=32, eval_batch_size=256, log_every=50)
  c.train.update(eval_every=0, checkpoint_every=500)  # eval only at the end
  if test:
    shrink_for_test(c)
    c.model.update(embed_dim=8, hidden_size=16)
    c.data.seq_len = 16
  return c


def lenet_tfds(
  dataset: str, *, weight_decay: float, train: dict, test: bool
) -> ml_collections.ConfigDict:
  """LeNet-5 on a 10-class TFDS image set at its own size (`mnist`, `cifar10`).

  The recipe of configs/lenet_mnist.py and configs/lenet_cifar10.py, which differ only in
  the data set, the weight decay and the run length (`train`: steps and eval / checkpoint
  intervals): AdamW at lr 1e-3, 200 warm-up steps then cosine, batch 128. `test` shrinks it
  for CPU tests.
  """
  c = base_config()
  c.model.update(name='lenet', num_classes=10)
  c.data.update(name=dataset, image_size=0, **image_stats(dataset))
  c.optim.update(name='adamw', lr=1e-3, weight_decay=weight_decay)
  c.schedule.warmup_steps = 200
  c.train.update(batch_size=128, eval_batch_size=500, **train)
  if test:
    shrink_for_test(c)
  return c


# --- decoder-only LMs (bigjax.models.gpt) on the pystdlib bytes ---------------------------
# The sizes and the recipe the three *_nano_pystdlib configs share, in one place: they differ
# only in the model's block options (`byte_gpt_lm(block=...)`). Timed on 2 idle CPU cores
# (2026-11-29): 2.7 steps/s for the dense models, so 2200 steps fit in 15 minutes with the
# startup and the final evaluation (bench/RESULTS.md).
NANO_SIZE = {'hidden_size': 128, 'num_layers': 4, 'num_heads': 4, 'mlp_dim': 512, 'max_len': 128}
NANO_RECIPE = {
  'seq_len': 128,  # bytes per window (data.seq_len, <= max_len)
  'batch_size': 32,
  'steps': 2200,
  'lr': 5e-3,
  'warmup_steps': 100,
  'end_factor': 0.1,  # cosine decay to 10% of lr
  'weight_decay': 0.1,
  'b2': 0.99,  # nanoGPT's character-level recipe: few tokens per step
  'clip_norm': 1.0,
}
# The `test` variants: the size of the registry's gpt2_test / llama_test / mixtral_test.
TEST_SIZE = {'hidden_size': 32, 'num_layers': 2, 'num_heads': 4, 'mlp_dim': 64, 'max_len': 64}
# GPT-2's block; llama and mixture-of-experts configs override some of these.
GPT2_BLOCK = {
  'position': 'learned',
  'norm': 'layernorm',
  'activation': 'gelu_tanh',
  'gated_mlp': False,
  'use_bias': True,
  'tie_embeddings': True,
}
LLAMA_BLOCK = {
  'position': 'rotary',
  'norm': 'rmsnorm',
  'activation': 'silu',  # SwiGLU
  'gated_mlp': True,
  'use_bias': False,
  'tie_embeddings': False,
  'num_kv_heads': 2,
}


def byte_gpt_lm(
  block: dict, *, mlp_ratio: float = 1.0, test: bool = False
) -> ml_collections.ConfigDict:
  """A byte-level decoder-only LM (`gpt2_small` at NANO_SIZE) on the `pystdlib` sources,
  windows of NANO_RECIPE['seq_len'] bytes with document boundaries (attention stays within a
  file, every byte still a target once: bits per byte compare with lstm_pystdlib).

  `block`: the model's options (GPT2_BLOCK, LLAMA_BLOCK, experts); `mlp_ratio` scales the
  MLP width (2/3 for a gated MLP with the parameters of GPT-2's, and a further 1/2 per
  expert). AdamW with warm-up and a cosine decay, one evaluation on the whole validation
  split at the end. `test` shrinks it to TEST_SIZE and 6 steps for CPU tests.
  """
  r = NANO_RECIPE
  size = dict(TEST_SIZE if test else NANO_SIZE)
  size['mlp_dim'] = max(8, int(round(size['mlp_dim'] * mlp_ratio / 8)) * 8)  # a multiple of 8
  c = base_config()
  c.model.update(name='gpt2_small', vocab_size=256, dropout_rate=0.0, **size, **block)
  c.data.update(name='pystdlib', seq_len=r['seq_len'], doc_boundaries=True)
  c.optim.update(name='adamw', lr=r['lr'], weight_decay=r['weight_decay'], b1=0.9, b2=r['b2'])
  c.optim.clip_norm = r['clip_norm']
  c.schedule.update(name='cosine', warmup_steps=r['warmup_steps'], end_factor=r['end_factor'])
  c.train.update(steps=r['steps'], batch_size=r['batch_size'], eval_batch_size=256)
  c.train.update(log_every=50, eval_every=0, eval_steps=-1, checkpoint_every=500)
  if test:
    shrink_for_test(c)
    c.data.seq_len = 32
  return c
