"""`bigjax.convert.mapping`: layouts invert, and a Table accounts for every tensor both ways."""

import jax
import numpy as np
import pytest

from bigjax.convert import mapping


@pytest.mark.parametrize(
  'layout, torch_shape',
  [
    (mapping.IDENTITY, (3, 5)),
    (mapping.LINEAR, (3, 5)),  # [out, in]
    (mapping.CONV, (4, 3, 2, 5)),  # [O, I, kh, kw]
    (mapping.heads_in(2), (6, 5)),  # [H*K, D]
    (mapping.heads_in(2), (6,)),  # bias [H*K]
    (mapping.heads_out(2), (5, 6)),  # [D, H*K]
  ],
  ids=lambda x: x.name if isinstance(x, mapping.Layout) else str(x),
)
def test_layouts_invert(layout, torch_shape):
  w = np.random.default_rng(0).normal(size=torch_shape).astype(np.float32)
  np.testing.assert_array_equal(layout.to_torch(layout.to_flax(w)), w)


def test_layout_shapes():
  w = np.arange(6 * 5).reshape(6, 5)  # [H*K, D] with H=2, K=3, D=5
  q = mapping.heads_in(2).to_flax(w)  # [D, H, K]
  assert q.shape == (5, 2, 3) and q[4, 1, 2] == w[1 * 3 + 2, 4]
  o = mapping.heads_out(2).to_flax(w.T)  # [D, H*K] -> [H, K, D]
  assert o.shape == (2, 3, 5) and o[1, 2, 4] == w[1 * 3 + 2, 4]
  c = mapping.CONV.to_flax(np.zeros((4, 3, 2, 1)))  # [O, I, kh, kw] -> [kh, kw, I, O]
  assert c.shape == (2, 1, 3, 4)


def _table():
  t = mapping.Table(skip=[r'.*\.num_batches_tracked'])
  t.dense('params/fc', 'fc')
  t.norm('params/ln', 'ln')
  return t


def _source():
  rng = np.random.default_rng(0)
  return {
    'fc.weight': rng.normal(size=(3, 4)).astype(np.float32),  # [out, in]
    'fc.bias': rng.normal(size=(3,)).astype(np.float32),
    'ln.weight': rng.normal(size=(3,)).astype(np.float16),
    'ln.bias': rng.normal(size=(3,)).astype(np.float32),
    'bn.num_batches_tracked': np.zeros((), np.int64),  # skipped
  }


_ABSTRACT = {
  'params': {
    'fc': {
      'kernel': jax.ShapeDtypeStruct((4, 3), np.float32),
      'bias': jax.ShapeDtypeStruct((3,), np.float32),
    },
    'ln': {
      'scale': jax.ShapeDtypeStruct((3,), np.float32),
      'bias': jax.ShapeDtypeStruct((3,), np.float32),
    },
  }
}


def test_table_round_trip():
  source = _source()
  variables = _table().import_variables(source, _ABSTRACT, 'test checkpoint')
  assert all(v.dtype == np.float32 for v in jax.tree.leaves(variables))
  np.testing.assert_array_equal(variables['params']['fc']['kernel'], source['fc.weight'].T)
  back = _table().export_tensors(variables, _ABSTRACT)
  assert sorted(back) == ['fc.bias', 'fc.weight', 'ln.bias', 'ln.weight']  # skipped: not written
  for name, value in back.items():
    assert value.dtype == np.float32 and value.flags.c_contiguous
    np.testing.assert_array_equal(value, source[name].astype(np.float32))


def test_table_accounting_on_import():
  source = _source()
  with pytest.raises(
    ValueError, match=r"test checkpoint has no tensor 'ln.bias' \(needed for params/ln/bias\)"
  ):
    _table().import_variables(
      {k: v for k, v in source.items() if k != 'ln.bias'}, _ABSTRACT, 'test checkpoint'
    )
  with pytest.raises(ValueError, match='does not use: extra.weight'):
    _table().import_variables({**source, 'extra.weight': np.ones(2)}, _ABSTRACT, 'test checkpoint')
  with pytest.raises(
    ValueError, match=r"'fc.weight' has shape \(4, 3\) \(-> \(3, 4\)\).*params/fc/kernel"
  ):
    _table().import_variables({**source, 'fc.weight': source['fc.weight'].T}, _ABSTRACT, 'x')
  missing = _table()
  missing.rules.pop()  # params/ln/bias has no rule
  with pytest.raises(AssertionError, match='converter bug: variables with no rule: params/ln/bias'):
    missing.import_variables(source, _ABSTRACT, 'x')
  twice = _table()
  twice.add('params/ln/bias', 'ln.bias2')
  with pytest.raises(AssertionError, match='converter bug: params/ln/bias has two rules'):
    twice.import_variables(source, _ABSTRACT, 'x')
  shared = _table()
  shared.rules[-1] = ('params/ln/bias', 'ln.weight', mapping.IDENTITY)
  with pytest.raises(AssertionError, match='converter bug: source tensor ln.weight has two rules'):
    shared.import_variables(source, _ABSTRACT, 'x')
  stray = _table()
  stray.add('params/nowhere/kernel', 'nowhere.weight')
  with pytest.raises(
    AssertionError, match='converter bug: the model has no variable params/nowhere'
  ):
    stray.import_variables(source, _ABSTRACT, 'x')


