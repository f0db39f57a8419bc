"""BERT and RoBERTa weights in and out: parity with Hugging Face transformers both ways.

Legend: B batch, T length, V vocabulary, N classes.

Each torch model is built once (a module fixture), randomly initialised and perturbed so no
weight keeps a special value, saved with `save_pretrained`, and run on a batch with
padding. `bigjax.from_pretrained` of the folder must give the same outputs (per-token
outputs compared at the real positions), and `bigjax.save_pretrained` of the result,
loaded back by transformers with no missing or unexpected weights, the same again.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import bigjax
from bigjax.convert import hf_bert, mapping
from bigjax.layers import stack_layers

torch = pytest.importorskip('torch', reason='parity tests need torch (the parity extra)')
transformers = pytest.importorskip('transformers', reason='parity tests need transformers')

pytestmark = pytest.mark.parity
TOL = 1e-4  # max abs difference in float32

# Two sequences: the first is padded after 6 tokens (pad ids are filled in per model).
LENGTHS = (6, 10)
T = 10


def _batch(pad_id: int, seed: int = 0):
  """(input_ids, segment_ids, real) [B, T] numpy; ids avoid the pad id and 0..2."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(3, 99, (2, T)).astype(np.int64)
  real = np.arange(T)[None, :] < np.array(LENGTHS)[:, None]  # [B, T]
  ids = np.where(real, ids, pad_id)
  segments = np.where(real & (np.arange(T)[None, :] >= 3), 1, 0).astype(np.int64)
  return ids, segments, real


def _config(roberta: bool, **kw):
  common = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
  )
  if roberta:
    return transformers.RobertaConfig(
      max_position_embeddings=40,
      type_vocab_size=1,
      pad_token_id=1,
      layer_norm_eps=1e-5,
      **common,
      **kw,
    )
  return transformers.BertConfig(max_position_embeddings=40, **common, **kw)


def _torch_outputs(model, ids, segments, real):
  """The model's outputs as a dict of numpy arrays."""
  kwargs = dict(
    input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(real.astype(np.int64))
  )
  if model.config.model_type == 'bert':
    kwargs['token_type_ids'] = torch.from_numpy(segments)
  with torch.no_grad():
    out = model(**kwargs)
  names = ('prediction_logits', 'seq_relationship_logits', 'logits', 'start_logits', 'end_logits')
  names += ('last_hidden_state', 'pooler_output')
  return {n: getattr(out, n).numpy() for n in names if getattr(out, n, None) is not None}


def _hf_model(cls, roberta: bool, tmp_path_factory, **kw):
  """(folder, torch model, torch outputs, batch) of a saved random `cls`."""
  torch.manual_seed(0)
  model = cls._from_config(_config(roberta, **kw), attn_implementation='eager').eval()
  with torch.no_grad():
    for p in model.parameters():  # tied parameters are one Parameter: perturbed once
      p.add_(0.1 * torch.randn_like(p))
  path = str(tmp_path_factory.mktemp(cls.__name__))
  model.save_pretrained(path)
  batch = _batch(model.config.pad_token_id)
  return path, model, _torch_outputs(model, *batch), batch


@pytest.fixture(scope='module')
def pretraining(tmp_path_factory):
  return _hf_model(transformers.BertForPreTraining, False, tmp_path_factory)


@pytest.fixture(scope='module')
def sequence_classification(tmp_path_factory):
  return _hf_model(
    transformers.BertForSequenceClassification, False, tmp_path_factory, num_labels=3
  )


@pytest.fixture(scope='module')
def question_answering(tmp_path_factory):
  return _hf_model(transformers.BertForQuestionAnswering, False, tmp_path_factory)


@pytest.fixture(scope='module')
def roberta_mlm(tmp_path_factory):
  return _hf_model(transformers.RobertaForMaskedLM, True, tmp_path_factory)


