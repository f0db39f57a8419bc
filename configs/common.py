"""The config skeleton every experiment fills in. Imports only ml_collections."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Every section with its defaults; experiments override what they need."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict({'name': 'mlp'})
  # What the trainer optimises and reports (bigjax.train.tasks): 'classification', 'lm',
  # 'seq2seq'; '' = the data set's default.
  c.task = ml_collections.ConfigDict({'name': ''})
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
    }
  )
  c.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1})
  return c


def image_stats(name: str) -> dict:
  """Per-channel mean/std on the 0..1 scale for the image datasets the configs use."""
  return {
    'digits': {'mean': (0.30,), 'std': (0.38,)},
    'mnist': {'mean': (0.1307,), 'std': (0.3081,)},
    'cifar10': {'mean': (0.4914, 0.4822, 0.4465), 'std': (0.2470, 0.2435, 0.2616)},
    'imagenet2012': {'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)},
  }[name]


def shrink_for_test(c: ml_collections.ConfigDict) -> None:
  """Makes a config run in seconds on CPU: a few steps, small batches, frequent saves."""
  c.train.steps = 6
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  c.train.eval_steps = 2
  c.train.log_every = 2
  c.train.eval_every = 4
  c.train.checkpoint_every = 3
  c.schedule.warmup_steps = min(c.schedule.warmup_steps, 2)