def test_table_accounting_on_export():
  variables = _table().import_variables(_source(), _ABSTRACT, 'x')
  missing = _table()
  missing.rules.pop()
  with pytest.raises(AssertionError, match='converter bug: variables with no rule: params/ln/bias'):
    missing.export_tensors(variables)
  twice = _table()
  twice.add('params/fc/bias', 'fc.bias2')
  with pytest.raises(AssertionError, match='converter bug: params/fc/bias has two rules'):
    twice.export_tensors(variables)
  extra = {'params': {**variables['params'], 'head': {'kernel': np.ones((3, 2))}}}
  with pytest.raises(AssertionError, match='variables with no rule: params/head/kernel'):
    _table().export_tensors(extra)
  # Against the model's shapes, variables of another model are the caller's error.
  with pytest.raises(ValueError, match=r'at params/head/kernel \(the model has no such variable'):
    _table().export_tensors(extra, _ABSTRACT)
  wide = jax.tree.map(lambda x: x, variables)
  wide['params']['fc']['bias'] = np.ones(5, np.float32)
  with pytest.raises(
    ValueError,
    match=r'at params/fc/bias \(the model has shape \(3,\), the variables have shape \(5,\)',
  ):
    _table().export_tensors(wide, _ABSTRACT)
  # 'intermediates' are outputs, not weights: never exported.
  sown = {**variables, 'intermediates': {'features': (np.ones((2, 3)),)}}
  assert sorted(_table().export_tensors(sown)) == sorted(_table().export_tensors(variables))


def test_split_stack_and_padded_rows_round_trip():
  """A fused source tensor split into parts, per-expert tensors stacked, vocabulary rows
  padded on import and cut on export: both directions, with the same accounting."""
  rng = np.random.default_rng(0)
  source = {
    'qkv.weight': rng.normal(size=(4, 6)).astype(np.float32),  # [D, 3 * 2] Conv1D
    'e.0.w': rng.normal(size=(3, 4)).astype(np.float32),  # [F, D] per expert
    'e.1.w': rng.normal(size=(3, 4)).astype(np.float32),
    'wte.weight': rng.normal(size=(5, 4)).astype(np.float32),  # [V, D]
  }
  t = mapping.Table()
  q, k, v = t.split('qkv.weight', ['q', 'k', 'v'], axis=1)
  for part, name in (('q', q), ('k', k), ('v', v)):
    t.add(f'params/{part}/kernel', name, mapping.conv1d_heads_in(1))  # [D, 1, 2]
  t.add('params/experts/kernel', t.stack('e.w', ['e.0.w', 'e.1.w']), mapping.EXPERTS)
  t.add('params/lm/kernel', 'wte.weight', mapping.chain(mapping.pad_rows(5, 8), mapping.LINEAR))
  shape = lambda *s: jax.ShapeDtypeStruct(s, np.float32)  # noqa: E731
  abstract = {
    'params': {
      **{p: {'kernel': shape(4, 1, 2)} for p in 'qkv'},
      'experts': {'kernel': shape(2, 4, 3)},  # [E, D, F]
      'lm': {'kernel': shape(4, 8)},  # [D, padded V]
    }
  }
  variables = t.import_variables(source, abstract, 'x')
  params = variables['params']
  np.testing.assert_array_equal(params['k']['kernel'][:, 0], source['qkv.weight'][:, 2:4])
  np.testing.assert_array_equal(params['experts']['kernel'][1], source['e.1.w'].T)
  lm = np.asarray(params['lm']['kernel'])
  np.testing.assert_array_equal(lm[:, :5], source['wte.weight'].T)
  assert not lm[:, 5:].any()  # zero rows up to the padded vocabulary
  back = t.export_tensors(variables, abstract)
  assert sorted(back) == sorted(source)
  for name, value in source.items():
    np.testing.assert_array_equal(back[name], value)
  with pytest.raises(ValueError, match="has no tensor 'e.1.w'"):
    t.import_variables({n: w for n, w in source.items() if n != 'e.1.w'}, abstract, 'x')
  with pytest.raises(ValueError, match='does not split into 3 equal parts'):
    t.import_variables({**source, 'qkv.weight': np.ones((4, 7))}, abstract, 'x')