def _bigjax_outputs(model, variables, ids, segments):
  """bigjax outputs named as transformers names them."""
  out = model.apply(variables, ids.astype(np.int32), segments.astype(np.int32))
  logits = np.asarray(out.logits)
  if model.head == 'pretraining':
    return {
      'prediction_logits': logits,
      'seq_relationship_logits': np.asarray(out.aux_logits['nsp']),
    }
  if model.head == 'span':
    return {'start_logits': logits[..., 0], 'end_logits': logits[..., 1]}
  if model.head == 'none':
    return {'last_hidden_state': logits, 'pooler_output': np.asarray(out.features['pooled'])}
  return {'logits': logits}


def _assert_same(ours, theirs, real):
  assert set(ours) <= set(theirs) and ours
  for name, value in ours.items():
    ref = theirs[name]
    assert value.shape == ref.shape, name
    if value.ndim >= 2 and value.shape[1] == T:  # per token: the real positions only
      value, ref = value[real], ref[real]
    np.testing.assert_allclose(value, ref, atol=TOL, rtol=0, err_msg=name)


def _round_trip(model, variables, hf_cls, tmp_path, batch, expected):
  """bigjax.save_pretrained -> transformers loads every weight -> the same outputs."""
  folder = str(tmp_path / 'exported')
  bigjax.save_pretrained(model, variables, folder)
  loaded, info = hf_cls.from_pretrained(
    folder, attn_implementation='eager', output_loading_info=True
  )
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  loaded.eval()
  _assert_same(_torch_outputs(loaded, *batch), expected, batch[2])
  return folder, loaded


# -------------------------------------------------------------------- the four architectures
CASES = [
  ('pretraining', 'BertForPreTraining', 'pretraining'),
  ('sequence_classification', 'BertForSequenceClassification', 'classification'),
  ('question_answering', 'BertForQuestionAnswering', 'span'),
  ('roberta_mlm', 'RobertaForMaskedLM', 'mlm'),
]


@pytest.mark.parametrize('fixture, arch, head', CASES)
def test_import_matches_transformers(fixture, arch, head, request):
  path, hf, expected, (ids, segments, real) = request.getfixturevalue(fixture)
  model, variables = bigjax.from_pretrained(path)
  assert type(model).__name__ == 'Bert' and model.head == head
  assert model.roberta_positions == (arch.startswith('Roberta'))
  _assert_same(_bigjax_outputs(model, variables, ids, segments), expected, real)


@pytest.mark.parametrize('fixture, arch, head', CASES)
def test_export_loads_in_transformers(fixture, arch, head, request, tmp_path):
  path, hf, expected, batch = request.getfixturevalue(fixture)
  model, variables = bigjax.from_pretrained(path)
  folder, loaded = _round_trip(
    model, variables, getattr(transformers, arch), tmp_path, batch, expected
  )
  assert type(loaded).__name__ == arch
  # The same tensors as transformers saved (the tied decoder is not written by either).
  ours, theirs = load_file(f'{folder}/model.safetensors'), load_file(f'{path}/model.safetensors')
  assert set(ours) == set(theirs)
  for name in theirs:
    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


# ----------------------------------------------------------------- the other architectures
def test_bare_bert_model_and_scanned_export(pretraining, tmp_path):
  _, hf, _, batch = pretraining
  hf.bert.save_pretrained(str(tmp_path / 'bare'))  # BertModel: no prefix, no head
  expected = _torch_outputs(hf.bert, *batch)
  model, variables = bigjax.from_pretrained(str(tmp_path / 'bare'))
  assert model.head == 'none' and model.pooler
  _assert_same(_bigjax_outputs(model, variables, *batch[:2]), expected, batch[2])
  # A scanned model exports the same tensors as the unrolled one.
  params = variables['params']
  scanned = {'params': {**params, 'encoder': stack_layers(params['encoder'], model.num_layers)}}
  _, plain_tensors = hf_bert.export(model, variables)
  _, scanned_tensors = hf_bert.export(model.clone(scan_layers=True), scanned)
  assert set(plain_tensors) == set(scanned_tensors)
  for name, value in plain_tensors.items():
    np.testing.assert_array_equal(scanned_tensors[name], value)


