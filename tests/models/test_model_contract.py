"""The model contract: every registered model passes it; a new family joins with one row.

Legend: B batch, T target length, S source length, V vocabulary, C classes.

For every name in `bigjax.list_models()`, abstractly (`jax.eval_shape`, nothing compiled):
output shape and dtype, float32 parameters, the published parameter count where one
exists, and for decoders a cached-decoding step of the right shape.
For the tiny variants (`*_test`, `mlp`, `lenet`), really run: bf16 compute over float32
parameters, one trace under jit for two calls, dropout off in evaluation and on in training,
and for decoders cached decoding, one token at a time, equal to the full forward pass.
"""

import dataclasses
import fnmatch
import functools
import importlib
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax import decode, registry
from bigjax.outputs import logits_of

B, T, S = 2, 5, 6  # batch, target length, source length
Inputs = tuple[jax.ShapeDtypeStruct, ...]


# ------------------------------------------------------------------------ input makers
def images(size: int, channels: int = 3) -> Callable[[nn.Module], Inputs]:
  return lambda model: (jax.ShapeDtypeStruct((B, size, size, channels), jnp.float32),)


def audio(model: nn.Module) -> Inputs:
  return (jax.ShapeDtypeStruct((B, model.sample_rate // 4), jnp.float32),)  # [B, N], 0.25 s


def tokens(model: nn.Module) -> Inputs:
  return (jax.ShapeDtypeStruct((B, T), jnp.int32),)


def source_and_target(model: nn.Module) -> Inputs:
  return jax.ShapeDtypeStruct((B, S), jnp.int32), jax.ShapeDtypeStruct((B, T), jnp.int32)


def images_and_texts(size: int) -> Callable[[nn.Module], Inputs]:
  return lambda model: (*images(size)(model), *tokens(model))


def classes(model: nn.Module) -> tuple[int, ...]:
  return (B, model.num_classes)  # [B, C]


def pairs(model: nn.Module) -> tuple[int, ...]:
  return (B, B)  # [B, B]: every image against every text


def vocab_per_step(model: nn.Module) -> tuple[int, ...]:
  return (B, T, model.vocab_size)  # [B, T, V]


def hidden_per_step(model: nn.Module) -> tuple[int, ...]:
  return (B, T, model.hidden_size)  # [B, T, D]


def padded_vocab_per_step(model: nn.Module) -> tuple[int, ...]:
  return (B, T, model.padded_vocab)  # [B, T, V'] (the vocabulary padded to a round size)


# ---------------------------------------------------------------------- decoding adapters
def lm_decoding(model, variables, inputs):
  """(step, cache, fed [B, T]) for a decoder-only model: the tokens are fed one by one."""
  (tgt,) = inputs
  step, cache = decode.lm_decoder(model, variables, tgt.shape[0], tgt.shape[1])
  return step, cache, tgt


def seq2seq_decoding(model, variables, inputs):
  """(step, cache, fed [B, T]) for an encoder-decoder: the source is encoded once."""
  src, tgt = inputs
  step, cache = decode.seq2seq_decoder(model, variables, src, tgt.shape[1])
  return step, cache, tgt


@dataclasses.dataclass(frozen=True)
class Row:
  """How to test one family (or one name).

  inputs: model -> abstract positional inputs (floats become N(0, 1) images, ints tokens
    in [1, V), so no pad id).
  output: model -> the expected logits shape.
  published: name -> the published parameter count, for the names that have one (counted
    over `params` at the row's input size).
  dropout: the family has `dropout_rate`; training with it must differ from evaluation.
  bf16_logits: the logits dtype under `dtype=jnp.bfloat16`.
  decoder: (model, variables, inputs) -> (step, cache, tokens to feed), or None.
  count: (model, params) -> the parameter count compared with `published`.
  """

  inputs: Callable[[nn.Module], Inputs]
  output: Callable[[nn.Module], tuple[int, ...]]
  published: dict[str, int] = dataclasses.field(default_factory=dict)
  dropout: bool = True
  bf16_logits: jnp.dtype = jnp.bfloat16
  decoder: Callable | None = None
  count: Callable[[nn.Module, dict], int] = lambda model, params: _count(params)


# torchvision's published counts (1000 classes, 224x224; Inception v3 299x299 with its
# auxiliary classifier); ViT-B, L and H at 224x224 with 1000 classes as timm and Hugging Face
# list them, ViT-S/16 and ViT-Ti/16 as in DeiT. The Transformer's "65M" and "213M"
# (Vaswani et al., Table 3) depend on a vocabulary we do not register:
# tests/models/test_transformer.py checks them.
VGG_COUNTS = {
  'vgg11': 132_863_336,
  'vgg13': 133_047_848,
  'vgg16': 138_357_544,
  'vgg19': 143_667_240,
  'vgg11_bn': 132_868_840,
  'vgg13_bn': 133_053_736,
  'vgg16_bn': 138_365_992,
  'vgg19_bn': 143_678_248,
}
RESNET_COUNTS = {
  'resnet18': 11_689_512,
  'resnet34': 21_797_672,
  'resnet50': 25_557_032,
  'resnet101': 44_549_160,
  'resnet152': 60_192_808,
}
VIT_COUNTS = {
  'vit_ti16': 5_717_416,
  'vit_s16': 22_050_664,
  'vit_b16': 86_567_656,
  'vit_b32': 88_224_232,
  'vit_l16': 304_326_632,
  'vit_l32': 306_535_400,
  'vit_h14': 632_045_800,
}
# BERT with its pooler and no head (Hugging Face `BertModel`, uncased vocabulary of 30,522):
# base 109,482,240 as the issue and the BERT literature give it; the other sizes and RoBERTa
# (`RobertaModel`, 50,265 ids, 514 positions, one segment; base 124,645,632) equal
# transformers' counts of the same configurations.
BERT_COUNTS = {
  'bert_tiny': 4_385_920,
  'bert_mini': 11_170_560,
  'bert_small': 28_763_648,
  'bert_medium': 41_373_184,
  'bert_base': 109_482_240,
  'bert_large': 335_141_888,
}
ROBERTA_COUNTS = {'roberta_base': 124_645_632, 'roberta_large': 355_359_744}
# Decoder-only LMs (`bigjax.models.gpt`), counted over the real vocabulary (the rows padded to
# a multiple of 128 excluded): GPT-2 as Hugging Face's GPT2LMHeadModel (tied), Llama 2 7B
# and Mixtral 8x7B as their published configurations.
GPT_COUNTS = {
  'gpt2_small': 124_439_808,
  'gpt2_medium': 354_823_168,
  'gpt2_large': 774_030_080,
  'gpt2_xl': 1_557_611_200,
  'llama2_7b': 6_738_415_616,
  'mixtral_8x7b': 46_702_792_704,
}


# CLIP as Hugging Face's CLIPModel counts the configurations of openai/clip-vit-base-patch32
# and -patch16 (224x224 images, 77 text positions, logit_scale included).
CLIP_COUNTS = {'clip_vit_b32': 151_277_313, 'clip_vit_b16': 149_620_737}


def gpt_count(model: nn.Module, params: dict) -> int:
  from bigjax.models import gpt

  return gpt.num_params(params, model.vocab_size)


def gpt_row(prefix: str) -> Row:
  return Row(
    tokens,
    padded_vocab_per_step,
    published={k: v for k, v in GPT_COUNTS.items() if k.startswith(prefix)},
    bf16_logits=jnp.float32,  # the logits are cast to float32 (padded columns at -1e9)
    decoder=lm_decoding,
    count=gpt_count,
  )


# Pattern (fnmatch over the registered name) -> row; the first matching pattern wins.
ROWS: dict[str, Row] = {
  # LeNet-5 on 32x32x1, 10 classes: 156 + 2,416 + 48,120 + 10,164 + 850 (LeCun et al., 1998).
  # The CNNs cast their logits to float32 (an fp32 loss under bf16 compute).
  'lenet': Row(images(32, 1), classes, published={'lenet': 61_706}, bf16_logits=jnp.float32),
  'mlp': Row(images(8, 1), classes),
  'vgg_test': Row(images(8), classes, bf16_logits=jnp.float32),
  'vgg*': Row(images(224), classes, published=VGG_COUNTS, bf16_logits=jnp.float32),
  'resnet_test': Row(images(32), classes, dropout=False, bf16_logits=jnp.float32),
  'resnet*': Row(
    images(224), classes, published=RESNET_COUNTS, dropout=False, bf16_logits=jnp.float32
  ),
  'inception_test': Row(images(32), classes, bf16_logits=jnp.float32),
  'inception_v3': Row(
    images(299), classes, published={'inception_v3': 27_161_264}, bf16_logits=jnp.float32
  ),
  # CLIP's logits are cosine similarities of float32 unit embeddings, times the scale.
  'clip_test': Row(images_and_texts(16), pairs, bf16_logits=jnp.float32),
  'clip_*': Row(images_and_texts(224), pairs, published=CLIP_COUNTS, bf16_logits=jnp.float32),
  'vit_test': Row(images(32), classes, bf16_logits=jnp.float32),
  'vit_*': Row(images(224), classes, published=VIT_COUNTS, bf16_logits=jnp.float32),
  # Recurrent cells keep their state in float32; the projections compute in bf16 and the
  # logits are cast to float32.
  '*_lm*': Row(tokens, vocab_per_step, bf16_logits=jnp.float32, decoder=lm_decoding),
  '*_classifier*': Row(tokens, classes, bf16_logits=jnp.float32),
  'seq2seq_lstm*': Row(
    source_and_target, vocab_per_step, decoder=seq2seq_decoding, bf16_logits=jnp.float32
  ),
  'transformer_*': Row(
    source_and_target, vocab_per_step, decoder=seq2seq_decoding, bf16_logits=jnp.float32
  ),
  # The registered BERTs have head='none': the logits are the last hidden states.
  'bert_*': Row(tokens, hidden_per_step, published=BERT_COUNTS),
  'roberta_*': Row(tokens, hidden_per_step, published=ROBERTA_COUNTS),
  'gpt2_*': gpt_row('gpt2_'),
  'llama*': gpt_row('llama'),
  'mixtral_*': gpt_row('mixtral_'),
  # Speech classifiers on raw audio (N(0, 1) noise is audio enough): log-mel, SpecAugment
  # in training (so even the ResNet backbone, which has no dropout, differs), a backbone;
  # float32 logits under bf16 compute.
  'speech_resnet*': Row(audio, classes, dropout=False, bf16_logits=jnp.float32),
  'speech_*': Row(audio, classes, bf16_logits=jnp.float32),
  # WaveNet reads mu-law codes [B, T] and predicts the next one [B, T, 256]; no dropout.
  # The registered variants are unconditioned (conditioning: tests/models/test_wavenet.py).
  'wavenet_*': Row(
    tokens, vocab_per_step, dropout=False, bf16_logits=jnp.float32, decoder=lm_decoding
  ),
}

NAMES = bigjax.list_models()


def row_of(name: str) -> Row | None:
  return next((row for pattern, row in ROWS.items() if fnmatch.fnmatchcase(name, pattern)), None)


def is_tiny(name: str) -> bool:
  """The variants that are compiled and run; the others are only traced abstractly."""
  return name.endswith('_test') or name in ('mlp', 'lenet')


TINY = [n for n in NAMES if is_tiny(n)]
DECODERS = [n for n in NAMES if row_of(n) is not None and row_of(n).decoder is not None]


def _count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------- the table itself
def test_every_registered_model_has_a_row():
  missing = [n for n in NAMES if row_of(n) is None]
  assert not missing, f'add a row to ROWS in {__file__} for: {", ".join(missing)}'


def test_every_row_and_count_names_a_registered_model():
  for pattern, row in ROWS.items():
    assert fnmatch.filter(NAMES, pattern), f'row {pattern!r} matches no registered model'
    for name in row.published:
      assert row_of(name) is row, f'{name} is counted in the row {pattern!r} but not matched by it'


def test_every_family_has_a_tiny_variant():
  for family in registry.FAMILIES:
    names = importlib.import_module(f'bigjax.models.{family}').MODELS
    assert any(is_tiny(n) for n in names), f'{family} registers no *_test variant to run'


def test_the_registry_lists_and_rejects():
  assert len(NAMES) == len(set(NAMES)) >= 56
  with pytest.raises(ValueError, match="unknown model 'lenett'.*did you mean lenet"):
    bigjax.create_model('lenett')
  with pytest.raises(ValueError, match='has no option'):
    bigjax.create_model('mlp', widht=3)


# ---------------------------------------------------------- every model, abstractly
def _abstract(name: str) -> tuple[Row, nn.Module, Inputs]:
  """(row, model with its defaults, abstract inputs) of a registered name."""
  row = row_of(name)
  model = bigjax.create_model(name)
  return row, model, row.inputs(model)


def _traced(model: nn.Module, inputs: Inputs, fn: Callable):
  """`fn(variables, inputs)` with the model's initial variables, traced abstractly (nothing
  compiled)."""
  return jax.eval_shape(
    lambda key, *xs: fn(model.init(key, *xs, train=False), xs), jax.random.key(0), *inputs
  )


@pytest.mark.parametrize('name', NAMES)
def test_shapes_dtypes_and_parameter_count(name):
  row, model, inputs = _abstract(name)

  def forward(variables, xs):
    return variables, model.apply(variables, *xs, train=False)

  variables, outputs = _traced(model, inputs, forward)
  logits = logits_of(outputs)
  chex.assert_shape(logits, row.output(model))
  assert logits.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(variables['params'])} == {jnp.dtype(jnp.float32)}
  if name in row.published:
    assert row.count(model, variables['params']) == row.published[name]


@pytest.mark.parametrize('name', DECODERS)
def test_every_decoder_has_a_cached_step(name):
  row, model, inputs = _abstract(name)

  def first_step(variables, xs):
    step, cache, fed = row.decoder(model, variables, xs)
    return logits_of(step(cache, fed[:, :1])[0])

  logits = _traced(model, inputs, first_step)
  batch, _, *rest = row.output(model)
  chex.assert_shape(logits, (batch, 1, *rest))


# ------------------------------------------------------------------ tiny models, for real
def _concrete(spec: jax.ShapeDtypeStruct, key, model: nn.Module) -> jax.Array:
  if jnp.issubdtype(spec.dtype, jnp.integer):
    return jax.random.randint(key, spec.shape, 1, model.vocab_size, spec.dtype)
  return jax.random.normal(key, spec.shape, spec.dtype)


def _fill(abstract, seed: int = 0):
  """Values for an abstract variable tree, drawn with numpy.

  Compiling `init` costs more than everything else here (26 s for inception_test), and the
  contract is about the forward pass, not the initialisers: kernels N(0, 1/fan_in), norm
  scales and variances in [0.5, 1.5], biases and means N(0, 0.1).
  """
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name in ('mean', 'bias'):
      value = rng.normal(0, 0.1, s.shape)
    elif name in ('var', 'scale'):
      value = rng.uniform(0.5, 1.5, s.shape)
    else:
      value = rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape)
    return jnp.asarray(value, s.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


@functools.cache
def tiny(name: str):
  """(bf16 model with dropout on where it has dropout, float32 variables, inputs)."""
  row = row_of(name)
  model = bigjax.create_model(name, dtype=jnp.bfloat16)
  if row.dropout:
    model = model.clone(dropout_rate=0.5)
  keys = jax.random.split(jax.random.key(1), 4)
  inputs = tuple(_concrete(s, k, model) for s, k in zip(row.inputs(model), keys))
  abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), *inputs)
  variables = _fill({k: v for k, v in abstract.items() if k != 'intermediates'})
  return model, variables, inputs


