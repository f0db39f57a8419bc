"""The recurrences' fast paths (`model.rnn_impl`, `model.scan_unroll`, the embedding-table
input projection) against the plain scan.

'fused' (bigjax.layers.recurrence.fused_scan) has a hand-written backward, so values and
gradients (parameters, inputs and initial states) are compared with the differentiated
`nn.scan` on the same parameters, with padding and both directions.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import bigjax
from bigjax.models.rnn import RNN, TokenInputs
from bigjax.train.workdir import build_model

B, T, D_IN, H = 3, 7, 5, 6
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(B, T, D_IN)).astype(np.float32))
# Row 0 padded at the end, row 1 in the middle too (a skipped step keeps the state).
MASK = jnp.asarray([[1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 1, 1, 0], [1] * T], bool)


def _objective(model):
  """(params, x, carries) -> a scalar that reads every output and every final state."""

  def f(params, x, carries):
    y, finals = model.apply({'params': params}, x, mask=MASK, initial_carry=carries)
    states = sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(finals))
    return jnp.sum(y * jnp.cos(y)) + states

  return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))


def _carries(model, seed):
  """Random initial states, so the gradient reaching them is not trivially zero."""
  shapes = model.zero_carries(B)
  keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(shapes))))
  return jax.tree.map(lambda z: jax.random.normal(next(keys), z.shape), shapes)


@pytest.mark.parametrize('cell', ['lstm', 'gru', 'rnn'])
def test_fused_equals_scan_values_and_gradients(cell):
  plain = RNN(cell, H, bidirectional=True, rnn_impl='scan')
  fused = plain.clone(rnn_impl='fused', scan_unroll=3)  # 3 does not divide T = 7
  variables = plain.init(jax.random.key(0), X)
  # Same parameter names, shapes and initial values: checkpoints and converters carry over.
  jax.tree.map(np.testing.assert_array_equal, fused.init(jax.random.key(0), X), variables)
  carries = _carries(plain, 1)
  want, want_grads = _objective(plain)(variables['params'], X, carries)
  got, got_grads = _objective(fused)(variables['params'], X, carries)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  close = lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)  # noqa: E731
  jax.tree.map(close, got_grads, want_grads)
  assert float(jnp.abs(got_grads[2][0][0]).sum()) > 0  # the initial state gets a gradient


@pytest.mark.parametrize('impl', ['scan', 'fused'])
def test_unroll_keeps_the_result(impl):
  model = RNN('lstm', H, rnn_impl=impl)
  variables = model.init(jax.random.key(0), X)
  apply = jax.jit(lambda m, v: m.apply(v, X, mask=MASK)[0], static_argnums=0)
  want = apply(model, variables)
  for unroll in (2, T):  # partial, then full unrolling
    np.testing.assert_allclose(apply(model.clone(scan_unroll=unroll), variables), want, atol=1e-6)


def test_bf16_compute_float32_logits_and_grads():
  """bf16 compute over float32 parameters: logits and parameter gradients stay float32 and
  the fused path matches the plain one within bf16 tolerance."""
  tokens = jax.random.randint(jax.random.key(2), (B, T), 1, 256)
  plain = bigjax.create_model('lstm_lm_test', dtype=jnp.bfloat16, rnn_impl='scan')
  fused = plain.clone(rnn_impl='fused')
  params = plain.init(jax.random.key(0), tokens)['params']

  def loss(model):
    def f(p):
      logits = model.apply({'params': p}, tokens)
      assert logits.dtype == jnp.float32
      return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0]), logits

    return jax.jit(jax.value_and_grad(f, has_aux=True))

  (want, want_logits), want_grads = loss(plain)(params)
  (got, got_logits), got_grads = loss(fused)(params)
  (full, _), _ = loss(plain.clone(dtype=jnp.float32))(params)
  assert {g.dtype for g in jax.tree.leaves(got_grads)} == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(got_logits, want_logits, atol=2e-2)
  np.testing.assert_allclose(got, want, rtol=1e-2)
  np.testing.assert_allclose(got, full, rtol=1e-2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-2), got_grads, want_grads)


def test_seq2seq_encoder_fused_equals_scan():
  src = jnp.array([[3, 4, 5, 6, 2, 0, 0], [7, 8, 9, 10, 11, 12, 2]])  # one row padded
  tgt = jnp.array([[1, 6, 5, 4, 3], [1, 12, 11, 10, 9]])
  plain = bigjax.create_model('seq2seq_lstm_test', vocab_size=14, rnn_impl='scan')
  fused = plain.clone(rnn_impl='fused', scan_unroll=2)
  params = plain.init(jax.random.key(0), src, tgt)['params']
  apply = jax.jit(lambda m, p: m.apply({'params': p}, src, tgt), static_argnums=0)
  np.testing.assert_allclose(apply(fused, params), apply(plain, params), atol=1e-5)


def test_switches_reach_the_model_from_the_config():
  config = ml_collections.ConfigDict(
    {'model': {'name': 'gru_lm_test', 'rnn_impl': 'fused', 'scan_unroll': 4}, 'train': {}}
  )
  model = build_model(config)
  assert (model.rnn_impl, model.scan_unroll) == ('fused', 4)


@pytest.mark.parametrize('kw', [{'rnn_impl': 'loop'}, {'scan_unroll': 0}])
def test_bad_switch_values_raise(kw):
  model = RNN('gru', H, **kw)
  with pytest.raises(ValueError, match='rnn_impl|scan_unroll'):
    model.init(jax.random.key(0), X)


@pytest.mark.parametrize('impl,cell', [('scan', 'lstm'), ('fused', 'lstm'), ('fused', 'gru')])
def test_token_inputs_equal_embedded_inputs(impl, cell):
  """A first layer fed `TokenInputs` (project the table, gather rows) equals one fed the
  looked-up embeddings: values and gradients, the table's included."""
  table = jnp.asarray(RNG.normal(size=(11, D_IN)).astype(np.float32))  # [V, E]
  ids = jnp.asarray(RNG.integers(0, 11, (B, T)))
  model = RNN(cell, H, num_layers=2, bidirectional=True, rnn_impl=impl)
  params = model.init(jax.random.key(0), X)['params']

  def f(params, table, lazy):
    x = TokenInputs(table, ids) if lazy else jnp.take(table, ids, axis=0)
    y, finals = model.apply({'params': params}, x, mask=MASK)
    return jnp.sum(y * jnp.cos(y)) + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(finals))

  grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)), static_argnums=2)
  want, want_grads = grad(params, table, False)
  got, got_grads = grad(params, table, True)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  close = lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)  # noqa: E731
  jax.tree.map(close, got_grads, want_grads)


def test_lm_projects_the_table_only_where_identical():
  """The LM takes the table path when V <= B*T and no embedding dropout is active, with the
  logits of embedding, RNN and head applied one after the other."""
  tokens = jax.random.randint(jax.random.key(3), (B, T), 0, 20)  # V = 20 <= 21 tokens
  model = bigjax.create_model('lstm_lm_test', vocab_size=20)
  params = model.init(jax.random.key(0), tokens)['params']
  got = jax.jit(model.apply)({'params': params}, tokens)
  rnn = RNN('lstm', model.hidden_size)
  x = jnp.take(params['embed']['embedding'], tokens, axis=0)  # [B, T, E]
  y, _ = rnn.apply({'params': params['rnn']}, x)
  want = y @ params['head']['kernel'] + params['head']['bias']
  np.testing.assert_allclose(got, want, atol=1e-5)
  jaxpr = str(jax.make_jaxpr(model.apply)({'params': params}, tokens))
  assert 'f32[20,128]' in jaxpr  # the projected table [V, G*H] exists: the fast path ran
