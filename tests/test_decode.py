"""bigjax.decode: greedy, sampling and beam search over cached step functions."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax import decode, layers

BOS, EOS = 1, 2


# Toy step functions: cheap to compile, with distributions known exactly.
def _bigram(log_table, cache, tokens):
  """Next-token log-probs depend on the current token only; the cache counts tokens."""
  return log_table[tokens], {'count': cache['count'] + tokens.shape[1]}


def _counter(cache, tokens):
  """Predicts the absolute position of the next token (mod V): 0, 1, 2, ... ."""
  pos = cache['count'][:, None] + jnp.arange(tokens.shape[1])[None] + 1  # [B, L]
  return 10.0 * jax.nn.one_hot(pos % 32, 32), {'count': cache['count'] + tokens.shape[1]}


def _fixed(logits, cache, tokens, valid=None):
  del cache, valid
  return jnp.broadcast_to(logits, (*tokens.shape, logits.shape[-1])), {}


def _bigram_step(table):
  return jax.tree_util.Partial(_bigram, jnp.log(jnp.asarray(table, jnp.float32) + 1e-12))


def _counts(batch, start=0):
  return {'count': jnp.full((batch,), start, jnp.int32)}


# ----------------------------------------------------------------------------- filtering
PROBS = np.array([0.5, 0.3, 0.15, 0.05])


@pytest.mark.parametrize(
  'top_k,top_p,kept',
  [
    (0, 0.4, {0}),
    (0, 0.7, {0, 1}),
    (0, 0.85, {0, 1, 2}),
    (0, 0.97, {0, 1, 2, 3}),
    (0, 1.0, {0, 1, 2, 3}),
    (2, 1.0, {0, 1}),
    (1, 1.0, {0}),
    (3, 0.7, {0, 1}),
  ],
)
def test_filter_logits_hand_made(top_k, top_p, kept):
  # Shuffled, so the cut-off must follow probability, not position.
  order = np.array([2, 0, 3, 1])
  logits = jnp.log(jnp.asarray(PROBS[order]))[None]  # [1, V]
  out = np.asarray(decode.filter_logits(logits, top_k=top_k, top_p=top_p))[0]
  assert {int(order[i]) for i in np.flatnonzero(np.isfinite(out))} == kept
  np.testing.assert_allclose(
    out[np.isfinite(out)], np.log(PROBS[order])[np.isfinite(out)], rtol=1e-6
  )


def test_nucleus_sampling_renormalises():
  # Tokens 1..4 carry PROBS; the pad id 0 has probability 0.
  logits = jnp.log(jnp.asarray(np.concatenate([[0.0], PROBS]), jnp.float32))
  step = jax.tree_util.Partial(_fixed, logits)
  prompt = jnp.ones((4000, 1), jnp.int32)
  out = decode.sample(step, {}, prompt, jax.random.key(0), max_new_tokens=1, top_p=0.7)
  tokens = np.asarray(out[:, 0])
  assert set(np.unique(tokens)) == {1, 2}
  assert abs((tokens == 1).mean() - 0.5 / 0.8) < 0.04  # p(1) renormalised over {1, 2}
  # Temperature flattens: at T = 4 the rare token 4 shows up far more than 5% of the time.
  hot = decode.sample(step, {}, prompt, jax.random.key(1), max_new_tokens=1, temperature=4.0)
  assert (np.asarray(hot) == 4).mean() > 0.15


def test_bad_options_raise():
  step = jax.tree_util.Partial(_counter)
  with pytest.raises(ValueError, match='top_p'):
    decode.sample(
      step, _counts(1), jnp.ones((1, 1), jnp.int32), jax.random.key(0), max_new_tokens=2, top_p=0.0
    )
  with pytest.raises(ValueError, match='prompt'):
    decode.greedy(step, _counts(1), jnp.ones((3,), jnp.int32), max_new_tokens=2)
  with pytest.raises(ValueError, match='method'):
    decode._run(
      step,
      _counts(1),
      jnp.ones((1, 1), jnp.int32),
      method='nucleus',
      max_new_tokens=2,
      rng=None,
      eos_id=None,
      pad_id=0,
    )
  with pytest.raises(ValueError, match='decode'):
    decode.lm_decoder(bigjax.create_model('mlp'), {}, 1, 4)


# ------------------------------------------------------------------------------- greedy
def test_prefill_once_then_one_token_per_step_and_eos_pads():
  # Row 1's counter starts 2 ahead, so the rows reach EOS (= 5) at different steps.
  cache = {'count': jnp.array([0, 2], jnp.int32)}
  prompt = jnp.array([[7], [7]], jnp.int32)
  out = decode.greedy(_counter, cache, prompt, max_new_tokens=7, eos_id=5)
  np.testing.assert_array_equal(out, [[1, 2, 3, 4, 5, 0, 0], [3, 4, 5, 0, 0, 0, 0]])
  # A 3-token prompt is fed once: generation continues from position 3.
  out = decode.greedy(_counter, _counts(1), jnp.ones((1, 3), jnp.int32), max_new_tokens=4)
  np.testing.assert_array_equal(out, [[3, 4, 5, 6]])


def test_top_k_1_sampling_and_beam_1_equal_greedy_on_a_bigram_model():
  table = jax.nn.softmax(2.0 * jax.random.normal(jax.random.key(3), (12, 12)))
  step = _bigram_step(table)
  prompt = jnp.arange(3, 11, dtype=jnp.int32)[:, None]  # 8 rows, different first tokens
  greedy = decode.greedy(step, _counts(8), prompt, max_new_tokens=10, eos_id=EOS)
  ended = (np.asarray(greedy) == EOS).any(axis=1)
  assert ended.any() and not ended.all()  # both outcomes are exercised
  top1 = decode.sample(
    step, _counts(8), prompt, jax.random.key(5), max_new_tokens=10, top_k=1, eos_id=EOS
  )
  np.testing.assert_array_equal(top1, greedy)
  for alpha in (0.0, 0.6):
    beams, scores = decode.beam_search(
      step, _counts(8), prompt, beam_size=1, max_new_tokens=10, alpha=alpha, eos_id=EOS
    )
    np.testing.assert_array_equal(beams[:, 0], greedy)
    assert np.isfinite(np.asarray(scores)).all()


def test_beam_search_beats_greedy_on_a_garden_path():
  # After BOS: a=3 (0.6) or b=4 (0.4). After a: ten tokens 5..14 at 0.1 each. After b:
  # EOS (0.9) or 5 (0.1). Tokens 5..14 end with EOS. Greedy takes a, a 0.06 path; the best
  # sequence is b EOS at 0.36.
  table = np.zeros((16, 16))
  table[BOS, 3], table[BOS, 4] = 0.6, 0.4
  table[3, 5:15] = 0.1
  table[4, EOS], table[4, 5] = 0.9, 0.1
  table[5:15, EOS] = 1.0
  table[EOS, EOS] = table[0, EOS] = table[15, EOS] = 1.0
  step = _bigram_step(table)
  prompt = jnp.full((2, 1), BOS, jnp.int32)
  greedy = decode.greedy(step, _counts(2), prompt, max_new_tokens=5, eos_id=EOS)
  np.testing.assert_array_equal(greedy[0], [3, 5, EOS, 0, 0])
  for alpha in (0.0, 0.6):
    beams, scores = decode.beam_search(
      step, _counts(2), prompt, beam_size=2, max_new_tokens=5, alpha=alpha, eos_id=EOS
    )
    np.testing.assert_array_equal(beams[:, 0], [[4, EOS, 0, 0, 0]] * 2)
    penalty = lambda n: ((5 + n) / 6) ** alpha  # noqa: E731
    np.testing.assert_allclose(scores[:, 0], math.log(0.36) / penalty(2), rtol=1e-5)
    np.testing.assert_allclose(scores[:, 1], math.log(0.06) / penalty(3), rtol=1e-5)
    assert beams[0, 1, 0] == 3 and beams[0, 1, 2] == EOS


def test_beam_search_without_eos_keeps_the_most_likely_sequences():
  # Tokens 1..6; the pad id 0 is never generated, so it has no row or column here.
  table = jax.nn.softmax(jax.random.normal(jax.random.key(0), (6, 6)))
  step = _bigram_step(np.pad(np.asarray(table), ((1, 0), (1, 0))))
  prompt = jnp.array([[1], [4]], jnp.int32)
  beams, scores = decode.beam_search(
    step, _counts(2), prompt, beam_size=36, max_new_tokens=2, alpha=0.0
  )
  # With a beam as wide as all 6^2 continuations the search is exhaustive.
  logp = np.log(np.asarray(table))
  for row, first in enumerate((1, 4)):
    every = logp[first - 1][:, None] + logp  # [V, V] over tokens 1..6
    np.testing.assert_allclose(np.sort(scores[row])[::-1], np.sort(every.ravel())[::-1], rtol=1e-5)
    a, b = np.asarray(beams[row, 0]) - 1
    np.testing.assert_allclose(every[a, b], every.max(), rtol=1e-6)


# ------------------------------------------------------------------- adapters and models
@pytest.fixture(scope='module')
def transformer():
  model = bigjax.create_model('transformer_test', dropout_rate=0.0)
  src = jnp.array([[5, 6, 7, 8, 0], [3, 4, 5, 6, 7]], jnp.int32)
  variables = jax.jit(model.init)(jax.random.key(0), src, src)
  # A scaled-up output layer makes the random model's choices less repetitive.
  variables = jax.tree.map(lambda x: x, variables)
  emb = variables['params']['embed']['embedding']
  variables['params']['embed']['embedding'] = emb * 4.0
  return model, variables, src


def test_transformer_greedy_matches_teacher_forced_argmax(transformer):
  model, variables, src = transformer
  out = decode.generate_seq2seq(model, variables, src, bos_id=BOS, max_new_tokens=6)
  tgt_in = jnp.concatenate([jnp.full((2, 1), BOS, jnp.int32), out[:, :-1]], axis=1)
  full = jax.jit(model.apply)(variables, src, tgt_in)
  np.testing.assert_array_equal(out, jnp.argmax(full, axis=-1))
  assert len(np.unique(np.asarray(out))) > 2  # a non-trivial sequence
  top1 = decode.generate_seq2seq(
    model,
    variables,
    src,
    bos_id=BOS,
    max_new_tokens=6,
    method='sample',
    top_k=1,
    rng=jax.random.key(9),
  )
  np.testing.assert_array_equal(top1, out)
  beam1 = decode.generate_seq2seq(
    model, variables, src, bos_id=BOS, max_new_tokens=6, method='beam', beam_size=1
  )
  np.testing.assert_array_equal(beam1, out)


def test_compiles_once_per_shape(transformer):
  model, variables, _ = transformer
  other = jax.tree.map(lambda x: x * 1.1, variables)
  sizes = lambda: (decode._sample_loop._cache_size(), decode._init_cache._cache_size())  # noqa
  before = sizes()
  for v, seed in ((variables, 0), (other, 1), (variables, 2)):
    src = jax.random.randint(jax.random.key(seed), (3, 7), 3, 64)  # a shape no test uses
    decode.generate_seq2seq(model, v, src, bos_id=BOS, max_new_tokens=5)
  assert [a - b for a, b in zip(sizes(), before)] == [1, 1]


def _step_through(step, cache, tokens, chunks):
  outs = []
  for start, stop in chunks:
    logits, cache = jax.jit(step)(cache, tokens[:, start:stop])
    outs.append(logits)
  return jnp.concatenate(outs, axis=1)


def test_lstm_lm_cached_steps_equal_full_forward():
  model = bigjax.create_model('lstm_lm_test')
  tokens = jax.random.randint(jax.random.key(0), (2, 6), 0, 256)
  variables = model.init(jax.random.key(1), tokens)
  full = model.apply(variables, tokens)
  step, cache = decode.lm_decoder(model, variables, batch_size=2, max_len=6)
  steps = _step_through(step, cache, tokens, [(0, 3), (3, 4), (4, 5), (5, 6)])
  np.testing.assert_allclose(steps, full, atol=1e-5, rtol=1e-5)
  sampled = [
    decode.generate_lm(
      model, variables, tokens[:, :2], max_new_tokens=8, method='sample', rng=jax.random.key(s)
    )
    for s in (0, 0, 1)
  ]
  np.testing.assert_array_equal(sampled[0], sampled[1])
  assert not np.array_equal(sampled[0], sampled[2])


def test_lstm_seq2seq_cached_steps_equal_full_forward():
  # The Transformer's cached decoding is checked in test_transformer.py and, through the
  # adapter, by test_transformer_greedy_matches_teacher_forced_argmax.
  model = bigjax.create_model('seq2seq_lstm_test', dropout_rate=0.0)
  src = jnp.array([[5, 6, 7, 0, 0], [3, 4, 5, 6, 7]], jnp.int32)
  tgt = jnp.array([[1, 9, 8, 7, 6, 5], [1, 2, 3, 4, 10, 11]], jnp.int32)
  variables = jax.jit(model.init)(jax.random.key(0), src, tgt)
  full = jax.jit(model.apply)(variables, src, tgt)
  step, cache = decode.seq2seq_decoder(model, variables, src, max_len=6)
  steps = _step_through(step, cache, tgt, [(0, 1), (1, 3), (3, 4), (4, 5), (5, 6)])
  np.testing.assert_allclose(steps, full, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------- reserved ids (pad)
def test_pad_and_banned_ids_are_never_generated():
  # The model prefers pad (0), then 3, then EOS-free filler 4: pad and 3 must never come out.
  logits = jnp.log(jnp.array([0.5, 0.01, 0.01, 0.3, 0.18], jnp.float32))
  step = jax.tree_util.Partial(_fixed, logits)
  prompt = jnp.ones((3, 1), jnp.int32)
  outs = [
    decode.greedy(step, {}, prompt, max_new_tokens=4),
    decode.greedy(step, {}, prompt, max_new_tokens=4, banned_ids=(3,)),
    decode.sample(step, {}, prompt, jax.random.key(0), max_new_tokens=50, banned_ids=(3,)),
    decode.beam_search(step, {}, prompt, beam_size=2, max_new_tokens=4, banned_ids=(3,))[0][:, 0],
  ]
  np.testing.assert_array_equal(outs[0], 3)
  for out in outs[1:]:
    assert not np.isin(np.asarray(out), [0, 3]).any(), out
  np.testing.assert_array_equal(outs[1], 4)


# ------------------------------------------------------------ beam search and batch axes
def _running_sum(log_table, cache, tokens):
  """Next-token log-probs depend on the running sum of the tokens, kept as [B], or as
  [L, B] (layer-major, as a scanned model's caches)."""
  layered = cache['total'].ndim == 2
  before = cache['total'][0] if layered else cache['total']  # [B]
  total = before[:, None] + jnp.cumsum(tokens, axis=1)  # [B, L]
  new = jnp.broadcast_to(total[:, -1], cache['total'].shape)
  return log_table[total % log_table.shape[0]], {'total': new}


def test_beam_search_reorders_along_declared_batch_axes():
  table = jnp.log(jax.nn.softmax(2.0 * jax.random.normal(jax.random.key(4), (9, 9))))
  prompt = jnp.array([[3], [5]], jnp.int32)
  step = jax.tree_util.Partial(_running_sum, table)
  want = decode.beam_search(
    step, {'total': jnp.zeros((2,), jnp.int32)}, prompt, beam_size=3, max_new_tokens=5
  )
  cache = {'total': jnp.zeros((3, 2), jnp.int32)}  # [L, B]
  got = decode.beam_search(
    step, cache, prompt, beam_size=3, max_new_tokens=5, cache_batch_axes={'total': 1}
  )
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
  with pytest.raises(ValueError, match='cache_batch_axes'):
    decode.beam_search(step, cache, prompt, beam_size=3, max_new_tokens=5)


def test_beam_search_with_a_scanned_model_equals_the_unscanned_one(transformer):
  model, variables, src = transformer
  scanned = model.clone(scan_layers=True)
  params = dict(variables['params'])
  for stack in ('encoder', 'decoder'):
    params[stack] = layers.stack_layers(params[stack], 2)
  step, cache = decode.seq2seq_decoder(scanned, {'params': params}, src, max_len=6)
  axes = step.func.cache_batch_axes[0]['decoder']['layers']['self_attn']
  assert axes['cached_key'] == 1 and axes['cache_index'] is None  # [L, B, ...] and [L]
  prompt = jnp.full((2, 1), BOS, jnp.int32)
  got = decode.beam_search(step, cache, prompt, beam_size=3, max_new_tokens=5)
  ref_step, ref_cache = decode.seq2seq_decoder(model, variables, src, max_len=6)
  want = decode.beam_search(ref_step, ref_cache, prompt, beam_size=3, max_new_tokens=5)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
  assert len(np.unique(np.asarray(want[0]))) > 3  # the beams differ: reordering matters


# ----------------------------------------------- ragged prompts, stops, penalty, streaming
class _TinyLM(nn.Module):
  """A one-layer causal LM following the decoding contract: `decode`, segment_ids (0 =
  padding, never attended to), and V + 8 logit columns whose last 8 (a padded vocabulary)
  are the largest, so only the `vocab_size` cut keeps them out."""

  vocab_size: int = 24
  decode: bool = False

  @nn.compact
  def __call__(self, tokens, segment_ids=None, *, train=False):
    valid = None if segment_ids is None else segment_ids > 0
    x = nn.Embed(self.vocab_size, 16)(tokens)  # [B, T, D]
    attn = layers.MultiHeadAttention(num_heads=2, decode=self.decode, name='attn')
    x = x + attn(x, key_valid=valid, causal=True)
    logits = nn.Dense(self.vocab_size)(jnp.tanh(x)) * 4.0  # [B, T, V]
    padded = jnp.full((*tokens.shape, 8), 100.0)
    return jnp.concatenate([logits, padded], axis=-1)  # [B, T, V + 8]


@pytest.fixture(scope='module')
def tiny_lm():
  model = _TinyLM()
  return model, model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))


