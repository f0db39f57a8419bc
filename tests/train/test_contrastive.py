"""The contrastive (CLIP) loss and task: the loss against NumPy, its gradient by hand, padding
that is nobody's negative, the same loss and gradients on 1 and 8 devices with the batch
sharded (global negatives), retrieval recall and zero-shot accuracy.

Legend: B batch, E embedding width, K prompts, T text length.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import bigjax
from bigjax import losses
from bigjax.data.tokenizers import ByteTokenizer
from bigjax.outputs import ModelOutput
from bigjax.train import optim, sharding
from bigjax.train.state import init_state
from bigjax.train.step import make_eval_step, make_train_step
from bigjax.train.tasks import get_task, retrieval_recall
from configs import common


def _np_logsumexp(x, axis):
  m = x.max(axis=axis, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _np_contrastive(z):
  """NumPy: the per-pair symmetric InfoNCE of a [B, B] logits matrix (every pair real)."""
  z = np.asarray(z, np.float64)
  diag = np.diag(z)
  return 0.5 * ((_np_logsumexp(z, 1) - diag) + (_np_logsumexp(z, 0) - diag))


def test_loss_equals_numpy_and_padding_is_no_negative():
  z = np.random.default_rng(0).normal(0, 3, (7, 7)).astype(np.float32)
  np.testing.assert_allclose(losses.contrastive_loss(jnp.asarray(z)), _np_contrastive(z), rtol=1e-5)
  where = np.array([True, False, True, True, False, True, True])
  masked = np.asarray(losses.contrastive_loss(jnp.asarray(z), where=jnp.asarray(where)))
  np.testing.assert_allclose(masked[where], _np_contrastive(z[where][:, where]), rtol=1e-5)
  assert np.all(masked[~where] == 0)
  # The padded rows' and columns' values do not matter at all.
  z2 = z.copy()
  z2[~where] = 1e4
  z2[:, ~where] = -1e4
  again = losses.contrastive_loss(jnp.asarray(z2), where=jnp.asarray(where))
  np.testing.assert_allclose(again, masked, rtol=1e-6)
  with pytest.raises(ValueError, match='square'):
    losses.contrastive_loss(jnp.zeros((3, 4)))


def test_gradient_by_hand():
  """d mean(loss) / dz = (softmax over rows - I + softmax over columns - I) / (2B)."""
  z = np.random.default_rng(1).normal(0, 2, (5, 5))
  grad = jax.grad(lambda x: losses.contrastive_loss(x).mean())(jnp.asarray(z, jnp.float32))
  rows = np.exp(z - _np_logsumexp(z, 1)[:, None])
  cols = np.exp(z - _np_logsumexp(z, 0)[None, :])
  eye = np.eye(5)
  np.testing.assert_allclose(grad, (rows - eye + cols - eye) / 10, atol=1e-6)


B, T = 16, 8


def _batch():
  """16 pairs of random 16x16 images and texts, the last two padding."""
  rng = np.random.default_rng(0)
  text = rng.integers(1, 64, (B, T)).astype(np.int32)
  text[:, 6:] = 0  # pad id after 6 tokens ('last' pooling at position 5)
  return {
    'image': rng.normal(size=(B, 16, 16, 3)).astype(np.float32),
    'text': text,
    'label': rng.integers(0, 3, (B,)).astype(np.int32),
    'mask': np.arange(B) < B - 2,
  }


def _run(mesh, model, task, config, state, batch):
  schedule = optim.make_schedule(config.schedule, config.optim.lr, 10)
  tx = optim.make_optimizer(config.optim, schedule)
  step = make_train_step(model, task, config, schedule, tx)
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  jitted = jax.jit(step, in_shardings=(repl, batch_sh, repl), out_shardings=(repl, repl))
  new, metrics = jitted(
    jax.device_put(state, repl), sharding.global_batch(batch, mesh), jax.random.key(0)
  )
  return new, metrics


def test_eight_devices_give_the_global_loss_and_gradients_of_one():
  """With the batch sharded over 8 devices, the [B, B] logits still span the whole batch:
  the loss is NumPy's over the 14 real pairs, and one SGD step moves every parameter as on
  one device (the same gradients)."""
  config = common.base_config()
  config.optim.name, config.optim.lr, config.schedule.name = 'sgd', 1.0, 'constant'
  model = bigjax.create_model('clip_test', vision_layers=1, text_layers=1)
  task = get_task('contrastive', config)
  batch = _batch()
  schedule = optim.make_schedule(config.schedule, config.optim.lr, 10)
  tx = optim.make_optimizer(config.optim, schedule)
  inputs = (batch['image'][:1], batch['text'][:1])
  state = jax.jit(lambda key: init_state(model, tx, key, inputs))(jax.random.key(0))

  logits = jax.jit(model.apply)(state.variables, batch['image'], batch['text']).logits
  logits = np.asarray(logits)
  real = batch['mask']
  expected = _np_contrastive(logits[real][:, real]).mean()

  mesh8 = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}))
  mesh1 = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}), jax.devices()[:1])
  s8, m8 = _run(mesh8, model, task, config, state, batch)
  s1, m1 = _run(mesh1, model, task, config, state, batch)
  for metrics in (m8, m1):
    np.testing.assert_allclose(metrics['loss'][0] / metrics['loss'][1], expected, rtol=1e-5)
    np.testing.assert_allclose(metrics['objective'][0], expected, rtol=1e-5)
  before = jax.tree.leaves(state.params)
  d8 = [np.asarray(a) - b for a, b in zip(jax.tree.leaves(s8.params), before)]  # -lr * grad
  d1 = [np.asarray(a) - b for a, b in zip(jax.tree.leaves(s1.params), before)]
  moved = max(float(np.abs(d).max()) for d in d1)
  for a, b in zip(d8, d1):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * moved)
  assert moved > 1e-3  # the step did move the parameters


def test_eval_step_reports_zero_shot_and_retrieval():
  """The prompts ('a photo of a {}' over the class names) reach the model at evaluation
  only; zero-shot accuracy is the nearest prompt's class, recall@k is over the whole set."""
  config = common.base_config()
  config.data = ml_collections.ConfigDict({'max_len': T})
  model = bigjax.create_model('clip_test', vision_layers=1, text_layers=1)
  names = ['ant', 'bee', 'cat']
  task = get_task('contrastive', config, ByteTokenizer(), class_names=names)
  batch = _batch()
  assert len(task.inputs(batch)) == 2
  prompts = np.asarray(task.eval_inputs(batch)[2])
  assert prompts.shape == (3, T)
  assert bytes(prompts[2][prompts[2] > 0].astype(np.uint8)).decode() == 'a photo of a cat'[:T]
  variables = jax.jit(model.init)(jax.random.key(0), batch['image'][:1], batch['text'][:1])
  metrics, out = jax.jit(
    lambda v, b: (
      make_eval_step(model, task)(init_state_like(v), b),
      model.apply(v, *task.eval_inputs(b)),
    )
  )(variables, batch)
  real = batch['mask']
  scores = np.asarray(out.features['image_embeds'] @ out.features['class_embeds'].T)
  accuracy = (scores.argmax(-1) == batch['label'])[real].mean()
  np.testing.assert_allclose(
    metrics['zero_shot_accuracy'][0] / metrics['zero_shot_accuracy'][1], accuracy
  )
  collected = metrics['collected']
  assert collected['image_embeds'].shape == (B, 16) and collected['mask'].sum() == B - 2


