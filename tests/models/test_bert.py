"""BERT and RoBERTa: every head's shapes (run on the test size, traced for every size),
padding invariance, sown hidden states and attention maps, RoBERTa positions, scanned
layers equal to unrolled ones.

Legend: B batch, T length, D width, H heads, V vocabulary, L layers.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax import layers
from bigjax.models import bert

HEADS = bert.HEADS
SIZES = [n for n in bigjax.list_models() if n.startswith(('bert_', 'roberta_'))]

# Two sequences of 6 tokens: the first has 4 real tokens then padding (pad id 0 for BERT).
IDS = np.array([[2, 5, 6, 7, 0, 0], [3, 4, 5, 6, 7, 8]], np.int32)
SEGMENTS = np.array([[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]], np.int32)
REAL = IDS != 0  # [B, T]


def _fill(abstract, seed=0):
  """Random values of the shapes `init` builds (skips compiling the initialisers)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype), abstract)


def _variables(model, ids=IDS, seed=0):
  abstract = jax.eval_shape(model.init, jax.random.key(0), ids)
  return _fill({'params': abstract['params']}, seed)


def _expected(head, model, batch, length):
  d, v, n = model.hidden_size, model.vocab_size, model.num_classes
  return {
    'none': (batch, length, d),
    'pretraining': (batch, length, v),
    'mlm': (batch, length, v),
    'classification': (batch, n),
    'token_classification': (batch, length, n),
    'span': (batch, length, 2),
  }[head]


@pytest.fixture(scope='module')
def pretraining():
  """(model, variables) of bert_test with every parameter of the pre-training head."""
  model = bigjax.create_model('bert_test', head='pretraining', dropout_rate=0.0)
  return model, _variables(model)


# ------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize('head', HEADS)
def test_every_head_runs_on_the_test_size(head):
  model = bigjax.create_model('bert_test', head=head, num_classes=3)
  variables = _variables(model)
  out = jax.jit(model.apply)(variables, IDS, SEGMENTS)
  chex.assert_shape(out.logits, _expected(head, model, 2, 6))
  chex.assert_shape(out.features['hidden'], (2, 6, 32))
  chex.assert_shape(out.features['pooled'], (2, 32))
  assert np.isfinite(np.asarray(out.logits)).all()
  assert set(out.aux_logits) == ({'nsp'} if head == 'pretraining' else set())
  if head == 'pretraining':
    chex.assert_shape(out.aux_logits['nsp'], (2, 2))
  heads = {'mlm', 'nsp', 'classifier', 'token_classifier', 'span'}
  wanted = {
    'pretraining': {'mlm', 'nsp'},
    'mlm': {'mlm'},
    'classification': {'classifier'},
    'token_classification': {'token_classifier'},
    'span': {'span'},
  }.get(head, set())
  assert heads & set(variables['params']) == wanted


@pytest.mark.parametrize('name', SIZES)
def test_every_head_of_every_size_abstractly(name):
  # Scanned layers trace in O(1) (the unrolled sizes are traced by the model contract).
  for head in HEADS:
    model = bigjax.create_model(name, head=head, num_classes=3, scan_layers=True)
    ids = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    out = jax.eval_shape(lambda ids: model.apply(model.init(jax.random.key(0), ids), ids), ids)
    chex.assert_shape(out.logits, _expected(head, model, 2, 16))
    chex.assert_shape(out.features['pooled'], (2, model.hidden_size))


def test_the_mlm_decoder_is_the_word_embedding(pretraining):
  model, variables = pretraining
  p = variables['params']
  assert set(p['mlm']) == {'transform', 'norm', 'bias'}  # no decoder matrix of its own
  out = jax.jit(model.apply)(variables, IDS, SEGMENTS)
  # Recompute the logits from the last hidden states by hand.
  h = out.features['hidden'] @ p['mlm']['transform']['kernel'] + p['mlm']['transform']['bias']
  h = jax.nn.gelu(h, approximate=False)
  mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
  h = (h - mu) / jnp.sqrt(var + 1e-12) * p['mlm']['norm']['scale'] + p['mlm']['norm']['bias']
  logits = h @ p['embeddings']['word']['embedding'].T + p['mlm']['bias']
  np.testing.assert_allclose(out.logits, logits, atol=1e-4)
  nsp = out.features['pooled'] @ p['nsp']['kernel'] + p['nsp']['bias']
  np.testing.assert_allclose(out.aux_logits['nsp'], nsp, atol=1e-5)


