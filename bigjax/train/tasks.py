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
                                A bare array instead of a pair is a raw total (a confusion
                                matrix): summed the same way and left to `finalize`.
  augment(batch, rng) -> batch  training only, on the whole update batch (mixup, cutmix).
  eval_inputs(batch) -> tuple   optional: the model's inputs at evaluation, when they differ
                                (the contrastive task adds its zero-shot prompts); None: inputs.

and, optionally, for metrics that are not means over examples (F1, correlations):

  collect(outputs, batch) -> {name: [B]}   eval only: per-example values, gathered on the
                                host over the whole eval set with padding (`mask`) dropped.
  finalize(totals, collected) -> {name: float}   at the end of an eval: metrics from the
                                summed raw totals and the gathered values (numpy arrays).
                                Train logs show the (sum, count) metrics only.

Every task also reports the model's own terms: each `outputs.aux_losses` entry as
aux_losses/<name> and each `outputs.metrics` entry (a scalar as <name>, a vector [N] as
<name>/0 ... <name>/N-1), as means over batches (`_model_metrics`).

A new objective (masked LM, contrastive, distillation) is a new `Task`, built from the config
by a function registered in `TASKS`. Legend: B batch, T length, C classes, V vocabulary,
K zero-shot prompts, E embedding width, N eval set size.
"""

import dataclasses
import inspect
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bigjax import losses
from bigjax.layers.audio import mu_law_encode
from bigjax.outputs import ModelOutput, as_output
from bigjax.train import augment as augment_lib
from bigjax.train.plain_config import PlainConfig
from bigjax.typing import Batch, Config, PRNGKey
from bigjax.vocab import PAD_ID

Metrics = dict[str, tuple[jax.Array, jax.Array] | jax.Array]
Totals = dict[str, np.ndarray]


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
  collect: Callable[[ModelOutput, Batch], dict[str, jax.Array]] | None = None
  finalize: Callable[[Totals, Totals], dict[str, float]] | None = None
  eval_inputs: Callable[[Batch], tuple[Any, ...]] | None = None


def _example_mask(batch: Batch, n: int) -> jax.Array:
  return batch['mask'] if 'mask' in batch else jnp.ones((n,), bool)


def _with_aux(outputs: ModelOutput, main: jax.Array, score, aux_weight: float) -> jax.Array:
  """main + aux_weight * score(each auxiliary head) + each model aux loss (a scalar)."""
  total = main
  for logits in outputs.aux_logits.values():
    total = total + aux_weight * score(logits)
  return _plus_model_losses(outputs, total)


def _plus_model_losses(outputs: ModelOutput, main: jax.Array) -> jax.Array:
  """main + each of the model's own losses (scalars, so each adds its value)."""
  for value in outputs.aux_losses.values():
    main = main + value.astype(jnp.float32)
  return main


def _aux_metrics(outputs: ModelOutput, score, w: jax.Array) -> Metrics:
  """The auxiliary terms on their own: heads as weighted means, model losses per batch."""
  metrics = {}
  count = w.sum()
  for name, logits in outputs.aux_logits.items():
    metrics[f'aux_logits/{name}'] = ((score(logits) * w).sum(), count)
  return {**metrics, **_model_metrics(outputs)}


def _model_metrics(outputs: ModelOutput) -> Metrics:
  """The model's own losses (aux_losses/<name>) and measurements (`outputs.metrics`: a
  scalar as <name>, a vector as <name>/<i>), each a mean over batches (count 1 a batch)."""
  one = jnp.ones((), jnp.float32)
  result = {f'aux_losses/{k}': (v.astype(jnp.float32), one) for k, v in outputs.aux_losses.items()}
  for name, value in outputs.metrics.items():
    value = jnp.asarray(value, jnp.float32)
    if value.ndim == 0:
      result[name] = (value, one)
    else:
      for i, v in enumerate(value.reshape(-1)):
        result[f'{name}/{i}'] = (v, one)
  return result


def _bits_name(tokenizer) -> str:
  """bits_per_byte only when one token is one byte; bits_per_token otherwise."""
  return 'bits_per_byte' if getattr(tokenizer, 'byte_level', False) else 'bits_per_token'


# --- classification -------------------------------------------------------------------


