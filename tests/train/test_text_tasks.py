"""Text-encoder tasks (masked LM + NSP, sentence classification and regression, tagging,
spans): losses against numpy, whole-eval-set metrics (F1, MCC, Pearson, Spearman) against
scikit-learn and scipy over padded batches, span decoding by hand, and one train and eval
step of each with a tiny model."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from bigjax.outputs import ModelOutput
from bigjax.train import optim, sharding
from bigjax.train.loop import Run
from bigjax.train.state import init_state
from bigjax.train.step import add_metrics, eval_metrics, make_eval_step, make_train_step, summarize
from bigjax.train.tasks import best_span, get_task
from configs import common


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _ce(logits, labels):  # numpy cross-entropy per element
  return -np.take_along_axis(_log_softmax(logits), np.asarray(labels)[..., None], -1)[..., 0]


def _objective(task, outputs, batch):
  """The train step's objective: sum(w * l) / sum(w) over the task's weights."""
  w = task.weights(batch)
  return float(jnp.sum(jnp.where(w > 0, task.loss(outputs, batch), 0.0) * w) / jnp.sum(w))


def _mean(metric):
  return float(metric[0]) / float(metric[1])


def _evaluate(task, batches):
  """`Run.evaluate` over `batches`, the model's logits read from batch['logits']."""
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}))
  step = jax.jit(lambda state, batch: eval_metrics(task, ModelOutput(batch['logits']), batch))
  run = types.SimpleNamespace(
    config=ml_collections.ConfigDict({'train': {'eval_batch_size': 8}}),
    data=types.SimpleNamespace(eval_batches=lambda size, steps: iter(batches)),
    eval_step=step,
    mesh=mesh,
    task=task,
  )
  return Run.evaluate(run, None)


def _padded_batches(n, make, rng, batch_size=8):
  """n real examples from make(k) -> dict of [k, ...], split into batches of batch_size,
  the last one padded with garbage examples (mask False)."""
  real = make(n)
  pad = -n % batch_size
  garbage = make(pad)
  full = {k: np.concatenate([real[k], garbage[k]]) for k in real}
  full['mask'] = np.r_[np.ones(n, bool), np.zeros(pad, bool)]
  return real, [
    {k: v[i : i + batch_size] for k, v in full.items()} for i in range(0, n + pad, batch_size)
  ]


# --- masked LM + NSP ---------------------------------------------------------------------


def _mlm_case():
  rng = np.random.default_rng(0)
  b, t, v = 4, 6, 9
  labels = np.full((b, t), -1, np.int32)
  labels[0, [1, 3]] = [4, 2]
  labels[1, [0, 2, 4, 5]] = [1, 8, 3, 3]
  # example 2 selects nothing; example 3 is padding (mask False) with labels set
  labels[3, [0, 1]] = [5, 6]
  batch = {
    'input_ids': rng.integers(1, v, (b, t)).astype(np.int32),
    'segment_ids': np.zeros((b, t), np.int32),
    'mlm_labels': labels,
    'nsp_label': np.array([0, 1, 1, 0], np.int32),
    'mask': np.array([True, True, True, False]),
  }
  logits = rng.normal(size=(b, t, v)).astype(np.float32)
  nsp = rng.normal(size=(b, 2)).astype(np.float32)
  return batch, logits, nsp