@pytest.mark.parametrize('head', ['pretraining', 'mlm'])
def test_masked_positions_gather_the_dense_mlm_logits(pretraining, head):
  """MLM logits at P given positions (BERT's max_predictions_per_seq) equal the dense [B, T, V]
  logits gathered there; everything else is unchanged."""
  model, variables = pretraining
  if head == 'mlm':
    model = model.clone(head='mlm')
    variables = {'params': {k: v for k, v in variables['params'].items() if k != 'nsp'}}
  # Unsorted, repeated and padded (0) positions: the gather must not assume an order.
  positions = np.array([[3, 1, 0], [5, 2, 2]], np.int32)  # [B, P]
  apply = jax.jit(model.apply)
  dense = apply(variables, IDS, SEGMENTS)
  sparse = apply(variables, IDS, SEGMENTS, positions)
  chex.assert_shape(sparse.logits, (2, 3, model.vocab_size))
  gathered = np.take_along_axis(np.asarray(dense.logits), positions[..., None], axis=1)
  np.testing.assert_allclose(sparse.logits, gathered, rtol=1e-5, atol=1e-5)
  assert not np.allclose(sparse.logits[0, 0], sparse.logits[0, 1])  # really per position
  np.testing.assert_allclose(sparse.features['hidden'], dense.features['hidden'], atol=1e-6)
  assert set(sparse.aux_logits) == set(dense.aux_logits)
  for name in dense.aux_logits:
    np.testing.assert_allclose(sparse.aux_logits[name], dense.aux_logits[name], atol=1e-6)


@pytest.mark.parametrize('head', ['none', 'classification', 'token_classification', 'span'])
def test_masked_positions_need_an_mlm_head(head):
  model = bigjax.create_model('bert_test', head=head)
  ids = jax.ShapeDtypeStruct((2, 6), jnp.int32)
  positions = jax.ShapeDtypeStruct((2, 3), jnp.int32)
  with pytest.raises(
    ValueError, match=f"masked_positions are for the MLM heads, not head='{head}'"
  ):
    jax.eval_shape(model.init, jax.random.key(0), ids, None, positions)


def test_no_segment_embeddings_and_bad_options():
  model = bigjax.create_model('bert_test', type_vocab_size=0, pooler=False)
  params = _variables(model)['params']
  assert 'segment' not in params['embeddings'] and 'pooler' not in params
  out = model.apply({'params': params}, IDS, SEGMENTS)
  np.testing.assert_array_equal(out.logits, model.apply({'params': params}, IDS).logits)
  assert 'pooled' not in out.features
  ids = jax.ShapeDtypeStruct((2, 6), jnp.int32)
  init = lambda m, ids=ids: jax.eval_shape(m.init, jax.random.key(0), ids)  # noqa: E731
  with pytest.raises(ValueError, match='unknown BERT head'):
    init(bigjax.create_model('bert_test', head='lm'))
  with pytest.raises(ValueError, match='set pooler=True'):
    init(bigjax.create_model('bert_test', head='classification', pooler=False))
  with pytest.raises(ValueError, match='max_positions=64: truncate'):
    init(bigjax.create_model('bert_test'), jax.ShapeDtypeStruct((2, 65), jnp.int32))
  with pytest.raises(ValueError, match='max_positions=66: truncate'):  # 64 tokens + offset 2
    init(bigjax.create_model('roberta_test'), jax.ShapeDtypeStruct((2, 65), jnp.int32))


# ------------------------------------------------------------------------------ padding
def test_padding_invariance(pretraining):
  """Outputs at real positions (and the pooled ones) ignore the padding: how long it is and
  what its segment ids say."""
  model, variables = pretraining
  apply = jax.jit(model.apply)
  a = apply(variables, IDS, SEGMENTS)
  longer = np.pad(IDS, ((0, 0), (0, 3)))  # three more pad tokens
  b = apply(variables, longer, np.pad(SEGMENTS, ((0, 0), (0, 3)), constant_values=1))
  c = apply(variables, IDS, np.where(REAL, SEGMENTS, 1))  # padded segments changed
  for other in (b, c):
    np.testing.assert_allclose(other.logits[:, :6][REAL], a.logits[REAL], atol=1e-5)
    np.testing.assert_allclose(other.aux_logits['nsp'], a.aux_logits['nsp'], atol=1e-5)
    np.testing.assert_allclose(other.features['pooled'], a.features['pooled'], atol=1e-5)
  # The first sequence alone, unpadded, gives the same outputs too.
  alone = apply(variables, IDS[:1, :4], SEGMENTS[:1, :4])
  np.testing.assert_allclose(alone.logits[0], a.logits[0, :4], atol=1e-5)
  # ... and the masking is real: a visible change at a real position changes the rest.
  changed = IDS.copy()
  changed[0, 3] = 9
  d = apply(variables, changed, SEGMENTS)
  assert np.abs(d.logits[0, :3] - a.logits[0, :3]).max() > 1e-3


