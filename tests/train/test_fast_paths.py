"""Each fast path of the Transformer family gives the plain path's training step.

One train step (`make_train_step`, as the trainer runs it) of a tiny GPT, Llama, BERT
(masked LM), ViT and encoder-decoder Transformer, from the same parameters (converted to
the fast path's layout where it has another: stacked layers, a padded vocabulary), with
one fast path on: its objective and gradient norm equal the plain path's (float32 to
rounding; bf16 compute within bf16 tolerance). Dropout is off so the paths see the same
function. One compile per test; the plain step is compiled once per family.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigjax.layers import stack_layers
from bigjax.registry import create_model
from bigjax.train import optim
from bigjax.train.state import init_state
from bigjax.train.step import make_train_step
from bigjax.train.tasks import get_task

B, T = 4, 12


def _batch(family: str) -> dict:
  rng = np.random.default_rng(0)
  tokens = lambda high, shape=(B, T): rng.integers(1, high, shape).astype(np.int32)  # noqa: E731
  if family in ('gpt', 'llama'):
    targets = tokens(250)
    targets[:, -3:] = 0  # padding: not scored
    return {'inputs': tokens(250), 'targets': targets}
  if family == 'bert':
    ids = tokens(120)
    ids[:, -4:] = 0  # right padding (pad id 0)
    labels = np.where(rng.random((B, T)) < 0.3, tokens(120), -1)
    labels[:, 0] = 5  # every row scores at least one token
    return {'input_ids': ids, 'segment_ids': np.zeros_like(ids), 'mlm_labels': labels}
  if family == 'vit':
    return {'image': rng.normal(size=(B, 8, 8, 3)).astype(np.float32), 'label': tokens(10, (B,))}
  src, tgt = tokens(60), tokens(60, (B, T + 1))
  src[:, -2:] = 0
  tgt[:, -3:] = 0
  return {'src': src, 'tgt_in': tgt[:, :-1], 'tgt_out': tgt[:, 1:]}


# family -> (registered model, plain options, task)
FAMILIES = {
  'gpt': ('gpt2_test', dict(vocab_size=250, vocab_multiple=1), 'lm'),
  'llama': ('llama_test', dict(vocab_size=250, vocab_multiple=1), 'lm'),
  'bert': ('bert_test', dict(head='mlm', vocab_size=120, dropout_rate=0.0), 'mlm'),
  'vit': ('vit_test', dict(patch_size=4), 'classification'),
  'transformer': ('transformer_test', dict(dropout_rate=0.0), 'seq2seq'),
}
# Where each family keeps its layer stacks (for scan_layers' stacked layout).
STACKS = {
  'gpt': [((), 2)],
  'llama': [((), 2)],
  'bert': [(('encoder',), 2)],
  'vit': [((), 2)],
  'transformer': [(('encoder',), 2), (('decoder',), 2)],
}
VOCAB_TABLES = {  # (path, axis) of the vocabulary axis, for vocab_multiple
  'gpt': [(('embed', 'embedding'), 0)],
  'llama': [(('embed', 'embedding'), 0), (('lm_head', 'kernel'), 1)],
  'bert': [(('embeddings', 'word', 'embedding'), 0), (('mlm', 'bias'), 0)],
}


def _config(accum: int = 1) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {
      'optim': {'name': 'adam', 'grad_accum_steps': accum},
      'train': {'label_smoothing': 0.1},
      'data': {},
      'model': {'num_classes': 10},
    }
  )


def _convert(family: str, params: dict, options: dict) -> dict:
  """The plain path's parameters in the layout of the model with `options`."""
  params = jax.tree.map(lambda x: x, params)  # a copy of the dict structure
  if options.get('vocab_multiple', 1) > 1:
    for path, axis in VOCAB_TABLES[family]:
      parent = functools.reduce(lambda d, k: d[k], path[:-1], params)
      table = parent[path[-1]]
      pad = -table.shape[axis] % options['vocab_multiple']
      widths = [(0, 0)] * table.ndim
      widths[axis] = (0, pad)
      parent[path[-1]] = jnp.pad(table, widths)
  if options.get('scan_layers'):
    for path, layers in STACKS[family]:
      if path:
        params[path[0]] = stack_layers(params[path[0]], layers)
      else:
        params = stack_layers(params, layers)
  return params