def test_mlm_loss_is_mlm_mean_plus_weighted_nsp_mean():
  config = common.base_config()
  config.train.nsp_weight = 0.5
  task = get_task('mlm', config)
  batch, logits, nsp = _mlm_case()
  outputs = ModelOutput(jnp.asarray(logits), aux_logits={'nsp': jnp.asarray(nsp)})
  sel = (batch['mlm_labels'] != -1) & batch['mask'][:, None]
  mlm_mean = _ce(logits, np.maximum(batch['mlm_labels'], 0))[sel].mean()
  nsp_ce = _ce(nsp, batch['nsp_label'])
  assert sel.sum() == 6
  # the NSP mean is over the real examples that select a token: 0 and 1
  np.testing.assert_allclose(
    _objective(task, outputs, batch), mlm_mean + 0.5 * nsp_ce[:2].mean(), rtol=1e-5
  )
  # only the selected positions count: other logits change nothing
  moved = np.where(sel[..., None], logits, logits + 100 * np.arange(9))
  moved_outputs = outputs.replace(logits=jnp.asarray(moved, jnp.float32))
  np.testing.assert_allclose(
    _objective(task, moved_outputs, batch), _objective(task, outputs, batch), rtol=1e-5
  )

  m = task.metrics(outputs, batch)
  np.testing.assert_allclose(_mean(m['loss']), mlm_mean, rtol=1e-5)
  np.testing.assert_allclose(_mean(m['bits_per_token']), mlm_mean / np.log(2), rtol=1e-5)
  correct = (logits.argmax(-1) == batch['mlm_labels'])[sel]
  np.testing.assert_allclose(_mean(m['accuracy']), correct.mean())
  np.testing.assert_allclose(_mean(m['nsp_loss']), nsp_ce[:3].mean(), rtol=1e-5)
  nsp_right = nsp.argmax(-1) == batch['nsp_label']
  np.testing.assert_allclose(_mean(m['nsp_accuracy']), nsp_right[:3].mean())

  # no nsp_label in the batch (RoBERTa data) or no NSP head: the MLM alone
  no_nsp = {k: v for k, v in batch.items() if k != 'nsp_label'}
  np.testing.assert_allclose(_objective(task, outputs, no_nsp), mlm_mean, rtol=1e-5)
  assert 'nsp_loss' not in task.metrics(outputs, no_nsp)
  plain = ModelOutput(jnp.asarray(logits))
  np.testing.assert_allclose(_objective(task, plain, batch), mlm_mean, rtol=1e-5)


# --- sentence classification: accuracy, F1, MCC over the whole eval set -------------------


def _classification_data(n, classes, rng):
  def make(k):
    labels = rng.integers(0, classes, k).astype(np.int32)
    logits = rng.normal(size=(k, classes)).astype(np.float32)
    logits[np.arange(k), labels] += rng.normal(0.5, 1.0, k)  # better than chance
    return {'label': labels, 'logits': logits}

  return _padded_batches(n, make, rng)


def test_text_classification_metrics_match_sklearn_over_padded_batches():
  rng = np.random.default_rng(1)
  task = get_task('text_classification', common.base_config())
  real, batches = _classification_data(29, 2, rng)
  assert len(batches) == 4 and not batches[-1]['mask'].all()
  result = _evaluate(task, batches)
  labels, predicted = real['label'], real['logits'].argmax(-1)
  np.testing.assert_allclose(result['loss'], _ce(real['logits'], labels).mean(), rtol=1e-5)
  np.testing.assert_allclose(result['accuracy'], (labels == predicted).mean(), rtol=1e-6)
  np.testing.assert_allclose(result['f1'], skm.f1_score(labels, predicted), rtol=1e-6)
  np.testing.assert_allclose(result['mcc'], skm.matthews_corrcoef(labels, predicted), rtol=1e-6)
  # the whole-set scores are not a mean of per-batch ones
  per_batch = [
    skm.f1_score(b['label'][b['mask']], b['logits'][b['mask']].argmax(-1)) for b in batches
  ]
  assert abs(np.mean(per_batch) - result['f1']) > 1e-3

  # objective on a padded batch: a mean over its real examples
  last = batches[-1]
  m = last['mask']
  np.testing.assert_allclose(
    _objective(task, ModelOutput(jnp.asarray(last['logits'])), last),
    _ce(last['logits'], last['label'])[m].mean(),
    rtol=1e-5,
  )
  # the train logs (no task to finalize) keep the (sum, count) metrics only
  total = None
  for batch in batches:
    total = add_metrics(total, task.metrics(ModelOutput(jnp.asarray(batch['logits'])), batch))
  assert set(summarize(total)) == {'loss', 'accuracy'}


