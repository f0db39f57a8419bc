"""The layers kit: norms, attention (GQA, rotary, cache, is_causal), MLPs, stacks, axes."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax import layers
from bigjax.layers import BlockConfig, EncoderBlock, MultiHeadAttention

B, T, D = 2, 6, 16
X = jax.random.normal(jax.random.key(0), (B, T, D))
VALID = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)


def _randomised(variables, seed=1):
  """The same tree with random values (norm scales and biases away from 1 and 0)."""
  leaves, treedef = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
    treedef, [0.5 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
  )


# ------------------------------------------------------------------- norms, activations
def test_rmsnorm_by_hand():
  x = jnp.array([[3.0, -4.0, 0.0, 5.0]])
  norm = layers.make_norm('rmsnorm', epsilon=1e-6)
  variables = {'params': {'scale': jnp.array([1.0, 2.0, 0.5, -1.0])}}
  rms = math.sqrt((9 + 16 + 0 + 25) / 4)
  want = np.array([[3.0, -8.0, 0.0, -5.0]]) / math.sqrt(rms**2 + 1e-6)
  np.testing.assert_allclose(norm.apply(variables, x), want, rtol=1e-5)
  assert set(norm.init(jax.random.key(0), x)['params']) == {'scale'}
  assert set(layers.make_norm('layernorm').init(jax.random.key(0), x)['params']) == {
    'scale',
    'bias',
  }
  with pytest.raises(ValueError, match='rmsnorm'):
    layers.make_norm('batchnorm')


def test_activation_table():
  x = jnp.linspace(-3, 3, 13)
  exact = 0.5 * x * (1 + jax.scipy.special.erf(x / math.sqrt(2)))
  np.testing.assert_allclose(layers.activation('gelu')(x), exact, atol=1e-6)
  tanh = layers.activation('gelu_tanh')(x)
  assert np.abs(tanh - exact).max() > 1e-4  # the two GELUs are really different
  assert set(layers.ACTIVATIONS) >= {'gelu', 'gelu_tanh', 'relu', 'silu', 'tanh', 'sigmoid'}
  from bigjax.models import mlp

  assert mlp.activation is layers.activation  # one table
  with pytest.raises(ValueError, match='unknown activation'):
    layers.activation('swish2')


def test_block_config_validates():
  for bad in (
    dict(norm='batch'),
    dict(activation='gelu2'),
    dict(position='alibi'),
    dict(num_kv_heads=3),
    dict(attention_impl='flash'),
  ):
    with pytest.raises(ValueError):
      BlockConfig(num_heads=4, mlp_dim=8, **bad)
  hash(BlockConfig(num_heads=4, mlp_dim=8))  # a Linen attribute must be hashable


# ---------------------------------------------------------------------------- attention
def test_grouped_query_equals_multi_head_with_repeated_kv_heads():
  gqa = MultiHeadAttention(4, num_kv_heads=2)
  mha = MultiHeadAttention(4)
  params = _randomised(gqa.init(jax.random.key(0), X))['params']
  assert params['key']['kernel'].shape == (D, 2, 4) and params['query']['kernel'].shape == (D, 4, 4)
  # Query heads 2g and 2g+1 share kv head g: repeat each kv head twice.
  rep = lambda p: jax.tree.map(lambda a: jnp.repeat(a, 2, axis=-2), p)  # noqa: E731
  full = {**params, 'key': rep(params['key']), 'value': rep(params['value'])}
  a = gqa.apply({'params': params}, X, key_valid=VALID, causal=True)
  b = mha.apply({'params': full}, X, key_valid=VALID, causal=True)
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_rotary_scores_depend_only_on_the_offset():
  q = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))
  k = jax.random.normal(jax.random.key(2), (1, 1, 1, 8))
  score = lambda i, j: float(  # noqa: E731
    jnp.sum(layers.rotary(q, jnp.array([i])) * layers.rotary(k, jnp.array([j])))
  )
  np.testing.assert_allclose(score(3, 1), score(10, 8), rtol=1e-5)
  np.testing.assert_allclose(score(0, 0), score(7, 7), rtol=1e-5)
  np.testing.assert_allclose(score(0, 0), float(jnp.sum(q * k)), rtol=1e-5)
  assert abs(score(3, 1) - score(3, 2)) > 1e-3  # and it does depend on the offset
  # Rotation keeps norms; [B, T] positions work as [T] ones.
  x = jax.random.normal(jax.random.key(3), (2, 5, 3, 8))
  r = layers.rotary(x, jnp.arange(5))
  np.testing.assert_allclose(jnp.linalg.norm(r, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(layers.rotary(x, jnp.tile(jnp.arange(5), (2, 1))), r, atol=1e-6)


@pytest.mark.parametrize('position', ['none', 'rotary'])
def test_cached_decoding_equals_full_forward_with_gqa(position):
  config = BlockConfig(
    num_heads=4,
    num_kv_heads=2,
    mlp_dim=32,
    norm='rmsnorm',
    gated_mlp=True,
    activation='silu',
    use_bias=False,
    position=position,
  )
  block = EncoderBlock(config)
  variables = _randomised(block.init(jax.random.key(0), X, causal=True))
  full = block.apply(variables, X, key_valid=VALID, causal=True)
  decoder = EncoderBlock(config, decode=True)
  cache = decoder.init(jax.random.key(0), X, causal=True)['cache']
  assert cache['attn']['cached_key'].shape == (B, T, 2, 4)  # G kv heads are cached
  outs = []
  for start, stop in [(0, 3), (3, 4), (4, 6)]:  # a prefill, then single steps
    out, mutated = decoder.apply(
      {**variables, 'cache': cache},
      X[:, start:stop],
      key_valid=VALID[:, start:stop],
      causal=True,
      mutable=['cache'],
    )
    cache = mutated['cache']
    outs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_is_causal_path_equals_explicit_mask(monkeypatch):
  attn = MultiHeadAttention(2)
  variables = attn.init(jax.random.key(0), X)
  calls = []
  original = jax.nn.dot_product_attention

  def spy(*args, **kwargs):
    calls.append((kwargs.get('mask') is None, kwargs.get('is_causal')))
    return original(*args, **kwargs)

  monkeypatch.setattr(jax.nn, 'dot_product_attention', spy)
  fused = attn.apply(variables, X, causal=True)
  explicit = attn.apply(variables, X, mask=layers.causal_mask(T))
  all_valid = attn.apply(variables, X, causal=True, key_valid=jnp.ones((B, T), bool))
  assert calls == [(True, True), (False, False), (False, False)]  # only causal: no matrix
  np.testing.assert_allclose(fused, explicit, atol=1e-6)
  np.testing.assert_allclose(fused, all_valid, atol=1e-6)


def test_padding_hides_keys():
  attn = MultiHeadAttention(2)
  variables = attn.init(jax.random.key(0), X)
  a = attn.apply(variables, X, key_valid=VALID)
  b = attn.apply(variables, X.at[0, 4:].set(9.0), key_valid=VALID)  # change padded tokens
  np.testing.assert_allclose(a[0, :4], b[0, :4], atol=1e-5)


@pytest.mark.parametrize('kv_heads', [4, 2])
def test_sown_attention_weights_path_equals_the_fused_path(kv_heads):
  attn = MultiHeadAttention(4, num_kv_heads=kv_heads)
  variables = _randomised(attn.init(jax.random.key(0), X))
  for kwargs in [dict(key_valid=VALID), dict(causal=True), dict(key_valid=VALID, causal=True), {}]:
    fused = attn.apply(variables, X, **kwargs)
    explicit, state = attn.apply(variables, X, mutable=['intermediates'], **kwargs)
    np.testing.assert_allclose(explicit, fused, atol=1e-5)
    (weights,) = state['intermediates']['attention_weights']
    assert weights.shape == (B, 4, T, T)  # [B, H, T, S]
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    if 'key_valid' in kwargs:  # padded keys get no weight
      assert float(jnp.abs(weights[0, :, :, 4:]).max()) == 0.0
    if kwargs.get('causal'):  # nor do future keys
      assert float(jnp.abs(jnp.triu(weights, 1)).max()) == 0.0
  # Without a mutable 'intermediates' nothing is sown.
  assert attn.apply(variables, X, mutable=['cache'])[1] == {}


# ---------------------------------------------------------------------------------- MLP
def test_gated_mlp():
  mlp = layers.MlpBlock(24, gated=True, activation='silu', use_bias=False)
  variables = mlp.init(jax.random.key(0), X)
  shapes = jax.tree.map(jnp.shape, variables['params'])
  assert shapes == {
    'gate': {'kernel': (D, 24)},
    'fc1': {'kernel': (D, 24)},
    'fc2': {'kernel': (24, D)},
  }
  p = variables['params']
  want = (nn.silu(X @ p['gate']['kernel']) * (X @ p['fc1']['kernel'])) @ p['fc2']['kernel']
  np.testing.assert_allclose(mlp.apply(variables, X), want, atol=1e-5)
  plain = layers.MlpBlock(24).init(jax.random.key(0), X)['params']
  assert set(plain) == {'fc1', 'fc2'} and set(plain['fc1']) == {'kernel', 'bias'}


# -------------------------------------------------------------------------------- stacks
class _Stack(nn.Module):
  config: BlockConfig
  scan: bool
  remat: bool = False
  decode: bool = False

  @nn.compact
  def __call__(self, x, valid, *, train=False):
    return layers.stack_blocks(
      x,
      EncoderBlock,
      self.config,
      3,
      scan=self.scan,
      remat=self.remat,
      decode=self.decode,
      key_valid=valid,
      causal=True,
      train=train,
    )


def test_scan_equals_unrolled_with_copied_params():
  config = BlockConfig(num_heads=2, mlp_dim=32, dropout_rate=0.1)
  unrolled = _Stack(config, scan=False)
  params = _randomised(unrolled.init(jax.random.key(0), X, VALID))['params']
  assert set(params) == {'block_0', 'block_1', 'block_2'}
  scanned = _Stack(config, scan=True, remat=True)
  stacked = layers.stack_layers(params, 3)
  shapes = jax.eval_shape(scanned.init, jax.random.key(0), X, VALID)['params']
  assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, stacked)
  assert stacked['layers']['attn']['query']['kernel'].shape == (3, D, 2, 8)
  a = unrolled.apply({'params': params}, X, VALID)
  b = scanned.apply({'params': stacked}, X, VALID)
  np.testing.assert_allclose(a, b, atol=1e-5)
  grads = jax.grad(lambda p: scanned.apply({'params': p}, X, VALID).sum())(stacked)
  assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, stacked)
  assert jax.tree.all(
    jax.tree.map(lambda x, y: bool((x == y).all()), params, layers.unstack_layers(stacked))
  )
  # Scanned caches are [L, B, ...].
  cache = _Stack(config, scan=True, decode=True).init(jax.random.key(0), X, VALID)['cache']
  assert cache['layers']['attn']['cached_key'].shape == (3, B, T, 2, 8)


# --------------------------------------------------------------------------- axis names
def _axes_ok(params):
  axes = layers.logical_axes(params)
  flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
  flat = jax.tree.leaves(params)
  assert len(flat_axes) == len(flat)
  for a, x in zip(flat_axes, flat):
    assert len(a) == x.ndim
  return axes


@pytest.mark.parametrize('scan', [False, True])
def test_logical_axes_cover_the_transformer_and_vit(scan):
  src = jnp.ones((1, 4), jnp.int32)
  for options in (dict(), dict(pre_norm=True, share_embeddings=False, tie_output=False)):
    model = bigjax.create_model('transformer_test', scan_layers=scan, **options)
    params = jax.eval_shape(model.init, jax.random.key(0), src, src)['params']
    axes = _axes_ok(params)
  ids = 'layers' if scan else 'block_0'
  assert axes['decoder'][ids]['self_attn']['query']['kernel'] == (
    ('layers',) * scan + ('embed', 'heads', 'kv')
  )
  assert axes['tgt_embed']['embedding'] == ('vocab', 'embed')
  assert axes['logits']['kernel'] == ('embed', 'vocab')
  vit = bigjax.create_model('vit_test', scan_layers=scan)
  params = jax.eval_shape(vit.init, jax.random.key(0), jnp.ones((1, 8, 8, 3)))['params']
  axes = _axes_ok(params)
  assert axes['pos_embed']['embedding'] == ('position', 'embed')
  assert axes[ids]['mlp']['fc1']['kernel'] == ('layers',) * scan + ('embed', 'mlp')


def test_logical_axes_of_gqa_and_gated_blocks_and_unknown_params():
  config = BlockConfig(num_heads=4, num_kv_heads=2, mlp_dim=32, norm='rmsnorm', gated_mlp=True)
  params = jax.eval_shape(EncoderBlock(config).init, jax.random.key(0), X)['params']
  axes = _axes_ok(params)
  assert axes['attn']['key']['kernel'] == ('embed', 'kv_heads', 'kv')
  assert axes['mlp']['gate']['kernel'] == ('embed', 'mlp')
  assert axes['attn_norm']['scale'] == ('embed',)
  with pytest.raises(ValueError, match='no logical axes for parameter conv/kernel'):
    layers.logical_axes({'conv': {'kernel': jnp.zeros((3, 3))}})
  with pytest.raises(ValueError, match='rank'):
    layers.logical_axes({'mlp': {'fc1': {'kernel': jnp.zeros((3,))}}})
