"""The encoder-decoder Transformer: shapes, masks, parameter counts, cached decoding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax import decode
from bigjax.models import transformer

SRC = jnp.array([[5, 6, 7, 8, 0, 0], [3, 4, 5, 6, 7, 9]], jnp.int32)
TGT = jnp.array([[1, 9, 8, 7, 6], [1, 2, 3, 0, 0]], jnp.int32)


def _model(**kw):
  return bigjax.create_model('transformer_test', **{'dropout_rate': 0.0, **kw})


@pytest.fixture(scope='module')
def post_ln():
  model = _model()
  return model, model.init(jax.random.key(0), SRC, TGT)


def test_shapes_and_dtype(post_ln):
  model, variables = post_ln
  logits = model.apply(variables, SRC, TGT)
  chex.assert_shape(logits, (2, 5, 64))
  chex.assert_type(logits, jnp.float32)
  encoded = model.apply(variables, SRC, method='encode')
  chex.assert_shape(encoded['hidden'], (2, 6, 32))
  np.testing.assert_array_equal(encoded['mask'], SRC != 0)
  bf16 = _model(dtype=jnp.bfloat16).apply(variables, SRC, TGT)
  chex.assert_type(bf16, jnp.float32)  # bf16 compute, float32 logits
  np.testing.assert_allclose(bf16.astype(jnp.float32), logits, atol=0.15)


def test_jit_matches_eager_and_dropout(post_ln):
  _, variables = post_ln
  model = _model(dropout_rate=0.3)
  apply = jax.jit(model.apply, static_argnames=('train',))
  eager = model.apply(variables, SRC, TGT)
  jitted = apply(variables, SRC, TGT)
  np.testing.assert_allclose(eager, jitted, atol=1e-5)
  drop = lambda seed: apply(  # noqa: E731
    variables, SRC, TGT, train=True, rngs={'dropout': jax.random.key(seed)}
  )
  assert not np.allclose(drop(0), eager, atol=1e-3)
  assert not np.allclose(drop(0), drop(1), atol=1e-3)


def test_padded_source_tokens_are_ignored(post_ln):
  model, variables = post_ln
  # Padded positions are the ones holding id 0, so "changing a padded token" means changing
  # what the model reads there: the embedding row of id 0. Only padding reads it (and the
  # tied output's logit for id 0), so every other output must stay put.
  bumped = jax.tree.map(lambda x: x, variables)
  emb = variables['params']['embed']['embedding']
  bumped['params']['embed']['embedding'] = emb.at[0].add(3.0)
  a = model.apply(variables, SRC, TGT)
  b = model.apply(bumped, SRC, TGT)
  valid = TGT != 0
  np.testing.assert_allclose(a[valid][:, 1:], b[valid][:, 1:], atol=1e-5)
  hidden = lambda v: model.apply(v, SRC, method='encode')['hidden']  # noqa: E731
  np.testing.assert_allclose(hidden(variables)[SRC != 0], hidden(bumped)[SRC != 0], atol=1e-5)
  # Extra padding at the end of the source changes nothing either.
  longer = jnp.pad(SRC, ((0, 0), (0, 3)))
  np.testing.assert_allclose(model.apply(variables, longer, TGT), a, atol=1e-5)
  # A real source token does matter (so the checks above are not vacuous).
  changed = model.apply(variables, SRC.at[0, 1].set(11), TGT)
  assert not np.allclose(changed[0], a[0], atol=1e-3)


def test_target_padding_does_not_leak_into_valid_positions(post_ln):
  model, variables = post_ln
  a = model.apply(variables, SRC, TGT)
  b = model.apply(variables, SRC, jnp.pad(TGT, ((0, 0), (0, 2))))
  np.testing.assert_allclose(a, b[:, :5], atol=1e-5)
  # Causality: a later target token cannot change earlier logits.
  c = model.apply(variables, SRC, TGT.at[0, 3].set(40))
  np.testing.assert_allclose(a[0, :3], c[0, :3], atol=1e-5)
  assert not np.allclose(a[0, 3:], c[0, 3:], atol=1e-3)


@pytest.mark.parametrize(
  'options',
  [dict(), dict(pre_norm=True, tie_output=False, share_embeddings=False)],
  ids=['post_ln_tied', 'pre_ln_untied'],
)
def test_incremental_decoding_equals_full_forward(options):
  model = _model(**options)
  tgt = jnp.array([[1, 9, 8, 7, 6, 5], [1, 2, 3, 4, 10, 11]], jnp.int32)  # no padding
  variables = model.init(jax.random.key(1), SRC, tgt)
  full = model.apply(variables, SRC, tgt)
  decoder = model.clone(decode=True)
  encoded = model.apply(variables, SRC, method='encode')
  cache = decoder.init(
    jax.random.key(0), encoded, jnp.zeros((2, 8), jnp.int32), method='decode_targets'
  )['cache']
  chunks = []
  for start, stop in [(0, 2), (2, 3), (3, 4), (4, 6)]:  # a 2-token prefill, then steps
    logits, mutated = decoder.apply(
      {**variables, 'cache': cache},
      encoded,
      tgt[:, start:stop],
      method='decode_targets',
      mutable=['cache'],
    )
    cache = mutated['cache']
    chunks.append(logits)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, atol=1e-5, rtol=1e-5)
  assert int(cache['tgt_positions']['index']) == 6


def test_layout_options():
  params = lambda m: jax.eval_shape(m.init, jax.random.key(0), SRC, TGT)['params']  # noqa: E731
  post = params(_model())
  assert 'norm' not in post['encoder'] and 'norm' not in post['decoder']
  assert 'logits' not in post and set(post) >= {'embed', 'encoder', 'decoder'}
  pre = params(_model(pre_norm=True, share_embeddings=False, tie_output=False))
  assert 'norm' in pre['encoder'] and 'norm' in pre['decoder']
  assert {'src_embed', 'tgt_embed', 'logits'} <= set(pre) and 'embed' not in pre
  assert 'norm' in params(_model(final_norm=True))['decoder']
  with pytest.raises(ValueError, match='max_len'):
    jax.eval_shape(_model(max_len=4, decode=True).init, jax.random.key(0), SRC, TGT)


def _count(name, vocab):
  model = bigjax.create_model(name, vocab_size=vocab)
  shapes = jax.eval_shape(
    model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32)
  )
  return sum(x.size for x in jax.tree.leaves(shapes['params']))


def _formula(d, f, n, vocab):
  attn = 4 * (d * d + d)
  mlp = 2 * d * f + f + d
  encoder = n * (attn + mlp + 2 * 2 * d)
  decoder = n * (2 * attn + mlp + 3 * 2 * d)
  return vocab * d + encoder + decoder


@pytest.mark.parametrize('name,d,f,paper', [('base', 512, 2048, 65e6), ('big', 1024, 4096, 213e6)])
def test_parameter_count(name, d, f, paper):
  # Shared source/target BPE vocabulary of about 37000 tokens (section 5.1); Table 3 counts.
  count = _count(f'transformer_{name}', 37000)
  assert count == _formula(d, f, 6, 37000)
  assert abs(count - paper) / paper < 0.04, count


def test_registered_variants():
  for name in ('transformer_base', 'transformer_big', 'transformer_test'):
    assert name in bigjax.list_models()
  big = bigjax.create_model('transformer_big')
  assert (big.hidden_size, big.num_heads, big.mlp_dim, big.dropout_rate) == (1024, 16, 4096, 0.3)
  assert transformer.VARIANTS['base']['dropout_rate'] == 0.1


def test_cached_decoding_with_pad_ids_in_the_target_equals_full_forward(post_ln):
  # One masking rule: target keys holding the pad id are hidden in the full forward pass
  # and in the KV cache alike.
  model, variables = post_ln
  tgt = jnp.array([[1, 9, 0, 7, 6], [1, 2, 3, 0, 10]], jnp.int32)
  full = model.apply(variables, SRC, tgt)
  step, cache = decode.seq2seq_decoder(model, variables, SRC, max_len=5)
  chunks = []
  for start, stop in [(0, 2), (2, 3), (3, 4), (4, 5)]:
    logits, cache = step(cache, tgt[:, start:stop])
    chunks.append(logits)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, atol=1e-5, rtol=1e-5)


def test_gelu_is_exact_and_gelu_tanh_approximate(post_ln):
  _, variables = post_ln
  out = {a: _model(activation=a).apply(variables, SRC, TGT) for a in ('gelu', 'gelu_tanh')}
  assert np.abs(out['gelu'] - out['gelu_tanh']).max() > 1e-5
  with pytest.raises(ValueError, match='unknown activation'):
    _model(activation='gelu_exact').apply(variables, SRC, TGT)
