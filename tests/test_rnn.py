"""Recurrent models: shapes, masking, dropout, cached decoding, jit (bigjax.models.rnn, seq2seq)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax.models.rnn import RNN, carry_output

KEY = jax.random.key(0)


def _tokens(shape, vocab=14, seed=1, low=3):
  return jax.random.randint(jax.random.key(seed), shape, low, vocab)


@pytest.mark.parametrize('name', ['lstm_lm_test', 'gru_lm_test', 'rnn_lm_test'])
def test_lm_shapes(name):
  model = bigjax.create_model(name, vocab_size=20)
  tokens = _tokens((2, 5), 20)
  variables = model.init(KEY, tokens)
  logits = model.apply(variables, tokens)
  chex.assert_shape(logits, (2, 5, 20))
  chex.assert_type(logits, jnp.float32)
  assert set(variables['params']) == {'embed', 'rnn', 'head'}
  assert set(variables['params']['rnn']) == {'layer_0'}


@pytest.mark.parametrize('name', ['lstm_classifier_test', 'gru_classifier_test'])
def test_classifier_shapes(name):
  model = bigjax.create_model(name, num_classes=3, vocab_size=20)
  tokens = _tokens((4, 6), 20)
  variables = model.init(KEY, tokens)
  logits = model.apply(variables, tokens)
  chex.assert_shape(logits, (4, 3))
  assert set(variables['params']['rnn']['layer_0']) == {'fwd', 'bwd'}


def test_seq2seq_shapes_and_bf16():
  model = bigjax.create_model('seq2seq_lstm_test', vocab_size=14, dtype=jnp.bfloat16)
  src, tgt = _tokens((2, 7)), _tokens((2, 4), seed=2)
  variables = model.init(KEY, src, tgt)
  logits = model.apply(variables, src, tgt)
  chex.assert_shape(logits, (2, 4, 14))
  chex.assert_type(logits, jnp.bfloat16)
  # params stay float32 under bf16 compute; the LSTM carry is float32 too
  chex.assert_trees_all_equal_dtypes(
      variables['params'], jax.tree.map(lambda a: a.astype(jnp.float32), variables['params'])
  )


def test_param_count_matches_the_lstm_formula():
  # A torch-layout LSTM layer has 4 * (H * I + H * H + 2 * H) parameters per direction.
  model = RNN('lstm', 6, num_layers=2, bidirectional=True)
  params = model.init(KEY, jnp.zeros((1, 3, 5)))['params']
  expected = 2 * 4 * (6 * 5 + 36 + 12) + 2 * 4 * (6 * 12 + 36 + 12)
  assert sum(a.size for a in jax.tree.leaves(params)) == expected


def test_unknown_cell_is_a_value_error():
  with pytest.raises(ValueError, match='lstm'):
    RNN('lstmm', 4).init(KEY, jnp.zeros((1, 2, 3)))


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_padding_leaves_outputs_and_states_unchanged(cell):
  """A right-padded batch gives, on each row's valid steps, the unpadded row's results."""
  model = RNN(cell, 5, num_layers=2, bidirectional=True)
  x = jax.random.normal(KEY, (2, 6, 3))
  lengths = [6, 4]
  mask = jnp.arange(6)[None] < jnp.array(lengths)[:, None]
  x = jnp.where(mask[..., None], x, 7.0)  # junk in the padding must not leak
  variables = model.init(KEY, x)
  y, finals = model.apply(variables, x, mask=mask)
  np.testing.assert_array_equal(y[1, 4:], 0.0)
  for b, n in enumerate(lengths):
    y1, finals1 = model.apply(variables, x[b : b + 1, :n])
    np.testing.assert_allclose(y[b, :n], y1[0], atol=1e-6)
    for f, f1 in zip(jax.tree.leaves(finals), jax.tree.leaves(finals1)):
      np.testing.assert_allclose(f[b], f1[0], atol=1e-6)


def test_backward_direction_starts_at_the_last_valid_step():
  model = RNN('lstm', 4, bidirectional=True)
  x = jax.random.normal(KEY, (1, 5, 3))
  mask = jnp.array([[True, True, True, False, False]])
  variables = model.init(KEY, x)
  y, (fwd, bwd) = model.apply(variables, x, mask=mask)
  y3, (fwd3, bwd3) = model.apply(variables, x[:, :3])
  # the backward output at the last valid step has seen that step alone, from zero state
  np.testing.assert_allclose(y[0, :3, 4:], y3[0, :, 4:], atol=1e-6)
  np.testing.assert_allclose(carry_output('lstm', bwd), carry_output('lstm', bwd3), atol=1e-6)
  # ignoring the mask would run the backward pass over the padding first: different
  y_nomask, _ = model.apply(variables, x)
  assert np.abs(np.asarray(y_nomask[0, :3, 4:] - y3[0, :, 4:])).max() > 1e-3


def test_left_padding_is_skipped_too():
  model = RNN('gru', 4)
  x = jax.random.normal(KEY, (1, 5, 3))
  mask = jnp.array([[False, False, True, True, True]])
  variables = model.init(KEY, x)
  y, (h,) = model.apply(variables, x, mask=mask)
  y3, (h3,) = model.apply(variables, x[:, 2:])
  np.testing.assert_allclose(y[0, 2:], y3[0], atol=1e-6)
  np.testing.assert_allclose(h, h3, atol=1e-6)
  np.testing.assert_array_equal(y[0, :2], 0.0)


@pytest.mark.parametrize('pooling', ['last', 'mean'])
def test_classifier_ignores_padding(pooling):
  model = bigjax.create_model('lstm_classifier_test', pooling=pooling, vocab_size=14)
  tokens = _tokens((1, 4))
  padded = jnp.pad(tokens, ((0, 0), (0, 3)))  # pad id 0
  variables = model.init(KEY, tokens)
  np.testing.assert_allclose(
      model.apply(variables, padded), model.apply(variables, tokens), atol=1e-6
  )


def test_dropout_only_in_training_and_not_after_the_last_layer():
  model = bigjax.create_model('lstm_lm_test', num_layers=2, dropout_rate=0.5)
  tokens = _tokens((2, 6))
  variables = model.init(KEY, tokens)
  eval_out = model.apply(variables, tokens)
  train = lambda seed: model.apply(  # noqa: E731
      variables, tokens, train=True, rngs={'dropout': jax.random.key(seed)}
  )
  assert np.abs(np.asarray(train(0) - eval_out)).max() > 1e-3
  assert np.abs(np.asarray(train(0) - train(1))).max() > 1e-3
  np.testing.assert_array_equal(model.apply(variables, tokens, train=False), eval_out)
  # a one-layer RNN has no dropout: it sits between layers only
  rnn = RNN('lstm', 4, num_layers=1, dropout_rate=0.9)
  x = jnp.ones((1, 3, 2))
  v = rnn.init(KEY, x)
  np.testing.assert_array_equal(
      rnn.apply(v, x, train=True, rngs={'dropout': KEY})[0], rnn.apply(v, x)[0]
  )


@pytest.mark.parametrize('name', ['lstm_lm_test', 'gru_lm_test'])
def test_lm_cached_decoding_equals_the_full_pass(name):
  model = bigjax.create_model(name, num_layers=2)
  tokens = _tokens((2, 7), 256)
  params = model.init(KEY, tokens)['params']
  full = model.apply({'params': params}, tokens)
  decoder = model.clone(decode=True)
  cache = decoder.init(KEY, tokens)['cache']
  assert all(np.all(leaf == 0) for leaf in jax.tree.leaves(cache))  # init does not advance
  step = jax.jit(lambda c, t: decoder.apply({'params': params, 'cache': c}, t,
                                            mutable=['cache']))
  outs = []
  logits, mutated = step(cache, tokens[:, :3])  # a prompt, then one token at a time
  outs.append(logits)
  cache = mutated['cache']
  for t in range(3, 7):
    logits, mutated = step(cache, tokens[:, t : t + 1])
    outs.append(logits)
    cache = mutated['cache']
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_seq2seq_incremental_decoding_equals_full_decoding():
  model = bigjax.create_model('seq2seq_lstm_test', vocab_size=14, num_layers=2)
  src = jnp.array([[3, 4, 5, 6, 2, 0, 0], [7, 8, 9, 10, 11, 12, 2]])
  tgt = jnp.array([[1, 6, 5, 4, 3], [1, 12, 11, 10, 9]])
  params = model.init(KEY, src, tgt)['params']
  full = model.apply({'params': params}, src, tgt)
  decoder = model.clone(decoding=True)
  cache = decoder.init(KEY, src, tgt)['cache']
  encoded = decoder.apply({'params': params}, src, method='encode')
  outs = []
  for t in range(tgt.shape[1]):
    logits, mutated = decoder.apply({'params': params, 'cache': cache}, encoded,
                                    tgt[:, t : t + 1], method='decode', mutable=['cache'])
    outs.append(logits)
    cache = mutated['cache']
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_seq2seq_masks_source_padding():
  model = bigjax.create_model('seq2seq_lstm_test', vocab_size=14)
  src = _tokens((1, 4))
  tgt = _tokens((1, 3), seed=3)
  variables = model.init(KEY, src, tgt)
  out = model.apply(variables, src, tgt)
  padded = model.apply(variables, jnp.pad(src, ((0, 0), (0, 5))), tgt)
  np.testing.assert_allclose(padded, out, atol=1e-6)
  # and the source matters: attention and the initial state do read it
  other = model.apply(variables, _tokens((1, 4), seed=9), tgt)
  assert np.abs(np.asarray(other - out)).max() > 1e-4


def test_jit_equals_no_jit():
  lm = bigjax.create_model('gru_lm_test')
  tokens = _tokens((2, 5), 256)
  v = lm.init(KEY, tokens)
  np.testing.assert_allclose(jax.jit(lm.apply)(v, tokens), lm.apply(v, tokens), atol=1e-6)
  s2s = bigjax.create_model('seq2seq_lstm_test', vocab_size=14)
  src, tgt = _tokens((2, 6)), _tokens((2, 3), seed=4)
  v = s2s.init(KEY, src, tgt)
  np.testing.assert_allclose(jax.jit(s2s.apply)(v, src, tgt), s2s.apply(v, src, tgt),
                             atol=1e-6)