def init_state_like(variables):
  """The smallest state `make_eval_step` reads: `.variables`."""

  class State:
    pass

  state = State()
  state.variables = variables
  return state


def test_retrieval_recall_by_hand():
  # Image i is nearest to text i - 1 (30 degrees), then to text i (60 degrees): recall@1 is
  # 0, recall@2 is 1; text j is nearest to image j + 1, then to image j.
  angle = np.arange(4) * np.pi / 2
  images = np.stack([np.cos(angle), np.sin(angle)], 1)
  texts = np.stack([np.cos(angle + np.pi / 3), np.sin(angle + np.pi / 3)], 1)
  got = retrieval_recall(images, texts, ks=(1, 2))
  assert got['i2t_recall@1'] == 0.0 and got['i2t_recall@2'] == 1.0
  assert got['t2i_recall@1'] == 0.0 and got['t2i_recall@2'] == 1.0
  # Groups: pairs 0 and 1 share a label, so image 1's nearest text (text 0) is a hit, and
  # text 0's nearest image (image 1).
  grouped = retrieval_recall(images, texts, groups=np.array([0, 0, 1, 2]), ks=(1,), chunk=3)
  assert grouped['i2t_recall@1'] == 0.25 and grouped['t2i_recall@1'] == 0.25


def test_in_batch_accuracy_and_match_key():
  """Texts that repeat (one word, many voices): with task.match_key='label' a text of the
  same label is a match."""
  config = common.base_config()
  config.task = ml_collections.ConfigDict({'name': 'contrastive', 'match_key': 'label'})
  task = get_task('contrastive', config)
  plain = get_task('contrastive', common.base_config())
  logits = jnp.asarray([[1.0, 5.0, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
  outputs = ModelOutput(logits=logits, features={'logit_scale': jnp.float32(10.0)})
  batch = {'text': jnp.zeros((3, 2), jnp.int32), 'label': jnp.asarray([4, 4, 7])}
  by_label = task.metrics(outputs, batch)
  by_pair = plain.metrics(outputs, batch)
  assert float(by_label['i2t_accuracy'][0]) == 3 and float(by_pair['i2t_accuracy'][0]) == 1
  assert float(by_label['logit_scale'][0]) == 10.0