RAGGED = [np.array([5, 9, 3, 7, 11, 4]), np.array([8, 2]), np.array([13, 6, 6, 10])]


def _ragged_equals_alone(model, variables, prompts, **kw):
  """generate_lm over the ragged batch, row by row against each prompt alone."""
  batch = np.asarray(decode.generate_lm(model, variables, prompts, **kw))
  keys = kw.pop('rng', None)
  for row, prompt in enumerate(prompts):
    rng = None if keys is None else keys[row : row + 1]
    alone = decode.generate_lm(model, variables, prompt[None], rng=rng, **kw)
    np.testing.assert_array_equal(batch[row], np.asarray(alone)[0], err_msg=f'row {row}')
  return batch


def test_ragged_prompts_give_what_each_prompt_alone_gives(tiny_lm):
  model, variables = tiny_lm
  kw = dict(max_new_tokens=6, pad_id=None)
  greedy = _ragged_equals_alone(model, variables, RAGGED, **kw)
  assert len(np.unique(greedy)) > 3
  keys = jax.random.split(jax.random.key(3), 3)
  sampled = _ragged_equals_alone(model, variables, RAGGED, method='sample', rng=keys, **kw)
  assert not np.array_equal(sampled, greedy)
  _ragged_equals_alone(model, variables, RAGGED, method='beam', beam_size=3, **kw)
  # The padding matters: reading the pads as tokens changes the short rows.
  padded, _ = decode.left_pad(RAGGED)
  as_tokens = decode.generate_lm(model, variables, padded, **kw)
  assert not np.array_equal(np.asarray(as_tokens)[1:], greedy[1:])
  # A model without segment_ids cannot read left padding.
  lstm = bigjax.create_model('lstm_lm_test')
  with pytest.raises(ValueError, match='segment_ids'):
    decode.generate_lm(lstm, {}, RAGGED, max_new_tokens=2)
  with pytest.raises(ValueError, match='empty'):
    decode.left_pad([np.array([1, 2]), np.array([], int)])