def test_multiclass_classification_has_no_binary_scores():
  rng = np.random.default_rng(2)
  task = get_task('text_classification')
  real, batches = _classification_data(13, 3, rng)
  result = _evaluate(task, batches)
  assert set(result) == {'loss', 'accuracy'}
  np.testing.assert_allclose(
    result['accuracy'], (real['label'] == real['logits'].argmax(-1)).mean(), rtol=1e-6
  )


@pytest.mark.filterwarnings('ignore:A single label')
def test_binary_scores_when_undefined_follow_sklearn():
  from bigjax.train.tasks import binary_scores

  labels = np.array([0, 0, 0, 0])
  for predicted in (np.array([0, 0, 0, 0]), np.array([0, 1, 0, 1])):
    confusion = np.zeros((2, 2))
    np.add.at(confusion, (labels, predicted), 1)
    scores = binary_scores(confusion)
    assert scores['f1'] == skm.f1_score(labels, predicted, zero_division=0)
    assert scores['mcc'] == skm.matthews_corrcoef(labels, predicted)


# --- regression: MSE, Pearson, Spearman -------------------------------------------------


def test_regression_metrics_match_scipy_over_padded_batches():
  rng = np.random.default_rng(3)
  task = get_task('regression')

  def make(k):
    labels = rng.integers(0, 11, k).astype(np.float32) / 2  # 0 .. 5 in halves: ties
    preds = np.round(labels + rng.normal(0, 1.0, k), 1).astype(np.float32)  # ties too
    return {'label': labels, 'logits': preds[:, None]}

  real, batches = _padded_batches(37, make, rng)
  result = _evaluate(task, batches)
  x, y = real['logits'][:, 0].astype(np.float64), real['label'].astype(np.float64)
  assert len(np.unique(x)) < len(x) and len(np.unique(y)) < len(y)
  np.testing.assert_allclose(result['loss'], np.mean((x - y) ** 2), rtol=1e-5)
  np.testing.assert_allclose(result['pearson'], stats.pearsonr(x, y)[0], rtol=1e-6)
  np.testing.assert_allclose(result['spearman'], stats.spearmanr(x, y)[0], rtol=1e-6)
  last = batches[-1]
  np.testing.assert_allclose(
    _objective(task, ModelOutput(jnp.asarray(last['logits'])), last),
    np.mean(((last['logits'][:, 0] - last['label']) ** 2)[last['mask']]),
    rtol=1e-5,
  )
  with pytest.raises(ValueError, match='num_classes=1'):
    task.loss(ModelOutput(jnp.zeros((8, 2))), last)


# --- token classification ----------------------------------------------------------------


def test_token_classification_scores_labelled_tokens_of_real_examples():
  rng = np.random.default_rng(4)
  task = get_task('token_classification')
  b, t, c = 3, 5, 4
  labels = rng.integers(0, c, (b, t)).astype(np.int32)
  labels[0, [0, 4]] = -1
  labels[1, :2] = -1
  batch = {
    'input_ids': np.ones((b, t), np.int32),
    'segment_ids': np.zeros((b, t), np.int32),
    'labels': labels,
    'mask': np.array([True, True, False]),
  }
  logits = rng.normal(size=(b, t, c)).astype(np.float32)
  outputs = ModelOutput(jnp.asarray(logits))
  w = (labels != -1) & batch['mask'][:, None]
  assert w.sum() == 6
  ce = _ce(logits, np.maximum(labels, 0))[w]
  np.testing.assert_allclose(_objective(task, outputs, batch), ce.mean(), rtol=1e-5)
  m = task.metrics(outputs, batch)
  np.testing.assert_allclose(_mean(m['loss']), ce.mean(), rtol=1e-5)
  np.testing.assert_allclose(_mean(m['accuracy']), (logits.argmax(-1) == labels)[w].mean())


# --- spans ---------------------------------------------------------------------------------


def test_best_span_is_the_best_valid_span():
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(6, 9, 2)).astype(np.float32)
  for max_len in (1, 3, 30):
    start, end = best_span(jnp.asarray(logits), max_len)
    for k in range(6):
      best = max(
        ((s, e) for s in range(9) for e in range(s, min(s + max_len, 9))),
        key=lambda se: logits[k, se[0], 0] + logits[k, se[1], 1],
      )
      assert (int(start[k]), int(end[k])) == best