# ----------------------------------------------------------------------------- RoBERTa
def test_roberta_positions():
  ids = jnp.array([[0, 5, 6, 2, 1, 1], [1, 1, 0, 5, 2, 1]])  # pad id 1, even on the left
  np.testing.assert_array_equal(
    bert.roberta_position_ids(ids, 1), [[2, 3, 4, 5, 1, 1], [1, 1, 2, 3, 4, 1]]
  )
  model = bigjax.create_model('roberta_test', dropout_rate=0.0)
  assert model.pad_id == 1 and model.roberta_positions and model.layer_norm_eps == 1e-5
  variables = _variables(model, ids)
  assert variables['params']['embeddings']['segment']['embedding'].shape == (1, 32)
  apply = jax.jit(model.apply)
  # Fairseq positions count real tokens only: left padding changes nothing at real positions.
  both = apply(variables, jnp.array([[0, 5, 6, 2, 1, 1], [1, 1, 0, 5, 6, 2]]))
  right, left = both.logits[:1], both.logits[1:]
  np.testing.assert_allclose(left[0, 2:], right[0, :4], atol=1e-5)
  # Plain positions do not have that property.
  plain = model.clone(roberta_positions=False)
  both = jax.jit(plain.apply)(variables, jnp.array([[0, 5, 6, 2, 1, 1], [1, 1, 0, 5, 6, 2]]))
  right, left = both.logits[:1], both.logits[1:]
  assert np.abs(left[0, 2:] - right[0, :4]).max() > 1e-3


# ------------------------------------------------------------------------ intermediates
@pytest.mark.parametrize('scan', [False, True])
def test_sown_hidden_states_and_attention_maps(pretraining, scan):
  model, variables = pretraining
  reference = model.apply(variables, IDS, SEGMENTS).logits  # unrolled, fused attention
  if scan:
    model = model.clone(scan_layers=True, remat=True)
    params = variables['params']
    variables = {'params': {**params, 'encoder': layers.stack_layers(params['encoder'], 2)}}
  out, state = model.apply(variables, IDS, SEGMENTS, mutable=['intermediates'])
  np.testing.assert_allclose(out.logits, reference, atol=1e-4)
  inter = state['intermediates']
  hidden = inter['hidden_states']
  assert len(hidden) == model.num_layers + 1
  for h in hidden:
    chex.assert_shape(h, (2, 6, 32))
  np.testing.assert_allclose(hidden[-1], out.features['hidden'], atol=1e-5)
  assert np.abs(hidden[0] - hidden[1]).max() > 1e-3  # the embeddings, then layer outputs
  if scan:
    (maps,) = inter['encoder']['layers']['attn']['attention_weights']
    chex.assert_shape(maps, (2, 2, 2, 6, 6))  # [L, B, H, T, T]
  else:
    maps = [inter['encoder'][f'block_{i}']['attn']['attention_weights'][0] for i in range(2)]
    for m in maps:
      chex.assert_shape(m, (2, 2, 6, 6))  # [B, H, T, T]
    maps = jnp.stack(maps)
  np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
  assert float(maps[:, 0, :, :, 4:].max()) == 0.0  # padded keys get no attention
  # Without a mutable 'intermediates' nothing is computed or returned.
  assert model.apply(variables, IDS, mutable=['cache'])[1] == {}


def test_scanned_layers_equal_unrolled_and_axes_cover_every_parameter(pretraining):
  model, variables = pretraining
  scanned = model.clone(scan_layers=True)
  params = variables['params']
  stacked = {**params, 'encoder': layers.stack_layers(params['encoder'], 2)}
  shapes = jax.eval_shape(scanned.init, jax.random.key(0), IDS)['params']
  assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, stacked)
  a = model.apply(variables, IDS, SEGMENTS).logits
  b = scanned.apply({'params': stacked}, IDS, SEGMENTS).logits
  np.testing.assert_allclose(a, b, atol=1e-4)
  for tree in (params, stacked):
    axes = layers.logical_axes(tree)
    assert axes['embeddings']['word']['embedding'] == ('vocab', 'embed')
  assert layers.logical_axes(stacked)['encoder']['layers']['attn']['query']['kernel'][0] == 'layers'
