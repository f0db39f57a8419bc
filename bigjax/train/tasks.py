"""What the trainer optimises and measures for each kind of data.

A task maps a batch to the model's inputs, and logits to per-example losses and to
metrics as (sum, count) pairs, so metrics average correctly over padded eval batches.
Legend: B batch, T length, C classes, V vocabulary.
"""

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from bigjax import losses
from bigjax.typing import Batch, PRNGKey

Metrics = dict[str, tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  inputs: Callable[[Batch], tuple[Any, ...]]
  # (outputs, batch, config) -> (per-example loss [B], example weight [B])
  loss: Callable[[Any, Batch, ml_collections.ConfigDict], tuple[jax.Array, jax.Array]]
  metrics: Callable[[Any, Batch], Metrics]
  # (batch, rng, config) -> batch, applied in the train step only (e.g. mixup)
  augment: Callable[[Batch, PRNGKey, ml_collections.ConfigDict], Batch] = (
    lambda batch, rng, config: batch
  )


def _example_mask(batch: Batch, n: int) -> jax.Array:
  return batch['mask'] if 'mask' in batch else jnp.ones((n,), bool)


def main_logits(outputs):
  """Models may return (logits, aux_logits) in training; metrics use the main head."""
  return outputs[0] if isinstance(outputs, tuple) else outputs


# --- classification -------------------------------------------------------------------


def _cls_loss(outputs, batch, config):
  mask = _example_mask(batch, batch['label'].shape[0])
  smoothing = config.train.get('label_smoothing', 0.0)
  ce = lambda logits: losses.softmax_cross_entropy(  # noqa: E731
    logits, batch['label'], label_smoothing=smoothing, where=mask
  )
  if isinstance(outputs, tuple):  # auxiliary classifier (Inception v3)
    logits, aux = outputs
    return ce(logits) + config.train.get('aux_loss_weight', 0.4) * ce(aux), mask
  return ce(outputs), mask


def _cls_metrics(outputs, batch):
  logits = main_logits(outputs)
  labels = batch['label']
  if labels.ndim == logits.ndim:  # soft labels after mixup: score against the argmax
    labels = jnp.argmax(labels, -1)
  mask = _example_mask(batch, labels.shape[0])
  count = mask.sum()
  loss = losses.softmax_cross_entropy(logits, labels, where=mask)
  correct = (jnp.argmax(logits, -1) == labels) & mask
  return {'loss': (loss.sum(), count), 'accuracy': (correct.sum(), count)}


def _cls_augment(batch, rng, config):
  mixup = config.data.get('mixup_alpha', 0.0)
  cutmix = config.data.get('cutmix_alpha', 0.0)
  if not (mixup or cutmix):
    return batch
  from bigjax.data.images import mixup_cutmix

  num_classes = config.model.get('num_classes', 1000)
  onehot = jax.nn.one_hot(batch['label'], num_classes)
  images, labels = mixup_cutmix(batch['image'], onehot, rng, mixup_alpha=mixup, cutmix_alpha=cutmix)
  return {**batch, 'image': images, 'label': labels}


# --- language modelling ------------------------------------------------------------------


def _token_weights(batch, targets):
  w = targets >= 0
  if 'mask' in batch:
    w = w & batch['mask'][:, None]
  return w


def _lm_loss(outputs, batch, config):
  targets = batch['targets']
  w = _token_weights(batch, targets)
  per_token = losses.softmax_cross_entropy(
    outputs, targets, label_smoothing=config.train.get('label_smoothing', 0.0), where=w
  )  # [B, T]
  return per_token.sum(-1) / jnp.maximum(w.sum(-1), 1), w.any(-1).astype(jnp.float32)


def _token_metrics(logits, targets, w):
  count = w.sum()
  loss = losses.softmax_cross_entropy(logits, targets, where=w)
  correct = (jnp.argmax(logits, -1) == targets) & w
  return {
    'loss': (loss.sum(), count),
    'accuracy': (correct.sum(), count),
    'bits_per_token': (loss.sum() / math.log(2), count),
  }


def _lm_metrics(outputs, batch):
  targets = batch['targets']
  metrics = _token_metrics(outputs, targets, _token_weights(batch, targets))
  metrics['bits_per_byte'] = metrics.pop('bits_per_token')  # byte-level vocabulary
  return metrics


# --- sequence to sequence ---------------------------------------------------------------


def _s2s_weights(batch):
  w = batch['tgt_out'] != 0  # pad id 0
  if 'mask' in batch:
    w = w & batch['mask'][:, None]
  return w


def _s2s_loss(outputs, batch, config):
  w = _s2s_weights(batch)
  per_token = losses.softmax_cross_entropy(
    outputs,
    batch['tgt_out'],
    label_smoothing=config.train.get('label_smoothing', 0.0),
    where=w,
  )  # [B, T]
  # Token-level average, as in the Transformer paper: weight each sequence by its length.
  return per_token.sum(-1) / jnp.maximum(w.sum(-1), 1), w.sum(-1).astype(jnp.float32)


def _s2s_metrics(outputs, batch):
  targets = batch['tgt_out']
  w = _s2s_weights(batch)
  metrics = _token_metrics(outputs, targets, w)
  # All target tokens right under teacher forcing == greedy decoding reproduces them.
  right = (jnp.argmax(outputs, -1) == targets) | ~w
  valid = w.any(-1)
  metrics['exact_match'] = ((right.all(-1) & valid).sum(), valid.sum())
  return metrics


TASKS = {
  'classification': Task(
    'classification', lambda b: (b['image'],), _cls_loss, _cls_metrics, _cls_augment
  ),
  'lm': Task('lm', lambda b: (b['inputs'],), _lm_loss, _lm_metrics),
  'seq2seq': Task('seq2seq', lambda b: (b['src'], b['tgt_in']), _s2s_loss, _s2s_metrics),
}


def get_task(name: str) -> Task:
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}; choose one of {", ".join(TASKS)}')
  return TASKS[name]