def _label_objective(config: Config):
  """(weights, loss) of one class `label` per example [B] (or soft labels [B, C]):
  cross-entropy with train.label_smoothing, auxiliary heads weighted by
  train.aux_loss_weight; shared by image and text classification.

  A batch with `labelled` [B] bool (`data.labelled_examples`) scores the labels of its
  labelled rows only: an unlabelled row's label terms (main and auxiliary heads) are 0,
  yet its weight stays, so the objective is still a mean over all examples and another
  term (distillation) can teach them. Model aux losses are added as ever."""
  smoothing = config.train.get('label_smoothing', 0.0)
  aux_weight = config.train.get('aux_loss_weight', 0.4)

  def weights(batch):
    return _example_mask(batch, batch['label'].shape[0]).astype(jnp.float32)

  def loss(outputs, batch):
    outputs = as_output(outputs)

    def score(logits):  # [B]
      ce = losses.softmax_cross_entropy(logits, batch['label'], label_smoothing=smoothing)
      return jnp.where(batch['labelled'], ce, 0.0) if 'labelled' in batch else ce

    return _with_aux(outputs, score(outputs.logits), score, aux_weight)

  return weights, loss


def classification(config: Config, tokenizer=None) -> Task:
  """Classification of `data.input_key` (default 'image' [B, H, W, C]; 'audio' [B, N] for
  speech) -> `label` [B] (or soft labels [B, C]). Mixup and cutmix need images."""
  del tokenizer
  key = config.data.get('input_key', 'image')
  mixup = config.data.get('mixup_alpha', 0.0)
  cutmix = config.data.get('cutmix_alpha', 0.0)
  if (mixup or cutmix) and key != 'image':
    raise ValueError(f'data.mixup_alpha and data.cutmix_alpha need images, not {key!r}: set 0')
  num_classes = config.model.get('num_classes', 1000)
  weights, loss = _label_objective(config)

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
    inputs, labels = augment_lib.mixup_cutmix(
      batch[key], onehot, rng, mixup_alpha=mixup, cutmix_alpha=cutmix
    )
    return {**batch, key: inputs, 'label': labels}

  return Task('classification', lambda b: (b[key],), weights, loss, metrics, augment)


# --- token-level tasks: language modelling, sequence to sequence ------------------------


# A raw total [2]: (summed cross-entropy, scored tokens), for the perplexity at eval.
_NLL = 'nll_total'


def perplexity(totals) -> dict[str, float]:
  """exp of the mean cross-entropy per scored token, from the summed raw total."""
  if _NLL not in totals:
    return {}
  total, count = np.asarray(totals[_NLL], np.float64)
  return {'perplexity': math.exp(min(total / max(count, 1.0), 700.0))}


def _token_task(
  name, inputs, targets_key, config, tokenizer, exact_match=False, pad_id=PAD_ID
) -> Task:
  """Every target token counts once: the objective and the metrics are means over tokens.
  Not scored: targets equal to `pad_id` (None: every token is real), inputs with
  segment_ids 0 (padding of a packed row) when the batch has them, examples with mask
  False. At eval also the perplexity (`perplexity`)."""
  smoothing = config.train.get('label_smoothing', 0.0)
  aux_weight = config.train.get('aux_loss_weight', 0.4)
  bits = _bits_name(tokenizer)

  def token_mask(batch):  # [B, T]
    targets = batch[targets_key]
    w = jnp.ones(targets.shape, bool) if pad_id is None else targets != pad_id
    if 'segment_ids' in batch:
      w = w & (batch['segment_ids'] > 0)
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
    token_ce, predicted = losses.cross_entropy_and_argmax(logits, targets)  # one chunked pass
    total = jnp.where(w, token_ce, 0.0).sum()
    correct = (predicted == targets) & w
    result = {
      'loss': (total, count),
      'accuracy': (correct.sum(), count),
      bits: (total / math.log(2), count),
      _NLL: jnp.stack([total, count.astype(total.dtype)]),
      **_aux_metrics(outputs, ce, w),
    }
    if exact_match:
      # All target tokens right under teacher forcing == greedy decoding reproduces them.
      right = (predicted == targets) | ~w
      valid = w.any(-1)
      result['exact_match'] = ((right.all(-1) & valid).sum(), valid.sum())
    return result

  def finalize(totals, collected):
    del collected
    return perplexity(totals)

  return Task(name, inputs, weights, loss, metrics, finalize=finalize)


def _lm_inputs(batch: Batch) -> tuple[jax.Array, ...]:
  if 'segment_ids' in batch:  # packed documents: attention stays within each
    return (batch['inputs'], batch['segment_ids'])
  return (batch['inputs'],)


def language_model(config: Config, tokenizer=None) -> Task:
  """Next-token prediction: `inputs` [B, T] (and `segment_ids` [B, T] for packed documents:
  k > 0 the document, 0 padding) -> logits [B, T, V] against `targets` [B, T].

  A target is scored when it is a real token: not the tokenizer's pad id (every id is real
  when it has none, as GPT-2's vocabulary) and, with segment ids, its input is not padding.
  """
  pad_id = getattr(tokenizer, 'pad_id', PAD_ID)
  return _token_task('lm', _lm_inputs, 'targets', config, tokenizer, pad_id=pad_id)