def test_span_loss_and_exact_match_and_f1_by_hand():
  config = common.base_config()
  config.task.max_answer_len = 3
  task = get_task('span', config)
  t = 8
  start = np.zeros((5, t), np.float32)
  end = np.zeros((5, t), np.float32)
  start[0, 2], end[0, 4] = 10, 10  # (2, 4) = gold: EM 1, F1 1
  start[1, 5], end[1, 1], end[1, 6] = 10, 9, 1  # (5, 1) has end < start; (5, 6) wins
  start[2, 0], end[2, 7], end[2, 2] = 10, 10, 5  # (0, 7) is longer than 3; (0, 2) wins
  start[3, 2], end[3, 3] = 10, 10  # (2, 3) against gold (5, 6): no overlap
  start[4, 0], end[4, 0] = 10, 10  # padding: not scored
  batch = {
    'input_ids': np.ones((5, t), np.int32),
    'segment_ids': np.zeros((5, t), np.int32),
    'start_position': np.array([2, 5, 0, 5, 3], np.int32),
    'end_position': np.array([4, 7, 2, 6, 3], np.int32),
    'mask': np.array([True, True, True, True, False]),
  }
  logits = np.stack([start, end], -1)  # [B, T, 2]
  outputs = ModelOutput(jnp.asarray(logits))
  m = task.metrics(outputs, batch)
  # example 1: predicted (5, 6) against (5, 7): precision 1, recall 2/3, F1 0.8
  np.testing.assert_allclose(_mean(m['exact_match']), 2 / 4)
  np.testing.assert_allclose(_mean(m['f1']), (1 + 0.8 + 1 + 0) / 4, rtol=1e-6)
  ce = (_ce(start, batch['start_position']) + _ce(end, batch['end_position'])) / 2
  np.testing.assert_allclose(_mean(m['loss']), ce[:4].mean(), rtol=1e-5)
  np.testing.assert_allclose(_objective(task, outputs, batch), ce[:4].mean(), rtol=1e-5)
  with pytest.raises(ValueError, match='max_answer_len'):
    config.task.max_answer_len = 0
    get_task('span', config)


# --- one train and eval step of each task with a tiny model ------------------------------


class _TinyEncoder(nn.Module):
  """Embeddings + one dense layer, with the BERT heads' output shapes."""

  head: str
  vocab: int = 11
  num_classes: int = 3

  @nn.compact
  def __call__(self, input_ids, segment_ids, *, train=False):
    x = nn.Embed(self.vocab, 16, name='word')(input_ids)  # [B, T, D]
    x = x + nn.Embed(2, 16, name='segment')(segment_ids)
    x = nn.tanh(nn.Dense(16, name='dense')(x))
    pooled = x.mean(1)  # [B, D]
    if self.head == 'pretraining':
      mlm = x @ self.variables['params']['word']['embedding'].T  # [B, T, V]
      return ModelOutput(mlm, aux_logits={'nsp': nn.Dense(2, name='nsp')(pooled)})
    if self.head == 'classification':
      return nn.Dense(self.num_classes, name='classifier')(pooled)  # [B, C]
    if self.head == 'token_classification':
      return nn.Dense(self.num_classes, name='token_classifier')(x)  # [B, T, C]
    return nn.Dense(2, name='span')(x)  # [B, T, 2]


