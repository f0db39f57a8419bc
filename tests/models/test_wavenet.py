"""WaveNet: causal (a gradient test), its receptive field measured by gradients equals the
formula, fast generation (per-layer queues, one scan) equals naive generation by full
recomputation token for token for 200 samples, with global and local conditioning."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigjax
from bigjax import decode
from bigjax.models.wavenet import VARIANTS, WaveNet

TEST = VARIANTS['test']


def random_variables(model, *inputs, scale: float = 1.0, seed: int = 0, **conditioning):
  """Variables of `model` drawn with numpy: embeddings N(0, 1), kernels N(0, scale^2 /
  fan_in), biases N(0, 0.1^2). Compiling `model.init` (its truncated-normal initialisers)
  costs seconds on a CPU, more than the rest of a test."""
  init = functools.partial(model.init, **conditioning)
  abstract = jax.eval_shape(init, jax.random.key(0), *inputs)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    std = (
      0.1
      if name == 'bias'
      else 1.0
      if name == 'embedding'
      else scale / np.sqrt(np.prod(leaf.shape[:-1]))
    )
    return jnp.asarray(rng.normal(0.0, std, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def test_receptive_field_formula():
  # Paper pattern: 1 .. 512 three times; 2 input taps: 2 + 3 * 1023.
  assert bigjax.create_model('wavenet_base').receptive_field == 3071
  assert WaveNet(**TEST).receptive_field == 2 + 2 * (1 + 2 + 4)
  model = WaveNet(**dict(TEST, kernel_size=3, input_kernel_size=4, dilation_cycles=1))
  assert model.dilations == (1, 2, 4)
  assert model.receptive_field == 4 + 2 * (1 + 2 + 4)
  assert '16 samples' in WaveNet(**TEST).summary()


@pytest.mark.parametrize(
  'options', [{}, {'kernel_size': 3, 'input_kernel_size': 4, 'dilation_cycles': 1}]
)
def test_causal_and_the_receptive_field_by_gradients(options):
  """d logits[t] / d inputs[s] is zero for every s > t (causal) and for s <= t - RF, and
  non-zero at s = t - RF + 1 (the earliest sample it reads) and at s = t."""
  model = WaveNet(**dict(TEST, **options))
  rf = model.receptive_field
  length, t = 2 * rf + 8, rf + 5
  codes = jax.random.randint(jax.random.key(0), (1, length), 0, 256)
  onehot = jax.nn.one_hot(codes, 256)  # [1, T, V]: a differentiable input
  probe = jax.random.normal(jax.random.key(2), (256,))

  variables = random_variables(model, onehot)

  @jax.jit
  def input_gradients(x):
    return jax.grad(lambda x: model.apply(variables, x)[0, t] @ probe)(x)[0]  # [T, V]

  grads = input_gradients(onehot)
  reached = np.flatnonzero(np.abs(np.asarray(grads)).sum(-1) > 0)
  assert reached.max() == t, 'the output depends on inputs after it (not causal)'
  assert reached.min() == t - rf + 1, f'receptive field {t - reached.min() + 1}, formula {rf}'


def _naive(model, variables, prompt, n, **conditioning):
  """Greedy generation by recomputing the whole causal model at every step: [B, n]."""
  batch, p = prompt.shape

  @jax.jit
  def run(variables, prompt, conditioning):
    codes = jnp.zeros((batch, p + n), jnp.int32).at[:, :p].set(prompt)

    def step(i, codes):
      logits = bigjax.outputs.logits_of(model.apply(variables, codes, **conditioning))
      return codes.at[:, p + i].set(jnp.argmax(logits[:, p - 1 + i], -1))

    return jax.lax.fori_loop(0, n, step, codes)[:, p:]

  return np.asarray(run(variables, prompt, conditioning))


@pytest.mark.parametrize('output', ['categorical', 'logistic_mixture'])
def test_fast_generation_equals_naive_generation(output):
  """200 samples, greedy, with a word label and a log-mel of a conditioning audio, after a
  3-sample prompt (the prefill feeds several samples through the queues at once)."""
  n, prompt_len = 200, 3
  model = WaveNet(
    **TEST, num_labels=3, mel_bands=8, mel_hop=4, mel_fft=16, output=output, num_mixtures=3
  )
  prompt = jax.random.randint(jax.random.key(0), (2, prompt_len), 0, 256)
  conditioning = {
    'label': jnp.array([0, 2]),
    'audio': 0.3 * jnp.sin(jnp.arange(prompt_len + n) / 3.0)[None].repeat(2, 0),
  }
  variables = random_variables(model, prompt, scale=2.0, seed=1, **conditioning)
  if (
    output == 'logistic_mixture'
  ):  # narrow logistics (scale e^-4): a wide one puts most mass on the two end bins
    bias = variables['params']['head_out']['bias']  # [3K]: logits, means, log-scales
    variables['params']['head_out']['bias'] = bias.at[6:].set(-4.0)
  fast = decode.generate_lm(
    model, variables, prompt, max_new_tokens=n, pad_id=None, conditioning=conditioning
  )
  naive = _naive(model, variables, prompt, n, **conditioning)
  assert fast.shape == (2, n)
  np.testing.assert_array_equal(np.asarray(fast), naive)
  assert len(np.unique(naive)) > 8, 'a degenerate model: the test would prove little'


def test_conditioning_is_required_and_changes_the_output():
  model = WaveNet(**TEST, num_labels=4, mel_bands=8, mel_hop=4, mel_fft=16)
  codes = jax.random.randint(jax.random.key(0), (2, 24), 0, 256)
  audio = jax.random.uniform(jax.random.key(1), (2, 25), minval=-0.5, maxval=0.5)
  label = jnp.array([1, 3])
  variables = random_variables(model, codes, label, audio)
  apply = jax.jit(model.apply)
  out = apply(variables, codes, label, audio)
  assert not np.allclose(out, apply(variables, codes, label[::-1], audio))
  assert not np.allclose(out, apply(variables, codes, label, audio[::-1]))
  with pytest.raises(ValueError, match='conditioned on a label'):
    jax.eval_shape(model.apply, variables, codes, None, audio)
  with pytest.raises(ValueError, match='locally conditioned'):
    jax.eval_shape(model.apply, variables, codes, label)
  # Repetition: one upsampling tap; samples nearest the same frame get the same vector.
  repeat = model.clone(local_upsample='repeat')
  params = jax.eval_shape(repeat.init, jax.random.key(2), codes, label, audio)['params']
  assert params['upsample']['kernel'].shape == (1, 8, TEST['hidden_size'])
  assert variables['params']['upsample']['kernel'].shape == (4, 8, TEST['hidden_size'])