@functools.cache
def tiny_outputs(name: str):
  """Evaluation and training logits of `tiny(name)` for dropout keys 1 and 2: one program,
  traced once for both calls."""
  model, variables, inputs = tiny(name)
  mutable = [k for k in variables if k == 'batch_stats']

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(variables, inputs, rng):
    rngs = {'dropout': rng}
    evaluated = logits_of(model.apply(variables, *inputs, train=False, rngs=rngs))
    trained = model.apply(variables, *inputs, train=True, rngs=rngs, mutable=mutable or False)
    return evaluated, logits_of(trained[0] if mutable else trained)

  chex.clear_trace_counter()  # chex counts the traces of `run`'s code, across models
  return run(variables, inputs, jax.random.key(1)), run(variables, inputs, jax.random.key(2))


@pytest.mark.parametrize('name', TINY)
def test_bf16_compute_one_trace_and_no_dropout_in_eval(name):
  row = row_of(name)
  model, _, inputs = tiny(name)
  init = functools.partial(model.init, train=False)
  abstract = jax.eval_shape(init, jax.random.key(0), *inputs)
  chex.assert_type(jax.tree.leaves(abstract['params']), jnp.float32)  # what init really makes
  (a, _), (b, _) = tiny_outputs(name)
  chex.assert_shape(a, row.output(model))
  chex.assert_type(a, row.bf16_logits)
  assert np.isfinite(np.asarray(a, np.float32)).all()
  np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.mark.parametrize('name', [n for n in TINY if row_of(n).dropout])
