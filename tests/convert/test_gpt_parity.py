"""GPT-2, Llama and Mixtral weights in and out: parity with Hugging Face transformers.

Legend: B batch, T length, V vocabulary (301, padded to 384 in bigjax), P prompt length.

Each torch model (GPT2LMHeadModel, LlamaForCausalLM with fewer key/value heads than query
heads, MixtralForCausalLM) is built once per module, randomly initialised and perturbed so
no weight keeps a special value (norm scales of one, zero biases), and saved with
`save_pretrained`. `bigjax.from_pretrained` of the folder must give the same logits on a
right-padded batch (the real positions, the first V columns), the same 20 greedy tokens
as `generate` for prompts of different lengths (Mixtral: also from transformers 5's fused
expert layout), and `bigjax.save_pretrained` of the result
must load back into transformers with no missing or unexpected weights and the same logits.
The Llama test also shows that the rotary layout needs no permutation, and would catch one.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import bigjax
from bigjax import decode
from bigjax.convert import hf_gpt
from bigjax.layers import stack_layers

torch = pytest.importorskip('torch', reason='parity tests need torch (the parity extra)')
transformers = pytest.importorskip('transformers', reason='parity tests need transformers')

pytestmark = pytest.mark.parity
TOL = 1e-4  # max abs difference of logits in float32
VOCAB, PADDED = 301, 384
LENGTHS = (7, 12)  # the first row is right-padded after 7 tokens
T = 12
NEW_TOKENS = 20
PROMPTS = ([5, 17, 250, 3, 99], [42, 7, 300, 1, 0, 88, 140, 9])  # different lengths

_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
_LLAMA = dict(
  **_COMMON,
  num_key_value_heads=2,  # grouped-query attention
  intermediate_size=64,
  max_position_embeddings=64,
  rope_theta=500.0,  # not the default: the base must be read
  rms_norm_eps=1e-5,
  tie_word_embeddings=False,
)
CONFIGS = {
  'gpt2': lambda: transformers.GPT2LMHeadModel(
    transformers.GPT2Config(
      vocab_size=VOCAB,
      n_embd=32,
      n_layer=2,
      n_head=4,
      n_positions=64,
      n_inner=64,
      bos_token_id=VOCAB - 1,  # GPT-2's 50256 lies outside this vocabulary
      eos_token_id=VOCAB - 1,
    )
  ),
  'llama': lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**_LLAMA)),
  'mixtral': lambda: transformers.MixtralForCausalLM(
    transformers.MixtralConfig(**_LLAMA, num_local_experts=4, num_experts_per_tok=2)
  ),
}


def _batch():
  """(input_ids, attention_mask) [B, T] int64: random ids, row 0 right-padded with 0s."""
  ids = np.random.RandomState(0).randint(0, VOCAB, (2, T))
  mask = (np.arange(T)[None, :] < np.array(LENGTHS)[:, None]).astype(np.int64)  # [B, T]
  return np.where(mask, ids, 0).astype(np.int64), mask


def _torch_logits(model, ids, mask) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
  return out.logits.numpy()  # [B, T, V]


def _bigjax_logits(model, variables, ids, mask) -> np.ndarray:
  out = model.apply(variables, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
  return np.asarray(out.logits)  # [B, T, V']


def _max_diff(a, b, mask) -> float:
  """Max abs difference at the real positions, over the first V columns."""
  real = mask.astype(bool)
  return float(np.abs(a[..., :VOCAB][real] - b[..., :VOCAB][real]).max())


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def hf(request, tmp_path_factory):
  """(family, folder, torch model, torch logits) of a saved random model."""
  torch.manual_seed(0)
  model = CONFIGS[request.param]().eval()
  with torch.no_grad():
    for p in model.parameters():  # no weight keeps its special initial value
      p.add_(0.1 * torch.randn_like(p))
  config = model.generation_config  # greedy to the end: no stop token, no early exit
  config.eos_token_id = config.bos_token_id = None
  config.pad_token_id = 0
  folder = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(folder)
  ids, mask = _batch()
  return request.param, folder, model, _torch_logits(model, ids, mask)


@pytest.fixture(scope='module')
def loaded(hf):
  _, folder, _, _ = hf
  return bigjax.from_pretrained(str(folder))


def test_logits_match(hf, loaded):
  family, folder, _, torch_logits = hf
  model, variables = loaded
  assert type(model).__name__ == 'Gpt' and hf_gpt.family(model) == family
  assert model.padded_vocab == PADDED
  embed = np.asarray(variables['params']['embed']['embedding'])
  assert embed.shape == (PADDED, 32) and not embed[VOCAB:].any()  # zero padding rows
  ids, mask = _batch()
  logits = _bigjax_logits(model, variables, ids, mask)
  assert logits.shape == (2, T, PADDED) and logits.dtype == np.float32
  assert _max_diff(logits, torch_logits, mask) < TOL
  assert (logits[..., VOCAB:] <= -1e8).all()  # padded columns: never predicted
  if family == 'llama':  # rotate-half needs no permutation; Meta's interleaved order fails
    meta = _interleaved(variables, model.num_heads, model.num_kv_heads)
    assert _max_diff(_bigjax_logits(model, meta, ids, mask), torch_logits, mask) > 1e-2
  if family == 'mixtral':
    _check_fused_experts(folder, variables)


def _interleaved(variables, heads: int, kv_heads: int):
  """The q/k kernels with each head's channels reordered the way HF's Llama conversion
  script undoes (Meta's layout pairs channels 2i, 2i+1; HF's pairs i, i + K/2)."""
  params = jax_tree_copy(variables['params'])
  for i in range(2):
    for part in ('query', 'key'):
      w = np.asarray(params[f'block_{i}']['attn'][part]['kernel'])  # [D, H|G, K]
      k = w.shape[-1]
      order = np.stack([np.arange(k // 2), np.arange(k // 2) + k // 2], -1).reshape(-1)
      params[f'block_{i}']['attn'][part]['kernel'] = jnp.asarray(w[..., order])
  return {'params': params}


def jax_tree_copy(tree):
  return {k: jax_tree_copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def test_greedy_tokens_match_generate(hf, loaded):
  _, _, torch_model, _ = hf
  model, variables = loaded
  prompts = [np.array(p, np.int32) for p in PROMPTS]
  ours = np.asarray(
    decode.generate_lm(
      model,
      variables,
      prompts,
      max_new_tokens=NEW_TOKENS,
      method='greedy',
      eos_id=None,
      pad_id=None,
    )
  )
  assert ours.shape == (len(PROMPTS), NEW_TOKENS)
  for row, prompt in enumerate(PROMPTS):  # transformers one prompt at a time
    ids = torch.tensor([prompt])
    with torch.no_grad():
      out = torch_model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        do_sample=False,
      )
    np.testing.assert_array_equal(ours[row], out[0, len(prompt) :].numpy())


def test_save_pretrained_loads_in_transformers(hf, loaded, tmp_path):
  family, folder, torch_model, torch_logits = hf
  model, variables = loaded
  out = tmp_path / 'out'
  shard = 30_000 if family == 'llama' else None  # Llama: sharded, with an index
  bigjax.save_pretrained(model, variables, str(out), max_shard_size=shard)
  config = json.loads((out / 'config.json').read_text())
  assert config['model_type'] == family
  assert config['architectures'] == [type(torch_model).__name__]
  if shard:
    assert (out / 'model.safetensors.index.json').exists()
  else:
    # the same tensor names and shapes as transformers wrote (only V rows, not V')
    ours, theirs = load_file(out / 'model.safetensors'), load_file(folder / 'model.safetensors')
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
  back, info = type(torch_model).from_pretrained(out, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  assert not info['mismatched_keys'], info
  ids, mask = _batch()
  np.testing.assert_allclose(_torch_logits(back.eval(), ids, mask), torch_logits, atol=1e-6)
  # Scanned layers (one stacked 'layers' tree) export the same tensors.
  scanned = {'params': stack_layers(variables['params'], model.num_layers)}
  bigjax.save_pretrained(model.clone(scan_layers=True), scanned, str(tmp_path / 'scan'))
  flat = load_file(tmp_path / 'scan' / 'model.safetensors')
  written = bigjax.convert.read_tensors(str(out))
  assert sorted(flat) == sorted(written)
  for name, value in flat.items():
    np.testing.assert_array_equal(value, written[name])
  again, again_vars = bigjax.from_pretrained(str(out))  # and back into bigjax, unchanged
  assert again == model
  np.testing.assert_array_equal(
    np.asarray(again_vars['params']['embed']['embedding']),
    np.asarray(variables['params']['embed']['embedding']),
  )


def _check_fused_experts(folder, variables) -> None:
  """transformers 5's in-memory expert layout (gate_up_proj [E, 2F, D], down_proj [E, D, F])
  reads the same as the one tensor per expert that save_pretrained writes."""
  tensors = load_file(folder / 'model.safetensors')
  config = json.loads((folder / 'config.json').read_text())
  for i in range(2):
    moe = f'model.layers.{i}.block_sparse_moe.experts'
    pop = lambda w: np.stack([tensors.pop(f'{moe}.{j}.{w}.weight') for j in range(4)])  # noqa: E731
    w1, w3, w2 = pop('w1'), pop('w3'), pop('w2')  # [E, F, D], [E, F, D], [E, D, F]
    tensors[f'{moe}.gate_up_proj'] = np.concatenate([w1, w3], axis=1)  # [E, 2F, D]
    tensors[f'{moe}.down_proj'] = w2
  _, fused = hf_gpt.convert(config, tensors)
  for name in ('gate', 'fc1', 'fc2', 'router'):
    np.testing.assert_array_equal(
      fused['params']['block_1']['mlp'][name]['kernel'],
      variables['params']['block_1']['mlp'][name]['kernel'],
    )


@pytest.mark.parametrize(
  'change, match',
  [
    ({'rope_scaling': {'rope_type': 'linear', 'factor': 2.0}}, 'rope_scaling'),
    ({'rope_parameters': {'rope_type': 'yarn', 'rope_theta': 1e4}}, 'rope_parameters'),
    ({'attention_bias': True}, 'use_bias'),
  ],
)
def test_unsupported_configs_are_refused(change, match):
  config = {'model_type': 'llama', **_LLAMA, 'intermediate_size': 64, **change}
  with pytest.raises(ValueError, match=match):
    hf_gpt.model_options(config)