def test_left_pad():
  tokens, valid = decode.left_pad([[4, 5, 6], [7]], pad_id=0)
  np.testing.assert_array_equal(tokens, [[4, 5, 6], [0, 0, 7]])
  np.testing.assert_array_equal(valid, [[1, 1, 1], [0, 0, 1]])
  assert decode.left_pad([[4, 5], [6, 7]])[1] is None  # one length: no validity needed
  assert decode.left_pad(np.ones((2, 3), int))[1] is None


def test_padded_vocabulary_pad_and_banned_ids_are_never_sampled(tiny_lm):
  # The tiny LM's padded columns (24..31) hold the largest logits; pad 0 and banned 5 are
  # boosted too. At temperature 50 everything else is near uniform, so 600 draws would
  # show any of them.
  model, variables = tiny_lm
  params = jax.tree.map(lambda x: x, variables['params'])
  bias = params['Dense_0']['bias']
  params['Dense_0']['bias'] = bias.at[0].set(30.0).at[5].set(30.0)
  prompt = jnp.tile(jnp.array([[3, 4]], jnp.int32), (20, 1))
  for top_p in (1.0, 0.999):
    out = decode.generate_lm(
      model,
      {'params': params},
      prompt,
      max_new_tokens=30,
      method='sample',
      temperature=50.0,
      top_p=top_p,
      banned_ids=(5,),
      rng=jax.random.key(1),
    )
    out = np.asarray(out)
    assert out.max() < 24 and not np.isin(out, [0, 5]).any()
    assert len(np.unique(out)) > 15  # high temperature: the rest is all used
  # The contract's padded columns at -1e9 are never drawn either, even without the cut.
  logits = jnp.concatenate([jnp.zeros((4,)), jnp.full((4,), -1e9)])
  step = jax.tree_util.Partial(_fixed, logits)
  drawn = decode.sample(
    step,
    {},
    jnp.ones((500, 1), jnp.int32),
    jax.random.key(2),
    max_new_tokens=4,
    temperature=100.0,
    top_p=0.9999,
    pad_id=None,
  )
  assert set(np.unique(np.asarray(drawn))) == {0, 1, 2, 3}