def test_dropout_in_training(name):
  (evaluated, a), (_, b) = jax.tree.map(lambda x: np.asarray(x, np.float32), tiny_outputs(name))
  scale = np.abs(evaluated).max()  # some heads start tiny (VGG: N(0, 0.01))
  assert np.abs(a - b).max() > 0.05 * scale, 'two dropout draws gave the same training logits'
  assert np.abs(a - evaluated).max() > 0.05 * scale, 'training logits equal evaluation logits'


@pytest.mark.parametrize('name', [n for n in TINY if n in DECODERS])
def test_cached_decoding_equals_the_full_forward_pass(name):
  row = row_of(name)
  model, variables, inputs = tiny(name)
  model = model.clone(dtype=jnp.float32, **({'dropout_rate': 0.0} if row.dropout else {}))
  full = logits_of(jax.jit(model.apply)(variables, *inputs))  # [B, T, V]
  step, cache, fed = row.decoder(model, variables, inputs)

  @jax.jit
  def one_at_a_time(step, cache, fed):
    def body(cache, token):  # token [B]
      logits, cache = step(cache, token[:, None])
      return cache, logits_of(logits)[:, 0]  # [B, V]

    return jax.lax.scan(body, cache, fed.T)[1].transpose(1, 0, 2)  # [B, T, V]

  cached = one_at_a_time(step, cache, fed)
  chex.assert_equal_shape([cached, full])
  np.testing.assert_allclose(np.asarray(cached), np.asarray(full), atol=1e-5, rtol=1e-5)
