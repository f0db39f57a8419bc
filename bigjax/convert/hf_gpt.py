"""Hugging Face GPT-2, Llama and Mixtral (`model_type` 'gpt2', 'llama', 'mixtral') <->
`bigjax.models.gpt.Gpt`: three configurations of one decoder-only model.

Legend: D width, H query heads, G key/value heads, K head dim, F MLP width, E experts,
V vocabulary (Vp padded to the model's `vocab_multiple`), L layers.

Source names are those `save_pretrained` writes (transformers 4.x and 5.x alike):
  gpt2     [transformer.]{wte, wpe}.weight, h.{i}.{ln_1, ln_2}.*, h.{i}.attn.{c_attn, c_proj}.*,
           h.{i}.mlp.{c_fc, c_proj}.*, ln_f.*   (GPT2LMHeadModel: under `transformer.`, its
           lm_head tied to wte and not saved; GPT2Model: bare). GPT-2's Conv1D weights are
           already [in, out], and `c_attn` holds q, k and v side by side: [D, 3D] -> three
           [D, H, K] kernels. Old checkpoints' `attn.bias` / `attn.masked_bias` buffers (the
           causal mask) and a saved tied `lm_head.weight` are skipped.
  llama    model.embed_tokens, model.layers.{i}.{input_layernorm -> attn_norm,
           post_attention_layernorm -> mlp_norm}, .self_attn.{q, k, v, o}_proj,
           .mlp.{gate_proj -> gate, up_proj -> fc1, down_proj -> fc2}, model.norm ->
           final_norm, lm_head (absent with tie_word_embeddings).
  mixtral  as llama, with .block_sparse_moe.gate [E, D] -> mlp/router and the experts either
           one tensor each, .experts.{j}.{w1 -> gate, w3 -> fc1, w2 -> fc2} (what
           transformers 5.24 still writes), or fused, .experts.gate_up_proj [E, 2F, D]
           (gate, then up) and .experts.down_proj [E, D, F] (its in-memory layout).

Rotary convention: Meta's original Llama weights pair neighbouring channels (2i, 2i+1) of
each head; Hugging Face's conversion script permuted the q and k rows of every checkpoint
it wrote so that channel i pairs with channel i + K/2 ("rotate half", GPT-NeoX), and
`transformers` computes rotary positions that way. `bigjax.layers.positional.rotary` uses
the same rotate-half layout, so Hugging Face q/k weights load as they are, with no
permutation (tests/convert/test_gpt_parity.py checks the logits). Meta-format weights
(consolidated.*.pth) are not read: convert them with transformers first.

Vocabulary: the model's embedding (and untied output layer) has `padded_vocab` rows;
import appends zero rows to the checkpoint's `vocab_size`, export writes only
`vocab_size` rows (the model never predicts the padded ids: their logits are -1e9).

Inputs: where transformers takes `attention_mask` (1 = real token, 0 = padding), give the
bigjax model `segment_ids` = the attention mask; the logits have `padded_vocab` columns, of
which the first `vocab_size` are transformers' logits. Tokenizers: `bigjax.data.tokenizers.
load_tokenizer(folder)` reads the folder's tokenizer (an HFTokenizer).

Refused with a one-line error: rope scaling (`rope_scaling` / `rope_parameters` of a type
other than 'default', or a partial rotary factor), a Mixtral sliding window shorter than
the context, GPT-2 cross-attention and `scale_attn_by_inverse_layer_idx`, Llama with
`attention_bias` != `mlp_bias` (bigjax has one `use_bias`), a Llama / Mixtral checkpoint
without an output layer (a bare LlamaModel with untied embeddings).
Mixtral's config has no router z-loss: imported models get `router_z_weight=0`,
`router_aux_weight` = its `router_aux_loss_coef`, and dropless routing (exact).
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.convert import mapping
from bigjax.layers.stack import SCAN_NAME, unstack_layers
from bigjax.models.gpt import Gpt
from bigjax.typing import PyTree

# HF activation names -> bigjax's, and back.
_ACTIVATIONS = {
  'gelu': 'gelu',
  'gelu_new': 'gelu_tanh',
  'gelu_pytorch_tanh': 'gelu_tanh',
  'gelu_fast': 'gelu_tanh',
  'relu': 'relu',
  'silu': 'silu',
  'swish': 'silu',
  'tanh': 'tanh',
}
_GPT2_ACTIVATIONS = {'gelu_tanh': 'gelu_new', 'gelu': 'gelu', 'relu': 'relu', 'silu': 'silu'}
_ARCHITECTURES = {
  'gpt2': 'GPT2LMHeadModel',
  'llama': 'LlamaForCausalLM',
  'mixtral': 'MixtralForCausalLM',
}


def family(model: Gpt) -> str:
  """Which Hugging Face model type `model` is ('gpt2', 'llama', 'mixtral'), or ValueError."""
  gpt2 = dict(position='learned', norm='layernorm', gated_mlp=False, use_bias=True)
  llama = dict(position='rotary', norm='rmsnorm', gated_mlp=True)
  if all(getattr(model, k) == v for k, v in gpt2.items()) and model.tie_embeddings:
    if model.num_experts:
      raise ValueError('GPT-2 has no mixture of experts: a GPT-2-style Gpt needs num_experts=0')
    return 'gpt2'
  if all(getattr(model, k) == v for k, v in llama.items()):
    return 'mixtral' if model.num_experts else 'llama'
  raise ValueError(
    'this Gpt has no Hugging Face counterpart: export GPT-2 (learned positions, layernorm, '
    'plain MLP, biases, tied embeddings) or Llama / Mixtral (rotary, rmsnorm, gated MLP)'
  )


def _head_dim(model: Gpt) -> int:
  return model.head_dim or model.hidden_size // model.num_heads


def table(model: Gpt, fused_experts: bool = False) -> mapping.Table:
  """The mapping of `model` (unrolled layers) to the Hugging Face names of its family.

  `fused_experts`: Mixtral experts as transformers 5 holds them in memory
  (`experts.gate_up_proj`, `experts.down_proj`) rather than one tensor per expert.
  """
  kind = family(model)
  t = mapping.Table()
  rows = mapping.pad_rows(model.vocab_size, model.padded_vocab)
  heads, kv_heads = model.num_heads, model.num_kv_heads or model.num_heads
  if kind == 'gpt2':
    t.add('params/embed/embedding', 'wte.weight', rows)
    t.add('params/pos_embed/embedding', 'wpe.weight')
    for i in range(model.num_layers):
      src, dst = f'h.{i}', f'params/block_{i}'
      t.norm(f'{dst}/attn_norm', f'{src}.ln_1')
      q, k, v = t.split(f'{src}.attn.c_attn.weight', ['q', 'k', 'v'], axis=1)  # [D, 3D]
      qb, kb, vb = t.split(f'{src}.attn.c_attn.bias', ['q', 'k', 'v'], axis=0)  # [3D]
      qkv = mapping.conv1d_heads_in(heads)
      for part, w, b in (('query', q, qb), ('key', k, kb), ('value', v, vb)):
        t.add(f'{dst}/attn/{part}/kernel', w, qkv)
        t.add(f'{dst}/attn/{part}/bias', b, qkv)
      t.dense(f'{dst}/attn/out', f'{src}.attn.c_proj', mapping.conv1d_heads_out(heads))
      t.norm(f'{dst}/mlp_norm', f'{src}.ln_2')
      t.dense(f'{dst}/mlp/fc1', f'{src}.mlp.c_fc', mapping.IDENTITY)  # Conv1D: [in, out]
      t.dense(f'{dst}/mlp/fc2', f'{src}.mlp.c_proj', mapping.IDENTITY)
    t.norm('params/final_norm', 'ln_f')
    t.skip.append(r'h\.\d+\.attn\.(masked_)?bias')  # old checkpoints' causal-mask buffers
    t.skip.append(r'lm_head\.weight')  # tied to wte; `convert` checks it holds the same
    return t

  t.add('params/embed/embedding', 'embed_tokens.weight', rows)
  bias = model.use_bias
  for i in range(model.num_layers):
    src, dst = f'layers.{i}', f'params/block_{i}'
    t.add(f'{dst}/attn_norm/scale', f'{src}.input_layernorm.weight')
    t.add(f'{dst}/mlp_norm/scale', f'{src}.post_attention_layernorm.weight')
    for part, proj, n in (('query', 'q', heads), ('key', 'k', kv_heads), ('value', 'v', kv_heads)):
      t.add(f'{dst}/attn/{part}/kernel', f'{src}.self_attn.{proj}_proj.weight', mapping.heads_in(n))
      if bias:
        t.add(f'{dst}/attn/{part}/bias', f'{src}.self_attn.{proj}_proj.bias', mapping.heads_in(n))
    t.add(f'{dst}/attn/out/kernel', f'{src}.self_attn.o_proj.weight', mapping.heads_out(heads))
    if bias:
      t.add(f'{dst}/attn/out/bias', f'{src}.self_attn.o_proj.bias')
    if kind == 'llama':
      for part, proj in (('gate', 'gate_proj'), ('fc1', 'up_proj'), ('fc2', 'down_proj')):
        t.add(f'{dst}/mlp/{part}/kernel', f'{src}.mlp.{proj}.weight', mapping.LINEAR)
        if bias:
          t.add(f'{dst}/mlp/{part}/bias', f'{src}.mlp.{proj}.bias')
      continue
    moe = f'{src}.block_sparse_moe'
    t.add(f'{dst}/mlp/router/kernel', f'{moe}.gate.weight', mapping.LINEAR)  # [E, D]
    if fused_experts:
      gate, up = t.split(f'{moe}.experts.gate_up_proj', ['gate', 'up'], axis=1)  # [E, 2F, D]
      down = f'{moe}.experts.down_proj'  # [E, D, F]
    else:
      experts = range(model.num_experts)
      gate, up, down = (
        t.stack(f'{moe}.experts.{w}', [f'{moe}.experts.{j}.{w}.weight' for j in experts])
        for w in ('w1', 'w3', 'w2')
      )
    t.add(f'{dst}/mlp/gate/kernel', gate, mapping.EXPERTS)  # [E, F, D] -> [E, D, F]
    t.add(f'{dst}/mlp/fc1/kernel', up, mapping.EXPERTS)
    t.add(f'{dst}/mlp/fc2/kernel', down, mapping.EXPERTS)  # [E, D, F] -> [E, F, D]
  t.add('params/final_norm/scale', 'norm.weight')
  if not model.tie_embeddings:
    t.add('params/lm_head/kernel', 'lm_head.weight', mapping.chain(rows, mapping.LINEAR))
  t.skip.append(r'layers\.\d+\.self_attn\.rotary_emb\.inv_freq')  # old buffers
  if model.tie_embeddings:
    t.skip.append(r'lm_head\.weight')  # tied; `convert` checks it holds the same
  return t


def _rope_theta(config: dict) -> float:
  """The rotary base of a Llama / Mixtral config; rope scaling is refused."""
  params = config.get('rope_parameters') or {}
  scaling = config.get('rope_scaling')
  kind = (scaling or {}).get('rope_type', (scaling or {}).get('type', 'default'))
  if scaling is not None and kind != 'default':
    raise ValueError(f'rope_scaling {scaling!r} is not supported: bigjax has plain rotary only')
  if params.get('rope_type', 'default') != 'default':
    raise ValueError(f'rope_parameters {params!r} are not supported: bigjax has plain rotary only')
  if float(params.get('partial_rotary_factor', config.get('partial_rotary_factor', 1.0))) != 1.0:
    raise ValueError('a partial_rotary_factor is not supported: bigjax rotates the whole head')
  return float(params.get('rope_theta', config.get('rope_theta', 1e4)))


def model_options(config: dict) -> dict:
  """HF GPT2Config / LlamaConfig / MixtralConfig fields -> `Gpt(**options)`."""
  kind = config.get('model_type')
  if kind == 'gpt2':
    act = config.get('activation_function', 'gelu_new')
    if act not in _ACTIVATIONS:
      raise ValueError(f'GPT-2 activation_function {act!r} is not supported: use gelu_new')
    if config.get('add_cross_attention'):
      raise ValueError('GPT-2 with cross-attention (add_cross_attention) is not supported')
    if config.get('scale_attn_by_inverse_layer_idx'):
      raise ValueError('GPT-2 scale_attn_by_inverse_layer_idx is not supported')
    if not config.get('scale_attn_weights', True):
      raise ValueError('GPT-2 without scale_attn_weights is not supported')
    hidden = int(config.get('n_embd', 768))
    return dict(
      vocab_size=int(config.get('vocab_size', 50257)),
      hidden_size=hidden,
      num_layers=int(config.get('n_layer', 12)),
      num_heads=int(config.get('n_head', 12)),
      mlp_dim=int(config.get('n_inner') or 4 * hidden),
      max_len=int(config.get('n_positions', 1024)),
      position='learned',
      norm='layernorm',
      layer_norm_eps=float(config.get('layer_norm_epsilon', 1e-5)),
      activation=_ACTIVATIONS[act],
      gated_mlp=False,
      use_bias=True,
      tie_embeddings=True,
      dropout_rate=float(config.get('resid_pdrop', 0.1)),
    )
  act = config.get('hidden_act', 'silu')
  if act not in _ACTIVATIONS:
    raise ValueError(
      f'{kind} hidden_act {act!r} is not supported; use one of {sorted(_ACTIVATIONS)}'
    )
  hidden, heads = int(config['hidden_size']), int(config['num_attention_heads'])
  max_len = int(config.get('max_position_embeddings', 2048))
  attention_bias = bool(config.get('attention_bias', False))
  mlp_bias = bool(config.get('mlp_bias', False))
  if attention_bias != mlp_bias:
    raise ValueError(
      f'{kind} with attention_bias={attention_bias} and mlp_bias={mlp_bias} is not supported: '
      'bigjax has one use_bias for both'
    )
  window = config.get('sliding_window')
  if window is not None and int(window) < max_len:
    raise ValueError(
      f'{kind} sliding_window {window} < max_position_embeddings {max_len} is not supported'
    )
  options = dict(
    vocab_size=int(config['vocab_size']),
    hidden_size=hidden,
    num_layers=int(config['num_hidden_layers']),
    num_heads=heads,
    num_kv_heads=int(config.get('num_key_value_heads') or heads),
    head_dim=int(config.get('head_dim') or hidden // heads),
    mlp_dim=int(config['intermediate_size']),
    max_len=max_len,
    position='rotary',
    rope_theta=_rope_theta(config),
    norm='rmsnorm',
    layer_norm_eps=float(config.get('rms_norm_eps', 1e-6)),
    activation=_ACTIVATIONS[act],
    gated_mlp=True,
    use_bias=attention_bias,
    tie_embeddings=bool(config.get('tie_word_embeddings', False)),
    dropout_rate=0.0,  # Llama and Mixtral have no residual dropout
  )
  if kind == 'mixtral':
    options.update(
      num_experts=int(config.get('num_local_experts', 8)),
      experts_per_token=int(config.get('num_experts_per_tok', 2)),
      capacity_factor=0.0,
      router_aux_weight=float(config.get('router_aux_loss_coef', 0.001)),
      router_z_weight=0.0,
    )
  return options


def _check_tied(source: dict[str, np.ndarray], embed: str, what: str) -> None:
  """A saved `lm_head.weight` of a tied model must equal the embedding it is tied to."""
  head = source.get('lm_head.weight')
  if head is not None and embed in source and not np.array_equal(head, source[embed]):
    fix = (
      'GPT-2 always ties them'
      if embed == 'wte.weight'
      else 'set tie_word_embeddings to false in config.json'
    )
    raise ValueError(
      f'the {what} has an lm_head.weight that differs from {embed} although the model ties '
      f'them: {fix}'
    )


def convert(config: dict, tensors: dict[str, np.ndarray]) -> tuple[nn.Module, PyTree]:
  """Builds the `Gpt` described by `config` and fills it from `tensors`."""
  kind = config.get('model_type')
  what = f'{(config.get("architectures") or [_ARCHITECTURES[kind]])[0]} checkpoint'
  prefix = 'transformer.' if kind == 'gpt2' else 'model.'
  # The headed models keep the body under a prefix, the bare ones (GPT2Model) do not.
  source = {n.removeprefix(prefix): v for n, v in tensors.items()}
  options = model_options(config)
  model = Gpt(**options)
  embed = 'wte.weight' if kind == 'gpt2' else 'embed_tokens.weight'
  if model.tie_embeddings:
    _check_tied(source, embed, what)
  elif 'lm_head.weight' not in source:
    raise ValueError(
      f'the {what} has no lm_head.weight and does not tie it to the embeddings: bigjax loads '
      f'{kind} models with their output layer ({_ARCHITECTURES[kind]})'
    )
  fused = any(
    re.fullmatch(r'layers\.\d+\.block_sparse_moe\.experts\.gate_up_proj', n) for n in source
  )
  abstract = mapping.abstract_variables(model, jax.ShapeDtypeStruct((1, 1), jnp.int32))
  return model, table(model, fused).import_variables(source, abstract, what)


def export(model: Gpt, variables: PyTree) -> tuple[dict, dict[str, np.ndarray]]:
  """A bigjax `Gpt` -> Hugging Face `config.json` (as a dict) and safetensors tensors
  (GPT2LMHeadModel, LlamaForCausalLM or MixtralForCausalLM; Mixtral experts one tensor
  each, as transformers writes them)."""
  kind = family(model)
  heads, head_dim = model.num_heads, _head_dim(model)
  kv_heads = model.num_kv_heads or heads
  params = variables['params']
  if SCAN_NAME in params:  # scanned blocks are stored stacked; HF has one per layer
    variables = {**variables, 'params': unstack_layers(params)}
  config = {
    'model_type': kind,
    'architectures': [_ARCHITECTURES[kind]],
    'vocab_size': model.vocab_size,
  }
  if kind == 'gpt2':
    if kv_heads != heads or head_dim * heads != model.hidden_size:
      raise ValueError('GPT-2 has num_kv_heads == num_heads and head_dim = hidden_size / num_heads')
    if model.activation not in _GPT2_ACTIVATIONS:
      raise ValueError(f'GPT-2 activation {model.activation!r} has no Hugging Face name')
    eos = 50256 if model.vocab_size > 50256 else None  # GPT-2's <|endoftext|>
    config.update(
      n_embd=model.hidden_size,
      n_layer=model.num_layers,
      n_head=heads,
      n_inner=model.mlp_dim,
      n_positions=model.max_len,
      layer_norm_epsilon=model.layer_norm_eps,
      activation_function=_GPT2_ACTIVATIONS[model.activation],
      resid_pdrop=model.dropout_rate,
      embd_pdrop=model.dropout_rate,
      attn_pdrop=0.0,  # bigjax has no dropout on attention maps
      bos_token_id=eos,
      eos_token_id=eos,
      tie_word_embeddings=True,
    )
  else:
    config['hidden_act'] = {'gelu_tanh': 'gelu_pytorch_tanh'}.get(
      model.activation, model.activation
    )
    config.update(
      hidden_size=model.hidden_size,
      num_hidden_layers=model.num_layers,
      num_attention_heads=heads,
      num_key_value_heads=kv_heads,
      head_dim=head_dim,
      intermediate_size=model.mlp_dim,
      max_position_embeddings=model.max_len,
      rms_norm_eps=model.layer_norm_eps,
      rope_theta=model.rope_theta,  # transformers 4 reads this, 5 rope_parameters
      rope_parameters={'rope_type': 'default', 'rope_theta': model.rope_theta},
      rope_scaling=None,
      attention_bias=model.use_bias,
      attention_dropout=0.0,  # bigjax drops out residuals, not attention maps
      tie_word_embeddings=model.tie_embeddings,
      bos_token_id=None,
      eos_token_id=None,
      pad_token_id=None,
    )
    if kind == 'llama':
      config['mlp_bias'] = model.use_bias
    else:
      if model.use_bias:
        raise ValueError('Mixtral has no biases: export a Gpt with use_bias=False')
      config.update(
        num_local_experts=model.num_experts,
        num_experts_per_tok=model.experts_per_token,
        router_aux_loss_coef=model.router_aux_weight,
        sliding_window=None,
      )
  plain = model.clone(scan_layers=False)  # the layout of the (unstacked) variables
  abstract = mapping.abstract_variables(plain, jax.ShapeDtypeStruct((1, 1), jnp.int32))
  tensors = table(plain).export_tensors(variables, abstract)
  prefix = 'transformer.' if kind == 'gpt2' else 'model.'
  return config, {(k if k == 'lm_head.weight' else prefix + k): v for k, v in tensors.items()}
