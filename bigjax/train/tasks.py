"""Tasks: what the trainer optimises and measures, chosen by the config, not by the data.

`config.task.name` picks the task ('' = the data set's default, `Data.task`). A task is five
pure, jit-able functions over a batch (a dict of arrays) and the model's output, seen
through `bigjax.outputs.as_output` (a `ModelOutput`; a plain logits array is accepted):

  inputs(batch) -> tuple        the model's positional inputs.
  weights(batch) -> w           how much each scored element counts: [B] per example, or
                                [B, T] per token; 0 for padding. It reads the batch only, so
                                the train step normalises over a whole update (every
                                micro-batch) before it runs the model.
  loss(outputs, batch) -> l     the per-element loss, shaped like `weights`: the objective of
                                an update is sum(w * l) / sum(w). It includes the auxiliary
                                heads (`outputs.aux_logits`, scored against the same labels
                                with weight `train.aux_loss_weight`) and the model's own
                                `outputs.aux_losses` (scalars, added to every element, so
                                each adds its value to the objective).
  metrics(outputs, batch) -> {name: (sum, count)}, summed over batches and divided at the
                                end, so averages stay right over padded and split batches.
  augment(batch, rng) -> batch  training only, on the whole update batch (mixup, cutmix).

A new objective (masked LM, contrastive, distillation) is a new `Task`, built from the config
by a function registered in `TASKS`. Legend: B batch, T length, C classes, V vocabulary.
"""

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from bigjax import losses
from bigjax.outputs import ModelOutput, as_output
from bigjax.train import augment as augment_lib
from bigjax.typing import Batch, PRNGKey
from bigjax.vocab import PAD_ID

Metrics = dict[str, tuple[jax.Array, jax.Array]]


def _no_augment(batch: Batch, rng: PRNGKey) -> Batch:
  del rng
  return batch


@dataclasses.dataclass(frozen=True)
class Task:
  """The interface the train and eval steps use (see the module docstring)."""

  name: str
  inputs: Callable[[Batch], tuple[Any, ...]]
  weights: Callable[[Batch], jax.Array]
  loss: Callable[[ModelOutput, Batch], jax.Array]
  metrics: Callable[[ModelOutput, Batch], Metrics]
  augment: Callable[[Batch, PRNGKey], Batch] = _no_augment


def _example_mask(batch: Batch, n: int) -> jax.Array:
  return batch['mask'] if 'mask' in batch else jnp.ones((n,), bool)


def _with_aux(outputs: ModelOutput, main: jax.Array, score, aux_weight: float) -> jax.Array:
  """main + aux_weight * score(each auxiliary head) + each model aux loss (a scalar)."""
  total = main
  for logits in outputs.aux_logits.values():
    total = total + aux_weight * score(logits)
  for value in outputs.aux_losses.values():
    total = total + value.astype(jnp.float32)
  return total


def _aux_metrics(outputs: ModelOutput, score, w: jax.Array) -> Metrics:
  """The auxiliary terms on their own: heads as weighted means, model losses per batch."""
  metrics = {}
  count = w.sum()
  for name, logits in outputs.aux_logits.items():
    metrics[f'aux_logits/{name}'] = ((score(logits) * w).sum(), count)
  one = jnp.ones((), jnp.float32)
  for name, value in outputs.aux_losses.items():
    metrics[f'aux_losses/{name}'] = (value.astype(jnp.float32), one)
  return metrics


def _bits_name(tokenizer) -> str:
  """bits_per_byte only when one token is one byte; bits_per_token otherwise."""
  return 'bits_per_byte' if getattr(tokenizer, 'byte_level', False) else 'bits_per_token'


# --- classification -------------------------------------------------------------------