def seq2seq(config: Config, tokenizer=None) -> Task:
  """Teacher-forced translation: (`src`, `tgt_in`) -> logits against `tgt_out` [B, T]."""
  return _token_task(
    'seq2seq', lambda b: (b['src'], b['tgt_in']), 'tgt_out', config, tokenizer, exact_match=True
  )


# --- raw audio: next-sample prediction (WaveNet) ----------------------------------------


def audio_lm(config: Config, tokenizer=None) -> Task:
  """Next-sample prediction on raw audio (WaveNet, van den Oord et al., 2016): `audio`
  [B, N] in [-1, 1] -> 8-bit mu-law codes c [B, N] (`bigjax.layers.audio.mu_law_encode`,
  model.vocab_size levels); the model reads c[:, :-1] and its logits [B, N - 1, V] are
  scored against c[:, 1:]. Its other inputs follow the model's options: the label
  batch[task.label_key] [B] ('label', the word, by default; 'voice' for the speaker) when
  model.num_labels > 0, then the audio itself (for its log-mel) when model.mel_bands > 0;
  a model with local but no global conditioning still gets the label second (it ignores
  it), so its inputs stay positional.

  Every sample counts once (examples with mask False not at all). A model whose output is
  a discretised logistic mixture (`features['mixture']`) is scored by its NLL
  (`losses.discretized_logistic_mixture_nll`), a categorical one by cross-entropy. Metrics:
  loss (nats per sample), bits_per_sample (loss / ln 2; 8 is a uniform guess) and, for a
  categorical output, accuracy (the likeliest code is the next one).

  data.crop_samples > 0: each training example is a random window of that many samples of
  its clip (cheaper steps; the receptive field should fit well inside it), starting
  uniformly at random among the windows that end before the zeros padding the clip's end
  (the first window when the speech is shorter than the crop); evaluation reads whole
  clips.
  """
  del tokenizer
  levels = int(config.model.get('vocab_size', 256))
  global_ = int(config.model.get('num_labels', 0)) > 0
  local = int(config.model.get('mel_bands', 0)) > 0
  label_key = config.get('task', {}).get('label_key', 'label') or 'label'
  crop = int(config.data.get('crop_samples', 0))
  if crop < 0 or crop == 1:
    raise ValueError(f'data.crop_samples must be 0 (whole clips) or >= 2, got {crop}')

  def codes(batch):  # [B, N]
    return mu_law_encode(batch['audio'], levels)

  def inputs(batch):
    c = codes(batch)[:, :-1]  # [B, N - 1]
    if not (global_ or local):
      return (c,)
    label = batch[label_key].astype(jnp.int32)  # [B]
    return (c, label, batch['audio']) if local else (c, label)

  def weights(batch):
    audio = batch['audio']
    w = jnp.ones((audio.shape[0], audio.shape[1] - 1), jnp.float32)  # [B, N - 1]
    return w * batch['mask'][:, None] if 'mask' in batch else w

  def nll(outputs, batch):  # [B, N - 1] nats
    targets = codes(batch)[:, 1:]
    if 'mixture' in outputs.features:
      return losses.discretized_logistic_mixture_nll(
        outputs.features['mixture'], targets, num_bins=levels
      )
    return losses.softmax_cross_entropy(outputs.logits, targets)

  def loss(outputs, batch):
    outputs = as_output(outputs)
    return _plus_model_losses(outputs, nll(outputs, batch))

  def metrics(outputs, batch):
    outputs = as_output(outputs)
    w = weights(batch) > 0
    count = w.sum()
    total = jnp.where(w, nll(outputs, batch), 0.0).sum()
    result = {
      'loss': (total, count),
      'bits_per_sample': (total / math.log(2), count),
      **_model_metrics(outputs),
    }
    if 'mixture' not in outputs.features:
      right = (jnp.argmax(outputs.logits, -1) == codes(batch)[:, 1:]) & w
      result['accuracy'] = (right.sum(), count)
    return result

  def augment(batch, rng):
    audio = batch['audio']  # [B, N]
    if not crop or crop >= audio.shape[1]:
      return batch
    n = audio.shape[1]
    # One past each clip's last non-zero sample (n for a silent clip): the zeros padding a
    # short clip at the end are no speech, so a window ends before them when it can.
    end = n - jnp.argmax(audio[:, ::-1] != 0, axis=1)  # [B]
    end = jnp.where((audio != 0).any(axis=1), end, n)
    latest = jnp.clip(end - crop, 0, n - crop)  # [B]: the last start that avoids the padding
    starts = jnp.floor(jax.random.uniform(rng, latest.shape) * (latest + 1)).astype(jnp.int32)
    window = jax.vmap(lambda a, s: jax.lax.dynamic_slice(a, (s,), (crop,)))(audio, starts)
    return {**batch, 'audio': window}  # [B, crop]

  return Task('audio_lm', inputs, weights, loss, metrics, augment)


