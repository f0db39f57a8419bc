"""Tasks: chosen by the config, token-weighted language modelling, metrics named by the
tokenizer, auxiliary heads and model losses added to the objective."""

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
from bigjax.train.step import make_train_step
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