def _step(family: str, options: dict, accum: int = 1):
  """(objective, grad norm) of one jitted train step of `family` with `options`."""
  name, plain, task_name = FAMILIES[family]
  config = _config(accum)
  schedule = optax.constant_schedule(1e-3)
  tx = optim.make_optimizer(config.optim, schedule)
  batch = _batch(family)
  task = get_task(task_name, config)
  base = create_model(name, **plain)
  state = init_state(base, tx, jax.random.key(0), task.inputs(batch))
  model = create_model(name, **{**plain, **options})
  params = _convert(family, state.params, options)
  state = state.replace(params=params, opt_state=tx.init(params))
  step = jax.jit(make_train_step(model, task, config, schedule, tx))
  _, metrics = step(state, batch, jax.random.key(1))
  objective, share = metrics['objective']
  return float(objective / share), float(metrics['grad_norm'][0])


@functools.cache
def _plain(family: str):
  return _step(family, {})


# Fast paths that do not interact share a compile.
CASES = [
  ('gpt', dict(loss_chunk=5, vocab_multiple=64)),  # 36 scored tokens: the last chunk padded
  ('gpt', dict(remat_policy='dots')),
  ('gpt', dict(scan_layers=True, remat_policy='dots_no_batch', attention_impl='auto')),
  ('llama', dict(loss_chunk=7, vocab_multiple=32, scan_layers=True, remat=True)),
  ('bert', dict(loss_chunk=8, vocab_multiple=64)),
  ('bert', dict(scan_layers=True, remat_policy='dots', attention_impl='auto')),
  ('vit', dict(scan_layers=True, remat=True, attention_impl='auto')),
  ('transformer', dict(scan_layers=True, remat_policy='dots_no_batch', attention_impl='auto')),
]


@pytest.mark.parametrize('family,options', CASES, ids=lambda x: x if isinstance(x, str) else '-')
def test_fast_path_equals_plain(family, options):
  objective, grad_norm = _step(family, options)
  want_objective, want_grad_norm = _plain(family)
  np.testing.assert_allclose(objective, want_objective, rtol=2e-6)
  np.testing.assert_allclose(grad_norm, want_grad_norm, rtol=2e-5)


@pytest.mark.parametrize('family', ['gpt', 'bert'])
def test_grad_accum_equals_one_batch(family):
  """Two micro-batches in one step make the update of the whole batch."""
  objective, grad_norm = _step(family, {'loss_chunk': 8}, 2)
  want_objective, want_grad_norm = _plain(family)
  np.testing.assert_allclose(objective, want_objective, rtol=2e-6)
  np.testing.assert_allclose(grad_norm, want_grad_norm, rtol=2e-5)


@pytest.mark.parametrize('family', ['gpt', 'bert', 'vit', 'transformer'])
def test_bf16_compute_within_bf16_tolerance(family):
  """bf16 compute (fp32 parameters, fp32 logits and loss) tracks the float32 step."""
  objective, grad_norm = _step(family, {'dtype': jnp.bfloat16})
  want_objective, want_grad_norm = _plain(family)
  np.testing.assert_allclose(objective, want_objective, rtol=2e-2)
  np.testing.assert_allclose(grad_norm, want_grad_norm, rtol=5e-2)


def test_unknown_remat_policy_says_what_to_choose():
  model = create_model('gpt2_test', remat_policy='most')
  with pytest.raises(ValueError, match='remat_policy'):
    model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))


def test_lazy_logits_refuse_full_logit_use():
  """What needs every logit gets a one-line fix instead of a silent materialisation."""
  model = create_model('gpt2_test', loss_chunk=4)
  tokens = jnp.ones((1, 8), jnp.int32)
  variables = model.init(jax.random.key(0), tokens)
  logits = model.apply(variables, tokens, train=True).logits
  with pytest.raises(ValueError, match='loss_chunk=0'):
    logits.astype(jnp.float32)
  plain = model.apply(variables, tokens, train=False).logits  # eval: full logits
  np.testing.assert_allclose(logits.materialize(), plain, rtol=1e-6)