def _text_batch(name, rng, b=8, t=7):
  ids = rng.integers(1, 11, (b, t)).astype(np.int32)
  batch = {'input_ids': ids, 'segment_ids': (np.arange(t) >= 4).astype(np.int32)[None].repeat(b, 0)}
  if name == 'mlm':
    batch['mlm_labels'] = np.where(rng.random((b, t)) < 0.3, ids, -1).astype(np.int32)
    batch['mlm_labels'][:, 0] = ids[:, 0]  # every example selects a token
    batch['nsp_label'] = rng.integers(0, 2, b).astype(np.int32)
  elif name == 'text_classification':
    batch['label'] = (ids[:, 0] > 5).astype(np.int32)
  elif name == 'regression':
    batch['label'] = (ids[:, 0] / 2).astype(np.float32)
  elif name == 'token_classification':
    batch['labels'] = np.where(ids > 8, -1, ids % 3).astype(np.int32)
  else:
    batch['start_position'] = rng.integers(0, 3, b).astype(np.int32)
    batch['end_position'] = batch['start_position'] + rng.integers(0, 3, b).astype(np.int32)
  return batch


@pytest.mark.parametrize(
  'name,head,classes,expected',
  [
    ('mlm', 'pretraining', 3, {'loss', 'accuracy', 'bits_per_token', 'nsp_loss', 'nsp_accuracy'}),
    ('text_classification', 'classification', 2, {'loss', 'accuracy', 'f1', 'mcc'}),
    ('regression', 'classification', 1, {'loss', 'pearson', 'spearman'}),
    ('token_classification', 'token_classification', 3, {'loss', 'accuracy'}),
    ('span', 'span', 3, {'loss', 'exact_match', 'f1'}),
  ],
)
def test_train_and_eval_step_with_a_tiny_encoder(name, head, classes, expected):
  config = common.base_config()
  config.optim.name = 'adam'
  config.optim.lr = 0.05
  config.schedule.name = 'constant'
  schedule, tx = optim.from_config(config)
  model = _TinyEncoder(head, num_classes=classes)
  task = get_task(name, config)
  batch = _text_batch(name, np.random.default_rng(6))
  state = init_state(model, tx, jax.random.key(0), tuple(x[:1] for x in task.inputs(batch)))
  train_step = jax.jit(make_train_step(model, task, config, schedule, tx))
  objectives = []
  for _ in range(5):
    state, metrics = train_step(state, batch, jax.random.key(1))
    objectives.append(float(metrics['objective'][0]))
  assert np.all(np.isfinite(objectives)) and objectives[-1] < objectives[0]

  eval_step = jax.jit(make_eval_step(model, task))
  padded = {**batch, 'mask': np.arange(8) < 6}
  total = add_metrics(add_metrics(None, eval_step(state, batch)), eval_step(state, padded))
  result = summarize(total, task)
  assert set(result) == expected
  assert all(np.isfinite(v) for v in result.values())
  if name == 'regression':  # 8 + 6 real examples gathered, in order
    out = model.apply(state.variables, *task.inputs(batch))[:, 0]
    x = np.r_[out, out[:6]]
    y = np.r_[batch['label'], batch['label'][:6]]
    np.testing.assert_allclose(result['pearson'], stats.pearsonr(x, y)[0], rtol=1e-5)


def test_mlm_with_nsp_accumulates_exactly_when_micro_batches_select_as_many_tokens():
  config = common.base_config()
  config.optim.name = 'sgd'
  config.optim.lr = 1.0
  config.schedule.name = 'constant'
  schedule, tx = optim.from_config(config)
  model = _TinyEncoder('pretraining')
  task = get_task('mlm', config)
  rng = np.random.default_rng(7)
  batch = _text_batch('mlm', rng)
  # example i selects 1 + i // 2 tokens: both micro-batches (every 2nd example) select 10
  ids = batch['input_ids']
  batch['mlm_labels'] = np.where(np.arange(7)[None] <= np.arange(8)[:, None] // 2, ids, -1)
  batch['mlm_labels'] = batch['mlm_labels'].astype(np.int32)
  state = init_state(model, tx, jax.random.key(0), tuple(x[:1] for x in task.inputs(batch)))
  results = []
  for accum in (1, 2):
    config.optim.grad_accum_steps = accum
    step = jax.jit(make_train_step(model, task, config, schedule, tx))
    new, metrics = step(state, batch, jax.random.key(1))
    results.append((new.params, float(metrics['objective'][0])))
  (p1, o1), (p2, o2) = results
  np.testing.assert_allclose(o1, o2, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), p1, p2)
