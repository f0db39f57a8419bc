"""Recurrent models: shapes, masking, dropout, cached decoding, jit (bigjax.models.rnn, seq2seq).

Compiles dominate the time here, so each model is initialised once per module (fixtures)
and every apply is jitted (an eager Flax scan recompiles on each call).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax.models.rnn import RNN, carry_output

KEY = jax.random.key(0)


def jitted(model, **kw):
  """model.apply under jit, with fixed keyword arguments `kw`."""
  return jax.jit(lambda variables, *a, **k: model.apply(variables, *a, **k, **kw))


def _tokens(shape, vocab=14, seed=1, low=3):
  return jax.random.randint(jax.random.key(seed), shape, low, vocab)


LM_TOKENS = _tokens((2, 7), 256)
SRC = jnp.array([[3, 4, 5, 6, 2, 0, 0], [7, 8, 9, 10, 11, 12, 2]])  # one row padded
TGT = jnp.array([[1, 6, 5, 4, 3], [1, 12, 11, 10, 9]])


@pytest.fixture(scope='module')
def lm():
  """A two-layer LSTM LM, its params and its jitted apply (shared compiles)."""
  model = bigjax.create_model('lstm_lm_test', num_layers=2)
  return model, jax.jit(model.init)(KEY, LM_TOKENS)['params'], jitted(model)


@pytest.fixture(scope='module')
def gru_lm():
  """A one-layer GRU LM, as `lm`."""
  model = bigjax.create_model('gru_lm_test')
  return model, jax.jit(model.init)(KEY, LM_TOKENS)['params'], jitted(model)


@pytest.fixture(scope='module')
def s2s():
  """A two-layer attention seq2seq over the algorithmic vocabulary, as `lm`."""
  model = bigjax.create_model('seq2seq_lstm_test', vocab_size=14, num_layers=2)
  return model, jax.jit(model.init)(KEY, SRC, TGT)['params'], jitted(model)


# --- shapes -----------------------------------------------------------------------------


def test_lm_shapes(gru_lm):
  model, params, apply = gru_lm
  logits = apply({'params': params}, LM_TOKENS)
  chex.assert_shape(logits, (2, 7, 256))
  chex.assert_type(logits, jnp.float32)
  assert set(params) == {'embed', 'rnn', 'head'}
  assert set(params['rnn']['layer_0']['fwd']) == {'ih', 'hh'}
  chex.assert_shape(params['rnn']['layer_0']['fwd']['hh']['kernel'], (32, 3 * 32))  # [H, G*H]
  elman = bigjax.create_model('rnn_lm_test', vocab_size=20)
  variables = jax.eval_shape(elman.init, KEY, LM_TOKENS % 20)  # shapes only: no compile
  shapes = jax.eval_shape(elman.apply, variables, LM_TOKENS % 20)
  chex.assert_shape(shapes, (2, 7, 20))


@pytest.mark.parametrize('name', ['lstm_classifier_test', 'gru_classifier_test'])
def test_classifier_shapes(name):
  model = bigjax.create_model(name, num_classes=3, vocab_size=20)
  tokens = _tokens((4, 6), 20)
  variables = jax.jit(model.init)(KEY, tokens)
  logits = jitted(model)(variables, tokens)
  chex.assert_shape(logits, (4, 3))
  assert set(variables['params']['rnn']['layer_0']) == {'fwd', 'bwd'}


def test_seq2seq_shapes_and_bf16(s2s):
  model, params, apply = s2s
  src, tgt = SRC, TGT
  logits = apply({'params': params}, src, tgt)
  chex.assert_shape(logits, (2, 5, 14))
  chex.assert_type(logits, jnp.float32)
  # the trainer's mixed precision: bf16 compute over the same float32 params
  low = jitted(model.clone(dtype=jnp.bfloat16))({'params': params}, src, tgt)
  chex.assert_type(low, jnp.float32)  # bf16 compute, float32 logits (an fp32 loss)
  np.testing.assert_allclose(low.astype(jnp.float32), logits, atol=0.1)


def test_param_count_matches_the_lstm_formula():
  # A torch-layout LSTM layer has 4 * (H * I + H * H + 2 * H) parameters per direction.
  model = RNN('lstm', 6, num_layers=2, bidirectional=True)
  params = jax.eval_shape(model.init, KEY, jnp.zeros((1, 3, 5)))['params']
  expected = 2 * 4 * (6 * 5 + 36 + 12) + 2 * 4 * (6 * 12 + 36 + 12)
  assert sum(a.size for a in jax.tree.leaves(params)) == expected


def test_bad_options_are_value_errors():
  with pytest.raises(ValueError, match='lstm'):
    jax.eval_shape(RNN('lstmm', 4).init, KEY, jnp.zeros((1, 2, 3)))
  with pytest.raises(ValueError, match='pooling'):
    model = bigjax.create_model('gru_classifier_test', pooling='max')
    jax.eval_shape(model.init, KEY, jnp.ones((1, 2), jnp.int32))


# --- masking ----------------------------------------------------------------------------


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_padding_leaves_outputs_and_states_unchanged(cell):
  """A right-padded batch gives, on each row's valid steps, the unpadded row's results."""
  model = RNN(cell, 5, num_layers=2, bidirectional=True)
  x = jax.random.normal(KEY, (2, 6, 3))
  lengths = [6, 4]
  mask = jnp.arange(6)[None] < jnp.array(lengths)[:, None]
  x = jnp.where(mask[..., None], x, 7.0)  # junk in the padding must not leak
  variables = jax.jit(model.init)(KEY, x)
  apply = jitted(model)
  y, finals = apply(variables, x, mask=mask)
  np.testing.assert_array_equal(y[1, 4:], 0.0)
  for b, n in enumerate(lengths):
    y1, finals1 = apply(variables, x[b : b + 1, :n])
    np.testing.assert_allclose(y[b, :n], y1[0], atol=1e-6)
    for f, f1 in zip(jax.tree.leaves(finals), jax.tree.leaves(finals1)):
      np.testing.assert_allclose(f[b], f1[0], atol=1e-6)


def test_backward_direction_starts_at_the_last_valid_step():
  model = RNN('lstm', 4, bidirectional=True)
  x = jax.random.normal(KEY, (1, 5, 3))
  mask = jnp.array([[True, True, True, False, False]])
  variables = jax.jit(model.init)(KEY, x)
  apply = jitted(model)
  y, (_, bwd) = apply(variables, x, mask=mask)
  y3, (_, bwd3) = apply(variables, x[:, :3])
  np.testing.assert_allclose(y[0, :3, 4:], y3[0, :, 4:], atol=1e-6)
  np.testing.assert_allclose(carry_output('lstm', bwd), carry_output('lstm', bwd3), atol=1e-6)
  # ignoring the mask would run the backward pass over the padding first: different
  y_nomask, _ = apply(variables, x)
  assert np.abs(np.asarray(y_nomask[0, :3, 4:] - y3[0, :, 4:])).max() > 1e-3


def test_left_padding_is_skipped_too():
  model = RNN('gru', 4)
  x = jax.random.normal(KEY, (1, 5, 3))
  mask = jnp.array([[False, False, True, True, True]])
  variables = jax.jit(model.init)(KEY, x)
  apply = jitted(model)
  y, (h,) = apply(variables, x, mask=mask)
  y3, (h3,) = apply(variables, x[:, 2:])
  np.testing.assert_allclose(y[0, 2:], y3[0], atol=1e-6)
  np.testing.assert_allclose(h, h3, atol=1e-6)
  np.testing.assert_array_equal(y[0, :2], 0.0)


def test_classifier_ignores_padding():
  model = bigjax.create_model('lstm_classifier_test', vocab_size=14)
  tokens = _tokens((1, 4))
  padded = jnp.pad(tokens, ((0, 0), (0, 3)))  # pad id 0
  variables = jax.jit(model.init)(KEY, tokens)
  for pooling in ('last', 'mean'):  # the same params serve both poolings
    apply = jitted(model.clone(pooling=pooling))
    np.testing.assert_allclose(apply(variables, padded), apply(variables, tokens), atol=1e-6)


def test_seq2seq_masks_source_padding(s2s):
  _, params, apply = s2s
  padded = apply({'params': params}, SRC, TGT)  # row 0 is padded from 5 to 7 tokens
  out = jitted(s2s[0])({'params': params}, SRC[:1, :5], TGT[:1])
  np.testing.assert_allclose(padded[:1], out, atol=1e-6)
  # and the source matters: attention and the initial state do read it
  other = apply({'params': params}, SRC[::-1], TGT)
  assert np.abs(np.asarray(other - padded[::-1])).max() > 1e-4


# --- dropout, decoding, jit -------------------------------------------------------------


def test_dropout_only_in_training_and_not_after_the_last_layer(lm):
  model, params, _ = lm
  model = model.clone(dropout_rate=0.5)
  tokens = LM_TOKENS
  eval_out = jitted(model)({'params': params}, tokens)
  train_apply = jax.jit(
    lambda p, t, key: model.apply({'params': p}, t, train=True, rngs={'dropout': key})
  )
  train = lambda seed: train_apply(params, tokens, jax.random.key(seed))  # noqa: E731
  assert np.abs(np.asarray(train(0) - eval_out)).max() > 1e-3
  assert np.abs(np.asarray(train(0) - train(1))).max() > 1e-3
  # a one-layer RNN has no dropout: it sits between layers only
  rnn = RNN('lstm', 4, num_layers=1, dropout_rate=0.9)
  x = jnp.ones((1, 3, 2))
  v = jax.jit(rnn.init)(KEY, x)
  out_train = jitted(rnn, train=True, rngs={'dropout': KEY})(v, x)[0]
  np.testing.assert_array_equal(out_train, jitted(rnn)(v, x)[0])


def test_seq2seq_dropout_only_in_training(s2s):
  model, params, apply = s2s
  model = model.clone(dropout_rate=0.3)  # also between the decoder's layers inside the scan
  train = jax.jit(
    lambda key: model.apply({'params': params}, SRC, TGT, train=True, rngs={'dropout': key})
  )
  a, b = train(jax.random.key(1)), train(jax.random.key(2))
  assert np.abs(np.asarray(a - b)).max() > 1e-3
  assert np.abs(np.asarray(a - apply({'params': params}, SRC, TGT))).max() > 1e-3


def _lm_cached_matches_full(model, params, apply):
  tokens = LM_TOKENS
  full = apply({'params': params}, tokens)
  decoder = model.clone(decode=True)
  cache = jax.jit(decoder.init)(KEY, tokens)['cache']
  assert all(np.all(leaf == 0) for leaf in jax.tree.leaves(cache))  # init does not advance
  step = jitted(decoder, mutable=['cache'])
  outs = []
  for lo, hi in [(0, 3), (3, 4), (4, 5), (5, 6), (6, 7)]:  # a prompt, then one at a time
    logits, mutated = step({'params': params, 'cache': cache}, tokens[:, lo:hi])
    outs.append(logits)
    cache = mutated['cache']
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_lstm_lm_cached_decoding_equals_the_full_pass(lm):
  _lm_cached_matches_full(*lm)


def test_gru_lm_cached_decoding_equals_the_full_pass(gru_lm):
  _lm_cached_matches_full(*gru_lm)


def test_seq2seq_incremental_decoding_equals_full_decoding(s2s):
  model, params, apply = s2s
  src, tgt = SRC, TGT
  full = apply({'params': params}, src, tgt)
  decoder = model.clone(decode=True)
  cache = jax.jit(decoder.init)(KEY, src, tgt)['cache']
  encoded = jitted(decoder, method='encode')({'params': params}, src)
  step = jitted(decoder, method='decode_targets', mutable=['cache'])
  outs = []
  for t in range(tgt.shape[1]):
    logits, mutated = step({'params': params, 'cache': cache}, encoded, tgt[:, t : t + 1])
    outs.append(logits)
    cache = mutated['cache']
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_jit_equals_no_jit(lm, s2s):
  for model, params, apply in (lm, s2s):
    inputs = (LM_TOKENS,) if model is lm[0] else (SRC, TGT)
    np.testing.assert_allclose(
      apply({'params': params}, *inputs),
      model.apply({'params': params}, *inputs),
      atol=1e-6,
    )


def test_bigjax_decode_drives_the_lm_and_seq2seq(lm, s2s):
  """The decode contract: bigjax.decode's greedy output is the argmax of the full model
  run over that same output (teacher forcing), at every step."""
  from bigjax import decode

  model, params, apply = lm
  prompt = LM_TOKENS[:, :3]
  out = decode.generate_lm(model, {'params': params}, prompt, max_new_tokens=4)
  logits = apply({'params': params}, jnp.concatenate([prompt, out], axis=1))  # [B, 7, V]
  np.testing.assert_array_equal(out, jnp.argmax(logits[:, 2:6], -1))
  model, params, apply = s2s
  out = decode.generate_seq2seq(model, {'params': params}, SRC, bos_id=1, max_new_tokens=5)
  logits = apply({'params': params}, SRC, jnp.concatenate([TGT[:, :1], out[:, :4]], axis=1))
  np.testing.assert_array_equal(out, jnp.argmax(logits, -1))
  beams = decode.generate_seq2seq(
    model, {'params': params}, SRC, bos_id=1, max_new_tokens=5, method='beam', beam_size=2
  )
  chex.assert_shape(beams, (2, 5))