# --- text encoders: masked LM, sentence (pair) classification and regression, tagging, spans


def _text_inputs(batch: Batch) -> tuple[jax.Array, jax.Array]:
  return (batch['input_ids'], batch['segment_ids'])


def masked_lm(config: Config, tokenizer=None) -> Task:
  """BERT pre-training (Devlin et al., 2019): (`input_ids`, `segment_ids`) -> logits
  [B, T, V], scored at the selected positions only (`mlm_labels` != -1), plus next-sentence
  prediction when the batch has `nsp_label` [B] and the model `aux_logits['nsp']` [B, 2].

  The objective is mlm_mean + train.nsp_weight * nsp_mean, BERT's sum of the mean over
  selected tokens and the mean over sentence pairs. The weights are per token, so each
  example's NSP loss is spread over its selected tokens: each carries nsp * (W / E) / n, with
  n the example's selected tokens, W all selected tokens and E the examples with any, in the
  batch the loss sees. Under gradient accumulation that is a micro-batch, and the NSP term
  is the micro-batches' NSP means weighted by their selected tokens (exact when they select
  as many, which fixed-rate masking of full sequences nearly does). An example with no
  selected token adds no NSP loss. 'loss' and 'accuracy' are the MLM's.

  With `mlm_positions` [B, P] in the batch (data.max_predictions = P) they are the model's
  third input, the logits are [B, P, V] at those positions and `mlm_labels` is [B, P].
  """
  smoothing = config.train.get('label_smoothing', 0.0)
  nsp_weight = config.train.get('nsp_weight', 1.0)
  bits = _bits_name(tokenizer)

  def selected(batch):  # [B, T]
    w = batch['mlm_labels'] != -1
    if 'mask' in batch:
      w = w & batch['mask'][:, None]
    return w

  def has_nsp(outputs, batch):  # static: the data and the head decide, not the values
    return 'nsp_label' in batch and 'nsp' in outputs.aux_logits

  def weights(batch):
    return selected(batch).astype(jnp.float32)

  def loss(outputs, batch):
    outputs = as_output(outputs)
    targets = jnp.maximum(batch['mlm_labels'], 0)
    total = losses.softmax_cross_entropy(outputs.logits, targets, label_smoothing=smoothing)
    if has_nsp(outputs, batch):
      w = selected(batch)
      n = w.sum(-1)  # [B]
      per_example = w.sum() / jnp.maximum((n > 0).sum(), 1)  # W / E
      nsp = losses.softmax_cross_entropy(outputs.aux_logits['nsp'], batch['nsp_label'])  # [B]
      total = total + (nsp_weight * nsp * per_example / jnp.maximum(n, 1))[:, None]
    return _plus_model_losses(outputs, total)  # [B, T]

  def metrics(outputs, batch):
    outputs = as_output(outputs)
    labels = batch['mlm_labels']
    w = selected(batch)
    count = w.sum()
    token_ce, predicted = losses.cross_entropy_and_argmax(outputs.logits, jnp.maximum(labels, 0))
    ce = jnp.where(w, token_ce, 0.0).sum()
    correct = (predicted == labels) & w
    result = {
      'loss': (ce, count),
      'accuracy': (correct.sum(), count),
      bits: (ce / math.log(2), count),
      **_model_metrics(outputs),
    }
    if has_nsp(outputs, batch):
      logits, label = outputs.aux_logits['nsp'], batch['nsp_label']
      mask = _example_mask(batch, label.shape[0])
      nsp = losses.softmax_cross_entropy(logits, label, where=mask).sum()
      result['nsp_loss'] = (nsp, mask.sum())
      result['nsp_accuracy'] = (((jnp.argmax(logits, -1) == label) & mask).sum(), mask.sum())
    return result

  def inputs(batch):
    if 'mlm_positions' in batch:  # predict at the P selected positions only
      return (*_text_inputs(batch), batch['mlm_positions'])
    return _text_inputs(batch)

  return Task('mlm', inputs, weights, loss, metrics)


def binary_scores(confusion: np.ndarray) -> dict[str, float]:
  """F1 of class 1 and Matthews' correlation from a [2, 2] confusion matrix (rows: label,
  columns: prediction); 0 where undefined, as scikit-learn."""
  (tn, fp), (fn, tp) = np.asarray(confusion, np.float64)
  f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
  denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  mcc = (tp * tn - fp * fn) / denominator if denominator else 0.0
  return {'f1': f1, 'mcc': mcc}


