"""Tasks: chosen by the config, token-weighted language modelling (packed documents, real
tokens only, perplexity), metrics named by the tokenizer, auxiliary heads and model losses
added to the objective, the model's own measurements reported by every task."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigjax import losses
from bigjax.outputs import ModelOutput
from bigjax.train import optim
from bigjax.train.state import init_state
from bigjax.train.step import add_metrics, make_train_step, summarize
from bigjax.train.tasks import get_task, task_for
from configs import common

BYTES = types.SimpleNamespace(byte_level=True, vocab_size=256)
BPE = types.SimpleNamespace(byte_level=False, vocab_size=8000)


class _TokenLM(nn.Module):
  """A bigram model: one embedding row of logits per input token."""

  vocab: int = 12

  @nn.compact
  def __call__(self, tokens, *, train=False):
    return nn.Embed(self.vocab, self.vocab, name='embed')(tokens)  # [B, T, V]


def _ragged_lm_batch():
  # Sequence 0 has 1 scored token, sequence 1 has 6: PAD_ID (0) targets are not scored.
  inputs = np.array([[3, 4, 0, 0, 0, 0], [5, 6, 7, 8, 9, 10]], np.int32)
  targets = np.array([[4, 0, 0, 0, 0, 0], [6, 7, 8, 9, 10, 11]], np.int32)
  return {'inputs': inputs, 'targets': targets}


def test_lm_objective_weights_tokens_not_sequences():
  config = common.base_config()
  config.optim.name = 'sgd'
  config.optim.lr = 1.0
  config.schedule.name = 'constant'
  schedule, tx = optim.from_config(config)
  model = _TokenLM()
  batch = _ragged_lm_batch()
  state = init_state(model, tx, jax.random.key(0), (batch['inputs'][:1],))
  step = make_train_step(model, get_task('lm', config), config, schedule, tx)
  new, metrics = jax.jit(step)(state, batch, jax.random.key(1))

  def token_mean(params):  # the loss every scored token counts once in, by hand
    logits = model.apply({'params': params}, batch['inputs'])
    ce = losses.softmax_cross_entropy(logits, batch['targets'])
    w = batch['targets'] != 0
    return jnp.sum(jnp.where(w, ce, 0.0)) / w.sum()

  expected = optax.apply_updates(
    state.params, jax.tree.map(lambda g: -g, jax.grad(token_mean)(state.params))
  )
  np.testing.assert_allclose(
    new.params['embed']['embedding'], expected['embed']['embedding'], atol=1e-6
  )
  np.testing.assert_allclose(float(metrics['objective'][0]), token_mean(state.params), rtol=1e-6)
  assert float(metrics['loss'][1]) == 7  # the reported loss is over the same 7 tokens
  np.testing.assert_allclose(
    metrics['loss'][0] / metrics['loss'][1], token_mean(state.params), rtol=1e-6
  )


def test_lm_weights_and_masked_examples():
  task = get_task('lm')
  batch = {**_ragged_lm_batch(), 'mask': np.array([True, False])}
  w = np.asarray(task.weights(batch))
  assert w.shape == (2, 6) and w.sum() == 1.0 and w[0, 0] == 1.0


@pytest.mark.parametrize(
  'tokenizer,name', [(BYTES, 'bits_per_byte'), (BPE, 'bits_per_token'), (None, 'bits_per_token')]
)
def test_bits_metric_is_named_by_the_tokenizer(tokenizer, name):
  config = common.base_config()
  for task_name in ('lm', 'seq2seq'):
    task = get_task(task_name, config, tokenizer)
    logits = jnp.zeros((2, 6, 12))
    batch = _ragged_lm_batch()
    batch = (
      batch
      if task_name == 'lm'
      else {'src': batch['inputs'], 'tgt_in': batch['inputs'], 'tgt_out': batch['targets']}
    )
    metrics = task.metrics(ModelOutput(logits), batch)
    assert name in metrics and {'bits_per_byte', 'bits_per_token'} - {name} - set(metrics)
    bits, count = metrics[name]
    np.testing.assert_allclose(bits / count, np.log2(12), rtol=1e-6)  # uniform over 12


def test_config_chooses_the_task():
  config = common.base_config()
  data = types.SimpleNamespace(task='classification', tokenizer=BYTES)
  assert task_for(config, data).name == 'classification'  # '' = the data set's default
  config.task.name = 'lm'
  task = task_for(config, data)
  assert task.name == 'lm'
  assert 'bits_per_byte' in task.metrics(ModelOutput(jnp.zeros((2, 6, 12))), _ragged_lm_batch())
  assert task_for(config, types.SimpleNamespace(task='lm')).name == 'lm'  # no tokenizer attribute
  config.task.name = 'lmm'
  with pytest.raises(ValueError, match='--config.task.name'):
    task_for(config, data)


def test_aux_logits_and_aux_losses_join_the_objective():
  config = common.base_config()
  config.train.aux_loss_weight = 0.3
  task = get_task('classification', config)
  rng = np.random.default_rng(0)
  logits, aux = (jnp.asarray(rng.normal(size=(4, 5)), jnp.float32) for _ in range(2))
  labels = np.array([0, 1, 2, 3], np.int32)
  batch = {
    'image': np.zeros((4, 2, 2, 1), np.float32),
    'label': labels,
    'mask': np.array([1, 1, 1, 0], bool),
  }
  outputs = ModelOutput(logits, aux_logits={'aux': aux}, aux_losses={'balance': jnp.float32(0.25)})
  w = task.weights(batch)
  objective = float(jnp.sum(task.loss(outputs, batch) * w) / jnp.sum(w))
  ce = lambda x: np.asarray(losses.softmax_cross_entropy(x, labels))[:3].mean()  # noqa: E731
  np.testing.assert_allclose(objective, ce(logits) + 0.3 * ce(aux) + 0.25, rtol=1e-6)
  metrics = task.metrics(outputs, batch)
  np.testing.assert_allclose(metrics['loss'][0] / metrics['loss'][1], ce(logits), rtol=1e-6)
  np.testing.assert_allclose(
    metrics['aux_logits/aux'][0] / metrics['aux_logits/aux'][1], ce(aux), rtol=1e-6
  )
  np.testing.assert_allclose(metrics['aux_losses/balance'][0], 0.25)
  # A plain logits output (seen through as_output) has no auxiliary terms.
  plain = task.metrics(logits, batch)
  assert set(plain) == {'loss', 'accuracy'}
  np.testing.assert_allclose(plain['loss'][0], metrics['loss'][0])


# --- causal LM over packed documents ------------------------------------------------------

GPT2 = types.SimpleNamespace(byte_level=False, vocab_size=12, pad_id=None)  # no pad token


def _packed_batch():
  """Two rows: documents 1 and 2 then padding; one token id 0 that is a real token."""
  inputs = np.array([[3, 0, 4, 3, 5, 0], [3, 6, 7, 8, 9, 10]], np.int32)
  targets = np.array([[0, 4, 3, 5, 3, 0], [6, 7, 8, 9, 10, 11]], np.int32)
  segment_ids = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]], np.int32)
  return {'inputs': inputs, 'targets': targets, 'segment_ids': segment_ids}


def test_lm_with_segments_scores_real_tokens_and_feeds_the_segments():
  batch = _packed_batch()
  gpt2 = get_task('lm', common.base_config(), GPT2)
  inputs = gpt2.inputs(batch)
  assert len(inputs) == 2 and inputs[1] is batch['segment_ids']
  assert len(gpt2.inputs(_ragged_lm_batch())) == 1  # no segments: the tokens alone
  # No pad id: every target of a real input counts, id 0 included; padding never.
  np.testing.assert_array_equal(gpt2.weights(batch), batch['segment_ids'] > 0)
  # A pad id (bytes: 0): those targets are not scored either.
  byte = get_task('lm', common.base_config(), BYTES)
  np.testing.assert_array_equal(
    byte.weights(batch), (batch['segment_ids'] > 0) & (batch['targets'] != 0)
  )
  masked = {**batch, 'mask': np.array([False, True])}
  assert float(gpt2.weights(masked).sum()) == 6


def test_lm_perplexity_is_exp_of_the_mean_loss_over_batches():
  task = get_task('lm', common.base_config(), GPT2)
  rng = np.random.default_rng(0)
  batches = [_packed_batch(), {**_packed_batch(), 'mask': np.array([True, False])}]
  logits = [jnp.asarray(rng.normal(size=(2, 6, 12)), jnp.float32) for _ in batches]
  total = None
  for b, x in zip(batches, logits):
    total = add_metrics(total, task.metrics(ModelOutput(x), b))
  result = summarize(total, task)
  ce = [
    np.asarray(losses.softmax_cross_entropy(x, b['targets'])) * np.asarray(task.weights(b))
    for b, x in zip(batches, logits)
  ]
  mean = sum(c.sum() for c in ce) / 16  # scored tokens: 5 + 6, then 5 (row 1 masked)
  np.testing.assert_allclose(result['loss'], mean, rtol=1e-5)
  np.testing.assert_allclose(result['perplexity'], np.exp(mean), rtol=1e-5)
  np.testing.assert_allclose(result['bits_per_token'], mean / np.log(2), rtol=1e-5)
  assert 'nll_total' not in result and 'perplexity' not in summarize(total)  # eval only


# --- the model's own measurements, in every task ------------------------------------------


def _model_metric_cases():
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
  ids = np.array([[2, 3, 4, 5], [6, 7, 8, 9]], np.int32)
  zeros = np.zeros((2, 4), np.int32)
  return {
    'lm': (f(2, 6, 12), _ragged_lm_batch()),
    'classification': (f(2, 5), {'image': np.zeros((2, 2, 2, 1)), 'label': np.array([0, 3])}),
    'mlm': (
      f(2, 4, 12),
      {'input_ids': ids, 'segment_ids': zeros, 'mlm_labels': np.where(ids > 6, ids, -1)},
    ),
    'span': (
      f(2, 4, 2),
      {
        'input_ids': ids,
        'segment_ids': zeros,
        'start_position': np.array([1, 2]),
        'end_position': np.array([2, 2]),
      },
    ),
  }


@pytest.mark.parametrize('name', ['lm', 'classification', 'mlm', 'span'])
def test_every_task_reports_the_models_metrics_as_means_over_batches(name):
  task = get_task(name, common.base_config())
  logits, batch = _model_metric_cases()[name]
  total = None
  loads = [[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]
  for load, scale in zip(loads, (1.0, 3.0)):
    outputs = ModelOutput(
      logits,
      aux_losses={'moe_balance': jnp.float32(0.01)},
      metrics={'expert_load': jnp.asarray(load), 'router_entropy': jnp.float32(scale)},
    )
    metrics = task.metrics(outputs, batch)
    assert {'expert_load/0', 'expert_load/2', 'router_entropy', 'aux_losses/moe_balance'} <= set(
      metrics
    )
    assert 'expert_load' not in metrics and 'expert_load/3' not in metrics
    total = add_metrics(total, metrics)
  result = summarize(total, task)
  np.testing.assert_allclose(
    [result[f'expert_load/{i}'] for i in range(3)], np.mean(loads, 0), rtol=1e-6
  )
  np.testing.assert_allclose(result['router_entropy'], 2.0)
  np.testing.assert_allclose(result['aux_losses/moe_balance'], 0.01, rtol=1e-6)
  # Never in the objective: the loss is that of the same outputs without them.
  w = task.weights(batch)
  with_metrics = jnp.sum(task.loss(outputs, batch) * w)
  without = jnp.sum(task.loss(ModelOutput(logits, aux_losses=outputs.aux_losses), batch) * w)
  np.testing.assert_allclose(with_metrics, without)


def test_classification_reads_the_configured_input():
  config = common.base_config()
  config.data.input_key = 'audio'
  task = get_task('classification', config)
  batch = {'audio': np.ones((2, 16), np.float32), 'label': np.array([0, 1], np.int32)}
  (inputs,) = task.inputs(batch)
  assert inputs is batch['audio'] and task.augment(batch, jax.random.key(0)) is batch
  config.data.mixup_alpha = 0.2
  with pytest.raises(ValueError, match='need images'):
    get_task('classification', config)