def classification(config: ml_collections.ConfigDict, tokenizer=None) -> Task:
  """Image classification: `image` [B, H, W, C] -> `label` [B] (or soft labels [B, C])."""
  del tokenizer
  smoothing = config.train.get('label_smoothing', 0.0)
  aux_weight = config.train.get('aux_loss_weight', 0.4)
  mixup = config.data.get('mixup_alpha', 0.0)
  cutmix = config.data.get('cutmix_alpha', 0.0)
  num_classes = config.model.get('num_classes', 1000)

  def weights(batch):
    return _example_mask(batch, batch['label'].shape[0]).astype(jnp.float32)

  def loss(outputs, batch):
    outputs = as_output(outputs)

    def score(logits):  # [B]
      return losses.softmax_cross_entropy(logits, batch['label'], label_smoothing=smoothing)

    return _with_aux(outputs, score(outputs.logits), score, aux_weight)

  def metrics(outputs, batch):
    outputs = as_output(outputs)
    logits, labels = outputs.logits, batch['label']
    if labels.ndim == logits.ndim:  # soft labels after mixup: score against the argmax
      labels = jnp.argmax(labels, -1)
    mask = _example_mask(batch, labels.shape[0])
    count = mask.sum()
    ce = lambda x: losses.softmax_cross_entropy(x, labels)  # noqa: E731
    correct = (jnp.argmax(logits, -1) == labels) & mask
    return {
      'loss': (jnp.where(mask, ce(logits), 0.0).sum(), count),
      'accuracy': (correct.sum(), count),
      **_aux_metrics(outputs, ce, mask),
    }

  def augment(batch, rng):
    if not (mixup or cutmix):
      return batch
    onehot = jax.nn.one_hot(batch['label'], num_classes)
    images, labels = augment_lib.mixup_cutmix(
      batch['image'], onehot, rng, mixup_alpha=mixup, cutmix_alpha=cutmix
    )
    return {**batch, 'image': images, 'label': labels}

  return Task('classification', lambda b: (b['image'],), weights, loss, metrics, augment)


# --- token-level tasks: language modelling, sequence to sequence ------------------------


def _token_task(name, inputs, targets_key, config, tokenizer, exact_match=False) -> Task:
  """Every target token counts once: the objective and the metrics are means over tokens
  (targets equal to PAD_ID and examples with mask False are not scored)."""
  smoothing = config.train.get('label_smoothing', 0.0)
  aux_weight = config.train.get('aux_loss_weight', 0.4)
  bits = _bits_name(tokenizer)

  def token_mask(batch):  # [B, T]
    w = batch[targets_key] != PAD_ID
    if 'mask' in batch:
      w = w & batch['mask'][:, None]
    return w

  def weights(batch):
    return token_mask(batch).astype(jnp.float32)

  def loss(outputs, batch):
    outputs = as_output(outputs)

    def score(logits):  # [B, T]
      return losses.softmax_cross_entropy(logits, batch[targets_key], label_smoothing=smoothing)

    return _with_aux(outputs, score(outputs.logits), score, aux_weight)

  def metrics(outputs, batch):
    outputs = as_output(outputs)
    logits, targets = outputs.logits, batch[targets_key]
    w = token_mask(batch)
    count = w.sum()
    ce = lambda x: losses.softmax_cross_entropy(x, targets)  # noqa: E731
    total = jnp.where(w, ce(logits), 0.0).sum()
    correct = (jnp.argmax(logits, -1) == targets) & w
    result = {
      'loss': (total, count),
      'accuracy': (correct.sum(), count),
      bits: (total / math.log(2), count),
      **_aux_metrics(outputs, ce, w),
    }
    if exact_match:
      # All target tokens right under teacher forcing == greedy decoding reproduces them.
      right = (jnp.argmax(logits, -1) == targets) | ~w
      valid = w.any(-1)
      result['exact_match'] = ((right.all(-1) & valid).sum(), valid.sum())
    return result

  return Task(name, inputs, weights, loss, metrics)


def language_model(config: ml_collections.ConfigDict, tokenizer=None) -> Task:
  """Next-token prediction: `inputs` [B, T] -> logits [B, T, V] against `targets` [B, T]."""
  return _token_task('lm', lambda b: (b['inputs'],), 'targets', config, tokenizer)


def seq2seq(config: ml_collections.ConfigDict, tokenizer=None) -> Task:
  """Teacher-forced translation: (`src`, `tgt_in`) -> logits against `tgt_out` [B, T]."""
  return _token_task(
    'seq2seq', lambda b: (b['src'], b['tgt_in']), 'tgt_out', config, tokenizer, exact_match=True
  )


# name -> builder(config, tokenizer) -> Task
TASKS: dict[str, Callable[..., Task]] = {
  'classification': classification,
  'lm': language_model,
  'seq2seq': seq2seq,
}


def _defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'train': {}, 'data': {}, 'model': {}})


def get_task(name: str, config: ml_collections.ConfigDict | None = None, tokenizer=None) -> Task:
  """The task `name` built from `config` (defaults: no smoothing, no mixup)."""
  if name not in TASKS:
    raise ValueError(
      f'unknown task {name!r}: set --config.task.name to one of {", ".join(TASKS)} '
      f"(or '' for the data set's default)"
    )
  return TASKS[name](_defaults() if config is None else config, tokenizer)


def task_for(config: ml_collections.ConfigDict, data) -> Task:
  """The task the config names, or the data set's default; metrics are named by the data
  set's tokenizer (`Data.tokenizer`, None for images)."""
  name = config.get('task', {}).get('name', '') or data.task
  return get_task(name, config, getattr(data, 'tokenizer', None))