def text_classification(config: Config, tokenizer=None) -> Task:
  """Sentence (pair) classification, GLUE style: (`input_ids`, `segment_ids`) -> logits
  [B, C] against `label` [B]. Loss and accuracy always; with two classes also the F1 of
  class 1 (MRPC, QQP) and Matthews' correlation (CoLA), from the confusion matrix summed
  over the whole eval set."""
  del tokenizer
  weights, loss = _label_objective(config)

  def metrics(outputs, batch):
    outputs = as_output(outputs)
    logits, labels = outputs.logits, batch['label']
    mask = _example_mask(batch, labels.shape[0])
    count = mask.sum()
    ce = lambda x: losses.softmax_cross_entropy(x, labels)  # noqa: E731
    predicted = jnp.argmax(logits, -1)
    result = {
      'loss': (jnp.where(mask, ce(logits), 0.0).sum(), count),
      'accuracy': (((predicted == labels) & mask).sum(), count),
      **_aux_metrics(outputs, ce, mask),
    }
    if logits.shape[-1] == 2:  # a raw total: [label, prediction] counts
      pairs = jax.nn.one_hot(labels, 2)[:, :, None] * jax.nn.one_hot(predicted, 2)[:, None, :]
      result['confusion'] = jnp.where(mask[:, None, None], pairs, 0.0).sum(0)  # [2, 2]
    return result

  def finalize(totals, collected):
    del collected
    return binary_scores(totals['confusion']) if 'confusion' in totals else {}

  return Task('text_classification', _text_inputs, weights, loss, metrics, finalize=finalize)


def _ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks, tied values sharing their mean rank (as scipy.stats.rankdata)."""
  order = np.argsort(x, kind='stable')
  ordered = x[order]
  first = np.r_[True, ordered[1:] != ordered[:-1]]  # where each group of ties starts
  starts = np.flatnonzero(first)
  ends = np.r_[starts[1:], len(x)]
  ranks = np.empty(len(x), np.float64)
  ranks[order] = ((starts + 1 + ends) / 2)[np.cumsum(first) - 1]
  return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson's correlation in float64; 0 where undefined (fewer than 2 values, a constant)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if len(x) < 2:
    return 0.0
  x, y = x - x.mean(), y - y.mean()
  denominator = math.sqrt(float((x * x).sum() * (y * y).sum()))
  return float((x * y).sum()) / denominator if denominator else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman's rank correlation: Pearson's over the ranks (ties share their mean rank)."""
  return pearson(_ranks(np.asarray(x)), _ranks(np.asarray(y))) if len(x) >= 2 else 0.0


def regression(config: Config, tokenizer=None) -> Task:
  """Sentence-pair similarity, STS-B style: (`input_ids`, `segment_ids`) -> logits [B, 1]
  against a float `label` [B]. The loss is the squared error (its mean the MSE); Pearson's
  and Spearman's correlations are over the whole eval set, from the gathered predictions."""
  del tokenizer
  aux_weight = config.train.get('aux_loss_weight', 0.4)

  def predict(logits):  # [B, 1] -> [B]
    if logits.ndim != 2 or logits.shape[-1] != 1:
      raise ValueError(
        f'task regression scores one output per example, got logits {logits.shape}: use a '
        f'model head with one output (--config.model.num_classes=1)'
      )
    return logits[:, 0].astype(jnp.float32)

  def weights(batch):
    return _example_mask(batch, batch['label'].shape[0]).astype(jnp.float32)

  def squared_error(logits, batch):
    return jnp.square(predict(logits) - batch['label'].astype(jnp.float32))

  def loss(outputs, batch):
    outputs = as_output(outputs)
    score = lambda x: squared_error(x, batch)  # noqa: E731
    return _with_aux(outputs, score(outputs.logits), score, aux_weight)

  def metrics(outputs, batch):
    outputs = as_output(outputs)
    mask = _example_mask(batch, batch['label'].shape[0])
    score = lambda x: squared_error(x, batch)  # noqa: E731
    return {
      'loss': (jnp.where(mask, score(outputs.logits), 0.0).sum(), mask.sum()),
      **_aux_metrics(outputs, score, mask),
    }

  def collect(outputs, batch):
    return {'prediction': predict(as_output(outputs).logits), 'label': batch['label']}

  def finalize(totals, collected):
    del totals
    if 'prediction' not in collected:  # nothing gathered (not an eval)
      return {}
    x, y = collected['prediction'], collected['label']
    return {'pearson': pearson(x, y), 'spearman': spearman(x, y)}

  return Task(
    'regression', _text_inputs, weights, loss, metrics, collect=collect, finalize=finalize
  )


