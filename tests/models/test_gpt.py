"""The decoder-only LM (`bigjax.models.gpt`): cached decoding, GQA, RoPE, packing, the
padded vocabulary, scanned layers, MoE aux losses in the objective, init and axes.

Legend: B batch, P prompt length, N new tokens, T length, V' padded vocabulary.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax import layers
from bigjax.models import gpt
from bigjax.train.tasks import get_task

B, P, N = 2, 5, 3
PROMPT_SEGMENTS = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], jnp.int32)  # row 0 left-padded


def _tokens(shape, seed=0, vocab=256) -> jax.Array:
  return jax.random.randint(jax.random.key(seed), shape, 0, vocab, jnp.int32)


@functools.cache
def _model(name: str, **options):
  """(model, params) with random norm scales and biases (not their 1 / 0 init)."""
  model = bigjax.create_model(name, **options)
  params = jax.jit(model.init)(jax.random.key(0), _tokens((1, 4)))['params']
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  jitter = [x + 0.1 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
  return model, jax.tree.unflatten(treedef, jitter)


# ---------------------------------------------------------------------- cached decoding
@pytest.mark.parametrize('name', ['gpt2_test', 'llama_test', 'mixtral_test'])
def test_cached_decoding_equals_the_full_forward_pass(name):
  """A left-padded ragged prompt prefilled with segment_ids, then one token at a time,
  gives the logits of the full forward pass at every real token; the same unpadded."""
  model, params = _model(name)
  tokens = _tokens((B, P + N), seed=3)
  segments = jnp.concatenate([PROMPT_SEGMENTS, jnp.ones((B, N), jnp.int32)], axis=1)
  decoder = model.clone(decode=True)

  def cached(prompt_segments):
    cache = decoder.init(jax.random.key(0), jnp.zeros((B, P + N), jnp.int32))['cache']
    out, mutated = decoder.apply(
      {'params': params, 'cache': cache}, tokens[:, :P], prompt_segments, mutable=['cache']
    )

    def step(cache, token):  # token [B]
      out, mutated = decoder.apply(
        {'params': params, 'cache': cache}, token[:, None], mutable=['cache']
      )
      return mutated['cache'], out.logits[:, 0]

    cache, steps = jax.lax.scan(step, mutated['cache'], tokens[:, P:].T)
    positions = cache['position']
    return jnp.concatenate([out.logits, steps.transpose(1, 0, 2)], axis=1), positions

  @jax.jit
  def run():
    full_padded = model.apply({'params': params}, tokens, segments).logits
    full = model.apply({'params': params}, tokens).logits
    alone = model.apply({'params': params}, tokens[:1, 2:]).logits  # row 0 without its pads
    return full_padded, cached(PROMPT_SEGMENTS), full, cached(None), alone

  full_padded, (padded, positions), full, (unpadded, unpadded_positions), alone = run()
  real = np.asarray(segments > 0)
  assert np.isfinite(full_padded).all() and np.isfinite(padded).all()  # pads see no key
  np.testing.assert_allclose(padded[real], full_padded[real], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(unpadded, full, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(positions, [P + N - 2, P + N])  # pads do not advance a row
  np.testing.assert_array_equal(unpadded_positions, [P + N, P + N])
  # Row 0's real tokens are those of an unpadded row starting at position 0.
  np.testing.assert_allclose(padded[0, 2:], alone[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------- attention options
def test_grouped_query_equals_multi_head_with_repeated_kv_heads():
  model, params = _model('llama_test')  # 4 query heads, 2 kv heads
  assert model.num_kv_heads < model.num_heads
  groups = model.num_heads // model.num_kv_heads
  repeat = lambda kernel: jnp.repeat(kernel, groups, axis=1)  # noqa: E731  # [D, G, K] -> [D, H, K]
  mha_params = jax.tree.map(lambda x: x, params)
  for i in range(model.num_layers):
    attn = mha_params[f'block_{i}']['attn']
    for name in ('key', 'value'):
      attn[name] = {'kernel': repeat(attn[name]['kernel'])}
  mha = model.clone(num_kv_heads=None)
  tokens = _tokens((B, 7), seed=4)
  segments = jnp.array([[0, 1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1]], jnp.int32)
  gqa_logits, mha_logits = jax.jit(
    lambda: (
      model.apply({'params': params}, tokens, segments).logits,
      mha.apply({'params': mha_params}, tokens, segments).logits,
    )
  )()
  np.testing.assert_allclose(gqa_logits, mha_logits, atol=1e-5, rtol=1e-5)


def test_rope_is_relative():
  """Shifting every position by a constant leaves the attention scores (and logits) as they
  were; reversing the positions does not."""
  model, params = _model('llama_test')
  tokens = _tokens((B, 6), seed=5)
  positions = jnp.broadcast_to(jnp.arange(6), (B, 6))

  @jax.jit
  def run(positions):
    out, state = model.apply(
      {'params': params}, tokens, positions=positions, mutable=['intermediates']
    )
    return out.logits, state['intermediates']['block_0']['attn']['attention_weights'][0]

  logits, weights = run(positions)
  shifted_logits, shifted = run(positions + 37)
  np.testing.assert_allclose(shifted, weights, atol=1e-5)
  np.testing.assert_allclose(shifted_logits, logits, atol=1e-4, rtol=1e-5)
  _, reversed_weights = run(positions[:, ::-1])
  assert np.abs(np.asarray(reversed_weights - weights)).max() > 1e-3


# ------------------------------------------------------------------------------- packing
@pytest.mark.parametrize('name', ['gpt2_test', 'mixtral_test'])
def test_a_packed_row_gives_each_document_its_own_logits(name):
  model, params = _model(name)
  a, b = _tokens((1, 3), seed=6), _tokens((1, 4), seed=7)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 1), jnp.int32)], axis=1)  # [1, 8]
  segments = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0]], jnp.int32)
  np.testing.assert_array_equal(gpt.segment_positions(segments), [[0, 1, 2, 0, 1, 2, 3, 0]])

  @jax.jit
  def run():
    apply = lambda *xs: model.apply({'params': params}, *xs).logits  # noqa: E731
    return apply(packed, segments), apply(a), apply(b), apply(packed)

  together, alone_a, alone_b, unsegmented = run()
  assert np.isfinite(together).all()  # the pad (a query with no visible key) too
  np.testing.assert_allclose(together[:, :3], alone_a, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(together[:, 3:7], alone_b, atol=1e-5, rtol=1e-5)
  assert np.abs(np.asarray(unsegmented[:, 3:7] - alone_b)).max() > 1e-3  # the mask matters


# ------------------------------------------------------------------------- the vocabulary
def test_padded_vocabulary_columns_are_never_chosen():
  model, params = _model('gpt2_test', vocab_size=250, vocab_multiple=128)
  assert model.padded_vocab == 256
  # Make the padded rows of the tied embedding the best match for every hidden state.
  embedding = params['embed']['embedding']
  params = {**params, 'embed': {'embedding': embedding.at[250:].set(100.0)}}
  tokens = _tokens((B, 6), seed=8, vocab=250)
  logits = jax.jit(model.apply)({'params': params}, tokens).logits
  assert logits.shape == (B, 6, 256) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(logits[..., 250:], -1e9)
  assert (np.asarray(logits.argmax(-1)) < 250).all()
  assert float(jax.nn.softmax(logits)[..., 250:].max()) == 0.0
  assert gpt.num_params(params, 250) == sum(x.size for x in jax.tree.leaves(params)) - 6 * 32


# ----------------------------------------------------------------------- scan and MoE aux
def test_scanned_layers_equal_unrolled_with_the_moe_aux():
  model, params = _model('mixtral_test')
  scanned = model.clone(scan_layers=True, remat=True)
  tokens = _tokens((B, 6), seed=9)
  segments = jnp.array([[0, 1, 1, 1, 1, 1], [1, 1, 1, 2, 2, 2]], jnp.int32)

  @jax.jit
  def run():
    return (
      model.apply({'params': params}, tokens, segments),
      scanned.apply({'params': layers.stack_layers(params, model.num_layers)}, tokens, segments),
    )

  unrolled, stacked = run()
  np.testing.assert_allclose(stacked.logits, unrolled.logits, atol=1e-5, rtol=1e-5)
  assert set(unrolled.aux_losses) == {'moe_balance', 'moe_z'}
  assert unrolled.metrics['expert_load'].shape == (model.num_experts,)
  assert float(unrolled.metrics['expert_load'].sum()) == pytest.approx(1.0, abs=1e-6)
  for key in ('moe_balance', 'moe_z'):
    assert float(unrolled.aux_losses[key]) > 0
    np.testing.assert_allclose(stacked.aux_losses[key], unrolled.aux_losses[key], rtol=1e-5)
  np.testing.assert_allclose(stacked.metrics['expert_load'], unrolled.metrics['expert_load'])


def test_the_lm_objective_includes_the_moe_losses_and_trains_the_router():
  model, params = _model('mixtral_test', router_aux_weight=0.5, router_z_weight=0.1)
  task = get_task('lm')
  tokens = _tokens((B, 7), seed=10, vocab=255) + 1  # no pad ids in the targets
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}

  def objective(params, aux_only=False):
    outputs = model.apply({'params': params}, *task.inputs(batch))
    w = task.weights(batch)
    total = (w * task.loss(outputs, batch)).sum() / w.sum()
    ce = -(jax.nn.log_softmax(outputs.logits) * jax.nn.one_hot(batch['targets'], 256)).sum(-1)
    aux = sum(outputs.aux_losses.values())
    return (total - ce.mean()) if aux_only else total, (ce.mean(), aux)

  @jax.jit
  def run(params):
    (total, (ce, aux)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    aux_grads = jax.grad(lambda p: objective(p, aux_only=True)[0])(params)
    return total, ce, aux, grads, aux_grads

  total, ce, aux, grads, aux_grads = run(params)
  assert float(aux) > 0.1
  assert float(total) == pytest.approx(float(ce + aux), rel=1e-5)
  for i in range(model.num_layers):
    router = f'block_{i}'
    assert np.abs(np.asarray(grads[router]['mlp']['router']['kernel'])).max() > 0
    assert np.abs(np.asarray(aux_grads[router]['mlp']['router']['kernel'])).max() > 1e-4


# ---------------------------------------------------------------------- init and the axes
def test_gpt2_init_scales_the_residual_projections_and_axes_cover_every_parameter():
  model = bigjax.create_model('gpt2_test')
  params = jax.jit(model.init)(jax.random.key(0), _tokens((1, 4)))['params']
  std = lambda x: float(np.asarray(x).std())  # noqa: E731
  block = params['block_0']
  assert std(block['attn']['query']['kernel']) == pytest.approx(0.02, rel=0.1)
  assert std(params['embed']['embedding']) == pytest.approx(0.02, rel=0.1)
  residual = 0.02 / np.sqrt(2 * model.num_layers)
  assert std(block['attn']['out']['kernel']) == pytest.approx(residual, rel=0.1)
  assert std(block['mlp']['fc2']['kernel']) == pytest.approx(residual, rel=0.1)
  for name in ('gpt2_test', 'mixtral_test'):
    for scan in (False, True):
      model = bigjax.create_model(name, scan_layers=scan)
      abstract = jax.eval_shape(model.init, jax.random.key(0), _tokens((1, 4)))['params']
      axes = layers.logical_axes(abstract)
      assert axes['embed']['embedding'] == ('vocab', 'embed')
  assert axes['lm_head']['kernel'] == ('embed', 'vocab')
  assert axes['layers']['mlp']['fc1']['kernel'] == ('layers', 'experts', 'embed', 'mlp')
  with pytest.raises(ValueError, match='position must be one of'):
    bigjax.create_model('gpt2_test', position='sinusoidal').init(jax.random.key(0), _tokens((1, 4)))


def test_learned_positions_refuse_more_tokens_than_max_len():
  """A learned table has max_len rows: a longer input or generation is a one-line error,
  not a silent clamp to the last row (which turned long samples into noise)."""
  from bigjax import decode

  model, params = _model('gpt2_test')  # max_len 64
  with pytest.raises(ValueError, match='max_len=64'):
    jax.eval_shape(lambda p: model.apply({'params': p}, _tokens((1, 65))), params)
  with pytest.raises(ValueError, match='prompt \\+ new tokens'):
    decode.generate_lm(model, {'params': params}, _tokens((1, 4)), max_new_tokens=61)
  rotary, rotary_params = _model('llama_test')  # rotary positions have no table to run out of
  out = jax.eval_shape(lambda p: rotary.apply({'params': p}, _tokens((1, 65))), rotary_params)
  assert out.logits.shape == (1, 65, 256)