def test_repetition_penalty_hand_computed():
  logits = jnp.array([2.0, -1.0, 0.5, 0.0])
  seen = jnp.array([True, True, False, True])
  np.testing.assert_allclose(decode.penalize_repetition(logits, seen, 2.0), [1.0, -2.0, 0.5, 0.0])
  # Greedy on fixed logits (ids 0..6): 3 is the favourite, but the prompt holds it, so at
  # penalty 1.5 it scores 2.0 / 1.5 = 1.33 < 1.5 (id 4); once 4 is out too (1.0), 3 wins
  # again, and keeps winning (the penalty counts presence, not repeats).
  table = jnp.array([-5.0, 0.5, -5.0, 2.0, 1.5, -0.3, 1.2])
  step = jax.tree_util.Partial(_fixed, table)
  prompt = jnp.array([[3]], jnp.int32)
  plain = decode.greedy(step, {}, prompt, max_new_tokens=4)
  np.testing.assert_array_equal(plain, [[3, 3, 3, 3]])
  out = decode.greedy(step, {}, prompt, max_new_tokens=4, repetition_penalty=1.5)
  np.testing.assert_array_equal(out, [[4, 3, 3, 3]])
  # At 2.0: 4 (1.5 > 3's 1.0), then 6 (1.2 > 1.0, 0.75), then 3 (1.0 > 0.75, 0.6, 0.5).
  # The prompt's left padding (a 6) is not counted as seen: if it were, 3 would come second.
  out = decode.greedy(
    step,
    {},
    jnp.array([[6, 3]]),
    max_new_tokens=3,
    repetition_penalty=2.0,
    prompt_valid=jnp.array([[False, True]]),
  )
  np.testing.assert_array_equal(out, [[4, 6, 3]])
  with pytest.raises(ValueError, match='repetition_penalty'):
    decode.greedy(step, {}, prompt, max_new_tokens=2, repetition_penalty=0.0)