def token_classification(config: Config, tokenizer=None) -> Task:
  """Tagging (named entities, parts of speech): (`input_ids`, `segment_ids`) -> logits
  [B, T, C] against `labels` [B, T], -1 not scored (special tokens, padding, word pieces
  after a word's first). Every scored token counts once in the loss and the accuracy."""
  del tokenizer
  smoothing = config.train.get('label_smoothing', 0.0)
  aux_weight = config.train.get('aux_loss_weight', 0.4)

  def scored(batch):  # [B, T]
    w = batch['labels'] != -1
    if 'mask' in batch:
      w = w & batch['mask'][:, None]
    return w

  def weights(batch):
    return scored(batch).astype(jnp.float32)

  def loss(outputs, batch):
    outputs = as_output(outputs)
    targets = jnp.maximum(batch['labels'], 0)

    def score(logits):  # [B, T]
      return losses.softmax_cross_entropy(logits, targets, label_smoothing=smoothing)

    return _with_aux(outputs, score(outputs.logits), score, aux_weight)

  def metrics(outputs, batch):
    outputs = as_output(outputs)
    labels, w = batch['labels'], scored(batch)
    count = w.sum()
    ce = lambda x: losses.softmax_cross_entropy(x, jnp.maximum(labels, 0))  # noqa: E731
    correct = (jnp.argmax(outputs.logits, -1) == labels) & w
    return {
      'loss': (jnp.where(w, ce(outputs.logits), 0.0).sum(), count),
      'accuracy': (correct.sum(), count),
      **_aux_metrics(outputs, ce, w),
    }

  return Task('token_classification', _text_inputs, weights, loss, metrics)


def best_span(logits: jax.Array, max_answer_len: int) -> tuple[jax.Array, jax.Array]:
  """The (start, end) [B] maximising start + end logits of `logits` [B, T, 2] over the
  valid spans: start <= end < start + max_answer_len."""
  start, end = logits[..., 0], logits[..., 1]  # [B, T]
  t = start.shape[-1]
  i = jnp.arange(t)
  valid = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_answer_len)  # [T, T]
  scores = jnp.where(valid, start[:, :, None] + end[:, None, :], -jnp.inf)  # [B, T, T]
  flat = jnp.argmax(scores.reshape(scores.shape[0], t * t), -1)  # [B]
  return flat // t, flat % t


def span_f1(start, end, gold_start, gold_end) -> jax.Array:
  """Token-overlap F1 between the spans [start, end] and [gold_start, gold_end] (ends
  inclusive), per example."""
  overlap = jnp.maximum(jnp.minimum(end, gold_end) - jnp.maximum(start, gold_start) + 1, 0)
  precision = overlap / jnp.maximum(end - start + 1, 1)
  recall = overlap / jnp.maximum(gold_end - gold_start + 1, 1)
  return jnp.where(overlap > 0, 2 * precision * recall / (precision + recall + 1e-12), 0.0)


def span(config: Config, tokenizer=None) -> Task:
  """Extractive question answering, SQuAD style: (`input_ids`, `segment_ids`) -> logits
  [B, T, 2] (start, end) against `start_position`, `end_position` [B] (end inclusive). The
  loss is the mean of the start and end cross-entropies. Exact match and token-overlap F1
  score the best valid span (`best_span`, at most task.max_answer_len tokens, 30 by
  default) against the gold one."""
  del tokenizer
  max_len = int(config.get('task', {}).get('max_answer_len', 30))
  if max_len < 1:
    raise ValueError(f'task.max_answer_len must be >= 1, got {max_len}')

  def weights(batch):
    return _example_mask(batch, batch['start_position'].shape[0]).astype(jnp.float32)

  def cross_entropy(logits, batch):  # [B]
    start = losses.softmax_cross_entropy(logits[..., 0], batch['start_position'])
    end = losses.softmax_cross_entropy(logits[..., 1], batch['end_position'])
    return (start + end) / 2

  def loss(outputs, batch):
    outputs = as_output(outputs)
    return _plus_model_losses(outputs, cross_entropy(outputs.logits, batch))

  def metrics(outputs, batch):
    outputs = as_output(outputs)
    gold_start, gold_end = batch['start_position'], batch['end_position']
    mask = _example_mask(batch, gold_start.shape[0])
    count = mask.sum()
    start, end = best_span(outputs.logits, max_len)
    exact = (start == gold_start) & (end == gold_end) & mask
    f1 = jnp.where(mask, span_f1(start, end, gold_start, gold_end), 0.0)
    return {
      'loss': (jnp.where(mask, cross_entropy(outputs.logits, batch), 0.0).sum(), count),
      'exact_match': (exact.sum(), count),
      'f1': (f1.sum(), count),
      **_model_metrics(outputs),
    }

  return Task('span', _text_inputs, weights, loss, metrics)


# --- contrastive: CLIP ------------------------------------------------------------------

RECALL_AT = (1, 5, 10)


def _top_k_hits(scores: np.ndarray, right: np.ndarray, k: int) -> np.ndarray:
  """[Q, N] scores and [Q, N] bool right answers -> [Q]: a right one is among the top k."""
  k = min(k, scores.shape[1])
  top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [Q, k], unordered
  return np.take_along_axis(right, top, axis=1).any(axis=1)


