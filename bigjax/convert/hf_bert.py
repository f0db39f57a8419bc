"""Hugging Face BERT and RoBERTa (`model_type` 'bert', 'roberta') <-> `bigjax.models.bert.Bert`.

Legend: D width, H heads, V vocabulary, N classes.

Source names are those `save_pretrained` writes (transformers 4.x and 5.x alike), under the
`bert.` / `roberta.` prefix in the models with a head, bare in `BertModel` / `RobertaModel`:
  embeddings.{word_embeddings, position_embeddings, token_type_embeddings, LayerNorm}.*
  encoder.layer.{i}.attention.{self.{query, key, value}, output.dense, output.LayerNorm}.*
  encoder.layer.{i}.{intermediate.dense, output.dense, output.LayerNorm}.*
  pooler.dense.*
Heads (the architecture is read from the tensors present; `config.json`'s `architectures`
only separates sequence from token classification when both would fit):
  BertForPreTraining          cls.predictions.{transform.dense, transform.LayerNorm, bias},
                              cls.seq_relationship                      -> head='pretraining'
  BertForMaskedLM             cls.predictions.*                         -> head='mlm'
  RobertaForMaskedLM          lm_head.{dense, layer_norm, bias}         -> head='mlm'
  BertForSequenceClassification  pooler + classifier                    -> head='classification'
  RobertaForSequenceClassification  classifier.{dense, out_proj}        -> head='classification'
                              (its dense + tanh on <s> is the bigjax pooler; it drops out
                              <s> before the dense too, in training only)
  Bert/RobertaForTokenClassification  classifier (no pooler)            -> 'token_classification'
  Bert/RobertaForQuestionAnswering    qa_outputs [2, D]                 -> head='span'
  BertModel / RobertaModel    (no head)                                 -> head='none'
The masked-LM decoder is tied to the word embeddings (and its bias to the head's bias):
transformers 5 does not save `*.decoder.*`; older checkpoints that do are checked to hold
the tied values and then skipped. Old `LayerNorm.gamma/beta` names and the `position_ids`
buffer of transformers < 4.31 are read too. A pooler that the head does not read is kept
(bigjax `pooler=True`); the bigjax model reports its output in `features['pooled']`.

Inputs: the bigjax model takes `(input_ids, segment_ids)` (transformers' `token_type_ids`)
and derives the attention mask from `input_ids != pad_id` (config.json's `pad_token_id`),
so feed padded batches whose padding holds the pad id, as tokenizers produce them.

`export` writes the architecture that matches `head` (RoBERTa when `roberta_positions`):
'none' -> Bert/RobertaModel, 'pretraining' -> BertForPreTraining (RoBERTa has none),
'mlm' -> Bert/RobertaForMaskedLM, 'classification' -> ...ForSequenceClassification,
'token_classification' -> ...ForTokenClassification, 'span' -> ...ForQuestionAnswering.
A pooler that the exported architecture lacks is written anyway (transformers ignores it);
a model without segment embeddings (type_vocab_size=0) is written with one all-zero segment.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.convert import mapping
from bigjax.layers.stack import SCAN_NAME, unstack_layers
from bigjax.models.bert import Bert
from bigjax.registry import create_model
from bigjax.typing import PyTree

# HF `hidden_act` -> bigjax activation name ('gelu' is the exact erf form in both).
_ACTIVATIONS = {
  'gelu': 'gelu',
  'gelu_new': 'gelu_tanh',
  'gelu_pytorch_tanh': 'gelu_tanh',
  'relu': 'relu',
  'silu': 'silu',
  'swish': 'silu',
  'tanh': 'tanh',
}
_EXPORT_ACTIVATIONS = {
  'gelu': 'gelu',
  'gelu_tanh': 'gelu_pytorch_tanh',
  'relu': 'relu',
  'silu': 'silu',
  'tanh': 'tanh',
}

_ARCHITECTURES = {  # head -> (BERT class, RoBERTa class)
  'none': ('BertModel', 'RobertaModel'),
  'pretraining': ('BertForPreTraining', None),
  'mlm': ('BertForMaskedLM', 'RobertaForMaskedLM'),
  'classification': ('BertForSequenceClassification', 'RobertaForSequenceClassification'),
  'token_classification': ('BertForTokenClassification', 'RobertaForTokenClassification'),
  'span': ('BertForQuestionAnswering', 'RobertaForQuestionAnswering'),
}

# Old spellings -> the names transformers writes today.
_RENAMES = [(r'\.gamma$', '.weight'), (r'\.beta$', '.bias')]


def _roberta(model: Bert) -> bool:
  return model.roberta_positions


def table(model: Bert) -> mapping.Table:
  """The BERT / RoBERTa mapping of `model` (its head, pooler and RoBERTa-ness pick the names)."""
  roberta = _roberta(model)
  head = model.head
  p = '' if head == 'none' else ('roberta.' if roberta else 'bert.')
  t = mapping.Table()
  emb = f'{p}embeddings'
  t.add('params/embeddings/word/embedding', f'{emb}.word_embeddings.weight')
  t.add('params/embeddings/position/embedding', f'{emb}.position_embeddings.weight')
  if model.type_vocab_size:
    t.add('params/embeddings/segment/embedding', f'{emb}.token_type_embeddings.weight')
  t.norm('params/embeddings/norm', f'{emb}.LayerNorm')
  heads_in, heads_out = mapping.heads_in(model.num_heads), mapping.heads_out(model.num_heads)
  for i in range(model.num_layers):
    src, dst = f'{p}encoder.layer.{i}', f'params/encoder/block_{i}'
    for part in ('query', 'key', 'value'):
      t.dense(f'{dst}/attn/{part}', f'{src}.attention.self.{part}', heads_in, heads_in)
    t.dense(f'{dst}/attn/out', f'{src}.attention.output.dense', heads_out)
    t.norm(f'{dst}/attn_norm', f'{src}.attention.output.LayerNorm')
    t.dense(f'{dst}/mlp/fc1', f'{src}.intermediate.dense')
    t.dense(f'{dst}/mlp/fc2', f'{src}.output.dense')
    t.norm(f'{dst}/mlp_norm', f'{src}.output.LayerNorm')
  roberta_classifier = roberta and head == 'classification'
  if model.pooler:
    t.dense('params/pooler', 'classifier.dense' if roberta_classifier else f'{p}pooler.dense')
  if head in ('mlm', 'pretraining'):
    mlm = 'lm_head' if roberta else 'cls.predictions'
    t.dense('params/mlm/transform', f'{mlm}.dense' if roberta else f'{mlm}.transform.dense')
    t.norm('params/mlm/norm', f'{mlm}.layer_norm' if roberta else f'{mlm}.transform.LayerNorm')
    t.add('params/mlm/bias', f'{mlm}.bias')
    t.skip.append(rf'{re.escape(mlm)}\.decoder\.(weight|bias)')  # tied; checked by `convert`
  if head == 'pretraining':
    t.dense('params/nsp', 'cls.seq_relationship')
  if head == 'classification':
    t.dense('params/classifier', 'classifier.out_proj' if roberta else 'classifier')
  if head == 'token_classification':
    t.dense('params/token_classifier', 'classifier')
  if head == 'span':
    t.dense('params/span', 'qa_outputs')
  t.skip.append(r'(.*\.)?embeddings\.(position_ids|token_type_ids)')  # buffers, not weights
  if roberta_classifier:
    t.skip.append(r'roberta\.pooler\.dense\.(weight|bias)')  # the classifier's dense is used
  return t


def _head_of(config: dict, names: set[str], roberta: bool, what: str) -> str:
  """The bigjax head of a checkpoint, from the tensor names present."""
  arch = (config.get('architectures') or [''])[0]
  if arch.endswith(('ForMultipleChoice', 'ForCausalLM', 'LMHeadModel')) or config.get('is_decoder'):
    raise ValueError(
      f'{arch or "decoder"} checkpoints are not supported: bigjax BERT is an encoder'
    )
  mlm = any(n.startswith(('cls.predictions.', 'lm_head.')) for n in names)
  nsp = any(n.startswith('cls.seq_relationship.') for n in names)
  if mlm and nsp:
    return 'pretraining'
  if nsp:
    raise ValueError(
      f'the {what} has a next-sentence head but no masked-LM head '
      '(BertForNextSentencePrediction): bigjax reads NSP only with pre-training'
    )
  if mlm:
    return 'mlm'
  if any(n.startswith('qa_outputs.') for n in names):
    return 'span'
  if roberta and 'classifier.out_proj.weight' in names:
    return 'classification'
  if 'classifier.weight' in names:  # RoBERTa's sequence classifier is classifier.out_proj
    if roberta or arch.endswith('ForTokenClassification'):
      return 'token_classification'
    if arch.endswith('ForSequenceClassification'):
      return 'classification'
    # No hint: BertForSequenceClassification has a pooler, ...ForTokenClassification none.
    return 'classification' if 'bert.pooler.dense.weight' in names else 'token_classification'
  return 'none'


def model_overrides(config: dict, roberta: bool) -> dict:
  """HF BertConfig / RobertaConfig fields -> `create_model('bert_base', **overrides)` options."""
  act = config.get('hidden_act', 'gelu')
  if act not in _ACTIVATIONS:
    raise ValueError(f'BERT hidden_act {act!r} is not supported; use one of {sorted(_ACTIVATIONS)}')
  kind = config.get('position_embedding_type', 'absolute')
  if kind != 'absolute':
    raise ValueError(f"BERT position_embedding_type {kind!r} is not supported; only 'absolute'")
  if config.get('add_cross_attention'):
    raise ValueError(
      'BERT checkpoints with cross-attention (add_cross_attention) are not supported'
    )
  hidden, heads = int(config['hidden_size']), int(config['num_attention_heads'])
  if hidden % heads:
    raise ValueError(f'BERT hidden_size {hidden} is not a multiple of num_attention_heads {heads}')
  pad = config.get('pad_token_id')
  return dict(
    vocab_size=int(config['vocab_size']),
    hidden_size=hidden,
    num_layers=int(config['num_hidden_layers']),
    num_heads=heads,
    mlp_dim=int(config['intermediate_size']),
    max_positions=int(config.get('max_position_embeddings', 512)),
    type_vocab_size=int(config.get('type_vocab_size', 2)),
    pad_id=int(pad if pad is not None else (1 if roberta else 0)),
    roberta_positions=roberta,
    dropout_rate=float(config.get('hidden_dropout_prob', 0.1)),
    layer_norm_eps=float(config.get('layer_norm_eps', 1e-12)),
    activation=_ACTIVATIONS[act],
  )


def _check_tied(source: dict[str, np.ndarray], prefix: str, roberta: bool, what: str) -> None:
  """Old checkpoints save the tied decoder; it must equal what bigjax ties it to."""
  mlm = 'lm_head' if roberta else 'cls.predictions'
  pairs = [
    (f'{mlm}.decoder.weight', f'{prefix}embeddings.word_embeddings.weight'),
    (f'{mlm}.decoder.bias', f'{mlm}.bias'),
  ]
  for tied, to in pairs:
    if tied in source and to in source and not np.array_equal(source[tied], source[to]):
      raise ValueError(
        f'the {what} has an untied masked-LM decoder ({tied} differs from {to}): bigjax '
        'ties the decoder to the word embeddings and cannot load it'
      )


def convert(config: dict, tensors: dict[str, np.ndarray]) -> tuple[nn.Module, PyTree]:
  """Builds the bigjax BERT / RoBERTa described by `config` and fills it from `tensors`."""
  roberta = config.get('model_type') == 'roberta'
  family = 'Roberta' if roberta else 'Bert'
  source = {}
  for name, value in tensors.items():
    for pattern, repl in _RENAMES:
      name = re.sub(pattern, repl, name)
    source[name] = value
  what = f'{family} checkpoint'
  head = _head_of(config, set(source), roberta, what)
  prefix = 'roberta.' if roberta else 'bert.'
  if head == 'none':  # a headless checkpoint under the prefix reads as a bare BertModel
    source = {n.removeprefix(prefix): v for n, v in source.items()}
    prefix = ''
  _check_tied(source, prefix, roberta, what)

  options = model_overrides(config, roberta)
  names = set(source)
  if head == 'classification':
    classifier = source['classifier.out_proj.weight' if roberta else 'classifier.weight']
    options['num_classes'] = int(classifier.shape[0])  # [N, D]
  elif head == 'token_classification':
    options['num_classes'] = int(source['classifier.weight'].shape[0])  # [N, D]
  # The heads that read the pooled output need it (a missing tensor is then named on import).
  pooler = head in ('pretraining', 'classification') or f'{prefix}pooler.dense.weight' in names
  if options['type_vocab_size'] and f'{prefix}embeddings.token_type_embeddings.weight' not in names:
    options['type_vocab_size'] = 0
  model = create_model('bert_base', head=head, pooler=pooler, **options)

  arch = _ARCHITECTURES[head][roberta] or f'{family} {head}'
  ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  abstract = mapping.abstract_variables(model, ids)
  return model, table(model).import_variables(source, abstract, f'{arch} checkpoint')


def export(model: Bert, variables: PyTree) -> tuple[dict, dict[str, np.ndarray]]:
  """A bigjax BERT / RoBERTa -> Hugging Face `config.json` (as a dict) and safetensors tensors."""
  roberta = _roberta(model)
  arch = _ARCHITECTURES[model.head][roberta]
  if arch is None:
    raise ValueError(
      f'RoBERTa has no Hugging Face class for head={model.head!r} (no next-sentence '
      "prediction): export head='mlm'"
    )
  if model.activation not in _EXPORT_ACTIVATIONS:
    raise ValueError(f'BERT activation {model.activation!r} has no Hugging Face name')
  if model.head == 'classification' and roberta and not model.pooler:
    raise ValueError('RobertaForSequenceClassification needs the pooler: set pooler=True')
  params = variables['params']
  if SCAN_NAME in params['encoder']:  # scanned blocks are stored stacked; HF has one per layer
    params = {**params, 'encoder': unstack_layers(params['encoder'])}
    variables = {**variables, 'params': params}
  config = {
    'model_type': 'roberta' if roberta else 'bert',
    'architectures': [arch],
    'vocab_size': model.vocab_size,
    'hidden_size': model.hidden_size,
    'num_hidden_layers': model.num_layers,
    'num_attention_heads': model.num_heads,
    'intermediate_size': model.mlp_dim,
    'hidden_act': _EXPORT_ACTIVATIONS[model.activation],
    'hidden_dropout_prob': model.dropout_rate,
    'attention_probs_dropout_prob': 0.0,  # bigjax BERT has no dropout on attention maps
    'max_position_embeddings': model.max_positions,
    'type_vocab_size': model.type_vocab_size or 1,
    'layer_norm_eps': model.layer_norm_eps,
    'pad_token_id': model.pad_id,
    'position_embedding_type': 'absolute',
    'tie_word_embeddings': True,
  }
  if roberta:
    config.update(bos_token_id=0, eos_token_id=2)
  if model.head in ('classification', 'token_classification'):
    n = model.num_classes
    config['id2label'] = {str(i): f'LABEL_{i}' for i in range(n)}
    config['label2id'] = {f'LABEL_{i}': i for i in range(n)}
    if n == 1:
      config['problem_type'] = 'regression'
  plain = model.clone(scan_layers=False)  # the layout of the (unstacked) variables
  abstract = mapping.abstract_variables(plain, jax.ShapeDtypeStruct((1, 1), jnp.int32))
  tensors = table(plain).export_tensors(variables, abstract)
  if not model.type_vocab_size:  # HF always adds a segment embedding: one that adds nothing
    p = '' if model.head == 'none' else ('roberta.' if roberta else 'bert.')
    tensors[f'{p}embeddings.token_type_embeddings.weight'] = np.zeros(
      (1, model.hidden_size), np.float32
    )
  return config, tensors