def test_stop_ids_fill_and_pad_none():
  # Row 0 counts 1, 2, 3, ... and row 1 starts 3 ahead: stops 3 and 5 end them.
  cache = {'count': jnp.array([0, 3], jnp.int32)}
  prompt = jnp.array([[7], [7]], jnp.int32)
  out = decode.greedy(_counter, cache, prompt, max_new_tokens=6, eos_id=(5, 3))
  np.testing.assert_array_equal(out, [[1, 2, 3, 0, 0, 0], [4, 5, 0, 0, 0, 0]])
  # pad_id=None: the finished rows are filled with the first stop id; a stop id that is
  # also banned still ends a row.
  out = decode.greedy(
    _counter, cache, prompt, max_new_tokens=6, eos_id=(5, 3), pad_id=None, banned_ids=(3,)
  )
  np.testing.assert_array_equal(out, [[1, 2, 3, 5, 5, 5], [4, 5, 5, 5, 5, 5]])
  beams, _ = decode.beam_search(
    _counter, cache, prompt, beam_size=2, max_new_tokens=6, eos_id=(5, 3), pad_id=None
  )
  np.testing.assert_array_equal(beams[:, 0], [[1, 2, 3, 5, 5, 5], [4, 5, 5, 5, 5, 5]])
  # pad_id=None bans nothing: id 0, the favourite, is generated.
  step = jax.tree_util.Partial(_fixed, jnp.array([3.0, 1.0, 2.0]))
  np.testing.assert_array_equal(decode.greedy(step, {}, prompt, max_new_tokens=2), 2)
  np.testing.assert_array_equal(decode.greedy(step, {}, prompt, max_new_tokens=2, pad_id=None), 0)


