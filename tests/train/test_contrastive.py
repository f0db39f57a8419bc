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
from bigjax.train import sharding
from bigjax.train.step import add_metrics, make_eval_step, summarize
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


def _random_params(abstract, seed: int = 0):
  """Values for abstract parameters, drawn with numpy (no compiled init): N(0, 1 / fan_in)
  kernels and embeddings, scales in [0.5, 1.5], biases N(0, 0.1), logit_scale log(1/0.07)."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == 'logit_scale':
      return jnp.float32(np.log(1 / 0.07))
    if name == 'bias':
      return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
    if name == 'scale':
      return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype)
    return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def test_eight_devices_give_the_global_loss_and_gradients_of_one():
  """With the batch sharded over 8 devices, the [B, B] logits still span the whole batch:
  the objective the train step optimises, sum(weights * loss) / sum(weights), is NumPy's
  contrastive loss over the 14 real pairs, and its gradients are those of one device."""
  model = bigjax.create_model('clip_test', vision_layers=1, text_layers=1)
  task = get_task('contrastive', common.base_config())
  batch = _batch()
  init = jax.eval_shape(model.init, jax.random.key(0), batch['image'][:1], batch['text'][:1])
  params = _random_params(init['params'])

  def objective(params, batch):
    outputs = model.apply({'params': params}, *task.inputs(batch))
    w = task.weights(batch)
    return jnp.sum(task.loss(outputs, batch) * w) / jnp.sum(w), outputs.logits

  results = []
  for devices in (jax.devices(), jax.devices()[:1]):
    mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1}), devices)
    repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    step = jax.jit(
      jax.value_and_grad(objective, has_aux=True),
      in_shardings=(repl, batch_sh),
      out_shardings=repl,
    )
    results.append(step(params, sharding.global_batch(batch, mesh)))
  ((loss8, logits8), grads8), ((loss1, logits1), grads1) = results
  assert len(jax.devices()) == 8
  real = batch['mask']
  logits = np.asarray(logits1)
  np.testing.assert_allclose(logits8, logits, rtol=1e-5, atol=1e-5)
  expected = _np_contrastive(logits[real][:, real]).mean()
  np.testing.assert_allclose(loss8, expected, rtol=1e-5)
  np.testing.assert_allclose(loss1, expected, rtol=1e-5)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads1))
  assert scale > 1e-3
  for a, b in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


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

  init = jax.eval_shape(model.init, jax.random.key(0), batch['image'][:1], batch['text'][:1])
  variables = {'params': _random_params(init['params'])}

  @jax.jit
  def run(variables, batch):
    metrics = make_eval_step(model, task)(init_state_like(variables), batch)
    return metrics, model.apply(variables, *task.eval_inputs(batch))

  metrics, out = run(variables, batch)
  real = batch['mask']
  scores = np.asarray(out.features['image_embeds'] @ out.features['class_embeds'].T)
  accuracy = (scores.argmax(-1) == batch['label'])[real].mean()
  np.testing.assert_allclose(
    metrics['zero_shot_accuracy'][0] / metrics['zero_shot_accuracy'][1], accuracy
  )
  collected = metrics['collected']
  assert collected['image_embeds'].shape == (B, 16) and collected['mask'].sum() == B - 2
  summary = summarize(add_metrics(None, metrics), task)  # what an eval reports
  features = {k: np.asarray(out.features[k])[real] for k in ('image_embeds', 'text_embeds')}
  expected = retrieval_recall(features['image_embeds'], features['text_embeds'])  # 14 pairs
  assert {k: summary[k] for k in expected} == pytest.approx(expected)
  assert summary['zero_shot_accuracy'] == pytest.approx(accuracy)


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
  # Three copies of one text (group 0) do not fill image 3's top 2: groups are ranked.
  e1, e2 = np.eye(2)
  images = np.stack([e1, e1, e1, 0.8 * e1 + 0.6 * e2])
  texts = np.stack([e1, e1, e1, e2])
  got = retrieval_recall(images, texts, groups=np.array([0, 0, 0, 1]), ks=(1, 2))
  assert got['i2t_recall@1'] == 0.75 and got['i2t_recall@2'] == 1.0
  assert got['t2i_recall@1'] == 1.0


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