@pytest.mark.parametrize(
  'name, head, arch, extra',
  [
    ('bert_test', 'token_classification', 'BertForTokenClassification', {}),
    ('bert_test', 'span', 'BertForQuestionAnswering', {'type_vocab_size': 0}),
    ('roberta_test', 'classification', 'RobertaForSequenceClassification', {}),
    ('roberta_test', 'span', 'RobertaForQuestionAnswering', {}),
  ],
)
def test_bigjax_heads_export_and_import_back(name, head, arch, extra, tmp_path):
  # Only transformers' sequence classifiers have a pooler (a bigjax one would be written
  # anyway, and transformers would report it as unexpected).
  pooler = head == 'classification'
  model = bigjax.create_model(
    name, head=head, num_classes=3, pooler=pooler, dropout_rate=0.0, max_positions=40, **extra
  )
  ids, segments, real = _batch(model.pad_id, seed=1)
  if not model.type_vocab_size:  # exported with one all-zero segment embedding: segment 0 only
    segments = np.zeros_like(segments)
  batch = ids, segments, real
  abstract = mapping.abstract_variables(model, jax.ShapeDtypeStruct((2, T), jnp.int32))
  rng = np.random.RandomState(2)
  variables = jax.tree.map(
    lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype), abstract
  )
  ours = _bigjax_outputs(model, variables, *batch[:2])
  folder, _ = _round_trip(model, variables, getattr(transformers, arch), tmp_path, batch, ours)
  back, back_variables = bigjax.from_pretrained(folder)
  assert (back.head, back.pooler, back.roberta_positions) == (head, pooler, model.roberta_positions)
  if head != 'span':  # a span head always has 2 outputs
    assert back.num_classes == 3
  _assert_same(_bigjax_outputs(back, back_variables, *batch[:2]), ours, batch[2])


# ----------------------------------------------------------------------- old checkpoints
def test_old_names_and_the_tied_decoder(pretraining, tmp_path):
  path, _, expected, batch = pretraining
  tensors = load_file(f'{path}/model.safetensors')
  old = {}
  for name, value in tensors.items():  # transformers < 4.31 style: gamma/beta, buffers, decoder
    old[
      name.replace('LayerNorm.weight', 'LayerNorm.gamma').replace(
        'LayerNorm.bias', 'LayerNorm.beta'
      )
    ] = value
  old['bert.embeddings.position_ids'] = np.arange(40, dtype=np.int64)[None]
  old['cls.predictions.decoder.weight'] = tensors['bert.embeddings.word_embeddings.weight']
  old['cls.predictions.decoder.bias'] = tensors['cls.predictions.bias']
  folder = tmp_path / 'old'
  folder.mkdir()
  (folder / 'config.json').write_text(open(f'{path}/config.json').read())
  save_file(old, str(folder / 'model.safetensors'))
  model, variables = bigjax.from_pretrained(str(folder))
  _assert_same(_bigjax_outputs(model, variables, *batch[:2]), expected, batch[2])
  # An untied decoder cannot be represented: refused, not silently dropped.
  old['cls.predictions.decoder.weight'] = old['cls.predictions.decoder.weight'] + 1.0
  save_file(old, str(folder / 'model.safetensors'))
  with pytest.raises(ValueError, match='untied masked-LM decoder'):
    bigjax.from_pretrained(str(folder))
  # A stray tensor is named.
  del old['cls.predictions.decoder.weight']
  old['cls.extra.weight'] = np.zeros(3, np.float32)
  save_file(old, str(folder / 'model.safetensors'))
  with pytest.raises(ValueError, match='does not use: cls.extra.weight'):
    bigjax.from_pretrained(str(folder))


def test_roberta_has_no_pretraining_export(tmp_path):
  model = bigjax.create_model('roberta_test', head='pretraining')
  with pytest.raises(ValueError, match="export head='mlm'"):
    bigjax.save_pretrained(model, {'params': {}}, str(tmp_path / 'x'))
  assert not (tmp_path / 'x').exists()