def test_streaming_reports_each_step_in_order(tiny_lm):
  model, variables = tiny_lm
  for method in ('greedy', 'sample', 'beam'):
    seen = []
    out = decode.generate_lm(
      model,
      variables,
      RAGGED,
      max_new_tokens=7,
      method=method,
      eos_id=(4, 9),
      on_token=seen.append,
      beam_size=2,
      rng=jax.random.key(5),
    )
    out = np.asarray(out)
    assert seen and all(isinstance(t, np.ndarray) and t.shape == (3,) for t in seen)
    streamed = np.stack(seen, axis=1)  # [B, steps]
    np.testing.assert_array_equal(streamed, out[:, : streamed.shape[1]], err_msg=method)
    # The loop stops once every row has stopped; what was not streamed is fill.
    assert (out[:, streamed.shape[1] :] == 0).all()
    ended = np.isin(streamed, (4, 9)).any(axis=1)
    assert streamed.shape[1] == 7 or ended.all()
  # A new callback reuses the compiled loop (it reaches the loop as a number).
  before = decode._sample_loop._cache_size()
  again = []
  decode.generate_lm(
    model, variables, RAGGED, max_new_tokens=7, eos_id=(4, 9), on_token=again.append
  )
  assert decode._sample_loop._cache_size() == before and again