def retrieval_recall(
  image_embeds: np.ndarray,
  text_embeds: np.ndarray,
  groups: np.ndarray | None = None,
  ks=RECALL_AT,
  chunk: int = 1024,
) -> dict[str, float]:
  """Recall@k of image -> text and text -> image retrieval over a whole set of N pairs.

  image_embeds, text_embeds [N, E] (unit norm: the dot product is the cosine). A query
  scores a hit when one of its k nearest items is its own pair's. With `groups` [N] the
  pairs of one group share their text (every clip of one spoken word): text -> image hits
  on any image of the query's group, and image -> text ranks the groups, each by its best
  text, so k copies of one text do not fill the top k. Queries run `chunk` at a time, so
  memory stays O(chunk * N).
  """
  image_embeds = np.asarray(image_embeds, np.float32)
  text_embeds = np.asarray(text_embeds, np.float32)
  n = len(image_embeds)
  if groups is None:
    groups = np.arange(n)
  names, group_of = np.unique(np.asarray(groups), return_inverse=True)  # [N] in 0 .. G - 1
  order = np.argsort(group_of, kind='stable')
  starts = np.flatnonzero(np.r_[True, np.diff(group_of[order]) != 0])  # each group's first
  hits = {(d, k): 0 for d in ('i2t', 't2i') for k in ks}
  for start in range(0, n, chunk):
    query = slice(start, start + chunk)
    sim = image_embeds[query] @ text_embeds.T  # [Q, N]: image queries against texts
    by_group = np.maximum.reduceat(sim[:, order], starts, axis=1)  # [Q, G]
    right = np.arange(len(names))[None, :] == group_of[query, None]  # [Q, G]
    t2i = text_embeds[query] @ image_embeds.T  # [Q, N]: text queries against images
    right_images = group_of[None, :] == group_of[query, None]  # [Q, N]
    for k in ks:
      hits['i2t', k] += int(_top_k_hits(by_group, right, k).sum())
      hits['t2i', k] += int(_top_k_hits(t2i, right_images, k).sum())
  return {f'{d}_recall@{k}': count / max(n, 1) for (d, k), count in hits.items()}


def _prompts(config: Config, class_names) -> list[str]:
  """The zero-shot prompts: data.class_prompts, else data.prompt_template formatted with
  each class name; [] when neither is known."""
  data = config.data
  prompts = list(data.get('class_prompts', None) or [])
  if prompts or not class_names:
    return prompts
  template = data.get('prompt_template', 'a photo of a {}')
  if '{}' not in template:
    raise ValueError(f"data.prompt_template needs a '{{}}' for the class name, got {template!r}")
  return [template.format(name) for name in class_names]


def contrastive(config: Config, tokenizer=None, class_names=None) -> Task:
  """CLIP pre-training (Radford et al., 2021): (images `data.input_key` [B, H, W, C] or
  audio [B, N], `text` [B, T]) -> logits [B, B], image i against text j, pair i at the
  diagonal. The loss is the symmetric InfoNCE (`bigjax.losses.contrastive_loss`) per pair;
  its mean over the batch is CLIP's. Under jit with the batch sharded over the mesh the
  [B, B] logits span the global batch, so the negatives come from every device; padded
  pairs (`mask`) are nobody's negatives. With gradient accumulation each micro-batch is
  its own set of negatives.

  Metrics: loss, logit_scale, i2t_accuracy and t2i_accuracy (the in-batch top-1 match). A
  match is the pair itself, or, with task.match_key (e.g. 'label'), any pair that shares
  that key (texts that repeat: one word spoken by many voices). At evaluation also
  i2t_recall@k and t2i_recall@k, k in 1, 5, 10, over the whole eval set
  (`retrieval_recall`, from the gathered embeddings), and, for data with `label` and
  prompts (`data.class_prompts`, or `data.prompt_template` with the data set's class
  names), zero_shot_accuracy: an image is classified by its nearest prompt (K prompts:
  chance is 1 / K).
  """
  image_key = config.data.get('input_key', 'image') or 'image'
  match_key = config.get('task', {}).get('match_key', '') or ''
  model_eos = config.model.get('eos_token_id', None)
  data_eos = getattr(tokenizer, 'eos_id', None)
  if config.model.get('text_pool', 'eos') == 'eos' and None not in (model_eos, data_eos):
    if model_eos != data_eos:
      raise ValueError(
        f'the text tower pools at eos_token_id={model_eos}, but the tokenizer ends texts '
        f'with {data_eos}: set --config.model.eos_token_id={data_eos}'
      )
  prompts = _prompts(config, class_names)
  prompt_ids = None
  if prompts:
    if tokenizer is None:
      raise ValueError('zero-shot prompts need the data set tokenizer; this data set has none')
    max_len = int(config.data.get('max_len', 0) or 0)
    if max_len < 2:
      raise ValueError('the contrastive task encodes its prompts to data.max_len: set it')
    # Imported here: the data side needs grain, which the train step itself does not.
    from bigjax.data.transforms.caption import encode_prompts

    prompt_ids = encode_prompts(tokenizer, prompts, max_len)  # [K, T]

  def inputs(batch):
    return (batch[image_key], batch['text'])

  def eval_inputs(batch):
    if prompt_ids is None:
      return inputs(batch)
    return (*inputs(batch), jnp.asarray(prompt_ids))

  def mask_of(batch):
    return _example_mask(batch, batch['text'].shape[0])

  def weights(batch):
    return mask_of(batch).astype(jnp.float32)

  def loss(outputs, batch):
    outputs = as_output(outputs)
    return _plus_model_losses(
      outputs, losses.contrastive_loss(outputs.logits, where=mask_of(batch))
    )

  def groups(batch):
    if not match_key:
      return jnp.arange(batch['text'].shape[0])
    if match_key not in batch:
      raise ValueError(f'task.match_key={match_key!r}, but the batch has no {match_key!r}')
    return batch[match_key]

  def metrics(outputs, batch):
    outputs = as_output(outputs)
    logits = outputs.logits.astype(jnp.float32)  # [B, B]
    mask = mask_of(batch)
    count = mask.sum()
    group = groups(batch)
    text_for_image = jnp.argmax(jnp.where(mask[None, :], logits, -jnp.inf), axis=1)  # [B]
    image_for_text = jnp.argmax(jnp.where(mask[:, None], logits, -jnp.inf), axis=0)  # [B]
    result = {
      'loss': (losses.contrastive_loss(logits, where=mask).sum(), count),
      'i2t_accuracy': (((group[text_for_image] == group) & mask).sum(), count),
      't2i_accuracy': (((group[image_for_text] == group) & mask).sum(), count),
      **_model_metrics(outputs),
    }
    if 'logit_scale' in outputs.features:
      result['logit_scale'] = (outputs.features['logit_scale'], jnp.ones((), jnp.float32))
    if 'class_embeds' in outputs.features and 'label' in batch:
      scores = outputs.features['image_embeds'] @ outputs.features['class_embeds'].T  # [B, K]
      right = (jnp.argmax(scores, -1) == batch['label']) & mask
      result['zero_shot_accuracy'] = (right.sum(), count)
    return result

  def collect(outputs, batch):
    features = as_output(outputs).features
    gathered = {k: features[k] for k in ('image_embeds', 'text_embeds')}
    if match_key:
      gathered['group'] = groups(batch)
    return gathered

  def finalize(totals, collected):
    del totals
    if 'image_embeds' not in collected:  # nothing gathered (not an eval)
      return {}
    return retrieval_recall(
      collected['image_embeds'], collected['text_embeds'], collected.get('group')
    )

  return Task(
    'contrastive',
    inputs,
    weights,
    loss,
    metrics,
    collect=collect,
    finalize=finalize,
    eval_inputs=eval_inputs,
  )


# name -> builder(config, tokenizer) -> Task; a builder that also takes `class_names` gets
# the data set's (`Data.class_names`).
TASKS: dict[str, Callable[..., Task]] = {
  'classification': classification,
  'lm': language_model,
  'seq2seq': seq2seq,
  'mlm': masked_lm,
  'text_classification': text_classification,
  'regression': regression,
  'token_classification': token_classification,
  'span': span,
  'contrastive': contrastive,
  'audio_lm': audio_lm,
}


def _defaults() -> Config:
  return PlainConfig({'train': {}, 'data': {}, 'model': {}})


def get_task(name: str, config: Config | None = None, tokenizer=None, class_names=None) -> Task:
  """The task `name` built from `config` (defaults: no smoothing, no mixup); `class_names`
  (the data set's label names) go to the builders that take them."""
  if name not in TASKS:
    raise ValueError(
      f'unknown task {name!r}: set --config.task.name to one of {", ".join(TASKS)} '
      f"(or '' for the data set's default)"
    )
  builder = TASKS[name]
  extra = {}
  if class_names is not None and 'class_names' in inspect.signature(builder).parameters:
    extra['class_names'] = class_names
  return builder(_defaults() if config is None else config, tokenizer, **extra)


def task_for(config: Config, data) -> Task:
  """The task the config names, or the data set's default; metrics are named by the data
  set's tokenizer (`Data.tokenizer`, None for images)."""
  name = config.get('task', {}).get('name', '') or data.task
  tokenizer = getattr(data, 'tokenizer', None)
  return get_task(name, config, tokenizer, getattr(data, 'class_names', None))