@pytest.mark.parametrize('name', ['gpt2_test', 'llama_test'])
def test_gpt_ragged_prompts_give_what_each_prompt_alone_gives(name):
  # vocab 200: the logits have 256 columns, the last 56 padding at -1e9.
  model = bigjax.create_model(name, vocab_size=200)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  params = dict(variables['params'])
  for head in ('embed', 'lm_head'):  # sharper logits: no near-ties between candidates
    if head in params:
      params[head] = jax.tree.map(lambda x: 10.0 * x, params[head])
  variables = {'params': params}
  prompts = [np.array([5, 9, 3, 7, 11, 4, 120, 17]), np.array([8, 2])]
  # The sharp random model repeats its last token; the penalty (which must not count the
  # left padding) moves it on.
  kw = dict(max_new_tokens=5, pad_id=None, repetition_penalty=5.0)
  greedy = _ragged_equals_alone(model, variables, prompts, **kw)
  assert len(np.unique(greedy)) > 5
  keys = jax.random.split(jax.random.key(1), 2)
  hot = dict(method='sample', temperature=30.0, rng=keys)
  sampled = _ragged_equals_alone(model, variables, prompts, **kw, **hot)
  assert sampled.max() < 200 and not np.array_equal(sampled, greedy)
  if name == 'gpt2_test':  # beam search's prefill and cache copies: one model is enough
    _ragged_equals_alone(model, variables, prompts, method='beam', beam_size=2, **kw)
