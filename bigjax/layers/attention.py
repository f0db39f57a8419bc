"""Multi-head attention over `jax.nn.dot_product_attention`: grouped-query heads, rotary
positions, a KV cache, and the XLA or cuDNN backend.

Legend: B batch, T query length, S key length, D model width, H query heads, G key/value
heads (H = G * queries per group), K head dim.

Masks are boolean and broadcast to [B, H, T, S]; True means "may attend". A module takes
the mask in parts so a fused kernel sees what it can use: `key_valid` [B, S] (padding),
`causal` (a flag, not a matrix) and an optional explicit `mask`. When causality is the
only constraint it reaches the kernel as `is_causal=True` and no [T, S] mask is built.
On the cuDNN path key padding reaches the kernel as per-row key lengths (`key_lengths`), so
it assumes right padding (the keys after a row's first invalid one are padding too).

Cached decoding (`decode=True`, self-attention only): the keys, values and key validity
of every call are written into the `cache` collection at `cache_index` (create it with
`init` on a full-length input), and a query at absolute position p attends to the cached
keys at positions <= p that are valid. Rotary positions continue from `cache_index`.
Both paths therefore apply one rule: a key is seen iff it is not in the future and valid.

When the `intermediates` collection is mutable (`apply(..., mutable=['intermediates'])`),
the softmax is computed explicitly instead of by the fused kernel and the attention
weights are sown as 'attention_weights' [B, H, T, S]; the output is the same.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers.mlp import rows
from bigjax.layers.partitioning import constrain
from bigjax.layers.positional import rotary
from bigjax.typing import Dtype

# None / 'xla': XLA's attention; 'cudnn': the fused cuDNN kernel (GPU, bf16/fp16 only);
# 'auto': cuDNN where it applies (`resolve_implementation`), XLA elsewhere (CPU, float32).
IMPLEMENTATIONS = (None, 'xla', 'cudnn', 'auto')
# The head dims the cuDNN flash kernel takes on every GPU it runs on (256 from Hopper on).
CUDNN_MAX_HEAD_DIM = 128
POSITIONS = ('none', 'rotary')


def padding_mask(query_valid: jax.Array, key_valid: jax.Array) -> jax.Array:
  """[B, T] and [B, S] validity -> [B, 1, T, S] mask."""
  return query_valid[:, None, :, None] & key_valid[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
  """[1, 1, T, T] lower-triangular mask."""
  return jnp.tril(jnp.ones((length, length), bool))[None, None]


def resolve_implementation(
  implementation: str | None, q: jax.Array, k: jax.Array, mask: jax.Array | None
) -> str | None:
  """The `jax.nn.dot_product_attention` implementation for `implementation`: 'auto' is
  'cudnn' on a GPU for bf16/fp16 q and k of one dtype, a head dim that is a multiple of 8
  and at most CUDNN_MAX_HEAD_DIM, and no explicit mask (key padding and causality reach
  cuDNN as lengths and a flag); 'xla' otherwise."""
  if implementation != 'auto':
    return implementation
  head_dim = q.shape[-1]
  fits = (
    jax.default_backend() == 'gpu'
    and q.dtype in (jnp.bfloat16, jnp.float16)
    and k.dtype == q.dtype
    and head_dim % 8 == 0
    and head_dim <= CUDNN_MAX_HEAD_DIM
    and mask is None
  )
  return 'cudnn' if fits else 'xla'


def key_lengths(key_valid: jax.Array) -> jax.Array:
  """[B, S] key validity -> [B] int32 lengths (at least 1), for kernels that take key
  padding as lengths. Exact when the padding ends each row (right padding); a row's keys
  after its first invalid one count as padding, whatever key_valid says about them."""
  prefix = jnp.cumprod(key_valid.astype(jnp.int32), axis=1)  # [B, S]: 1 up to the first pad
  return jnp.maximum(prefix.sum(axis=1), 1).astype(jnp.int32)  # [B]


def _and(a: jax.Array | None, b: jax.Array | None) -> jax.Array | None:
  return b if a is None else a if b is None else a & b


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention (Vaswani et al., 2017), grouped-query when
  `num_kv_heads < num_heads` (Ainslie et al., 2023; 1 is multi-query, Shazeer, 2019).

  Params: query/kernel [D, H, K], key and value/kernel [D, G, K] (biases [H or G, K] with
  `use_bias`), out/kernel [H, K, D] (bias [D]).
  """

  num_heads: int
  num_kv_heads: int | None = None  # G; None: G = H (plain multi-head attention)
  head_dim: int | None = None  # defaults to D // H
  out_features: int | None = None  # defaults to D
  use_bias: bool = True
  position: str = 'none'  # 'none' | 'rotary' (applied to q and k of self-attention)
  rope_theta: float = 1e4
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.xavier_uniform()
  implementation: str | None = None  # IMPLEMENTATIONS: None / 'xla', 'cudnn' or 'auto'
  out_kernel_init: Callable[..., Any] | None = None  # `out`; None: kernel_init (GPT-2 scales it)

  @nn.compact
  def __call__(
    self,
    inputs_q: jax.Array,
    inputs_kv: jax.Array | None = None,
    *,
    mask: jax.Array | None = None,
    key_valid: jax.Array | None = None,
    causal: bool = False,
    positions: jax.Array | None = None,
  ) -> jax.Array:
    """[B, T, D] queries (and [B, S, D] keys/values, default self) -> [B, T, D].

    mask: broadcastable to [B, H, T, S]; key_valid: [B, S] (False keys are never seen);
    causal: query t sees keys <= t; positions: [T] or [B, T] absolute positions for rotary
    (default: 0, 1, ... after the cache index).
    """
    if self.implementation not in IMPLEMENTATIONS:
      raise ValueError(f'attention implementation must be one of {IMPLEMENTATIONS}')
    if self.position not in POSITIONS:
      raise ValueError(f'attention position must be one of {POSITIONS}, got {self.position!r}')
    kv_heads = self.num_kv_heads or self.num_heads
    if self.num_heads % kv_heads:
      raise ValueError(f'num_heads {self.num_heads} is not a multiple of num_kv_heads {kv_heads}')
    self_attention = inputs_kv is None
    inputs_kv = inputs_q if self_attention else inputs_kv
    width = inputs_q.shape[-1]
    head_dim = self.head_dim or width // self.num_heads
    dense = lambda heads, name: nn.DenseGeneral(  # noqa: E731
      (heads, head_dim),
      use_bias=self.use_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      name=name,
    )
    flat_q, unflat_q = rows(inputs_q)  # projections as plain matmuls (see `rows`)
    flat_kv, unflat_kv = rows(inputs_kv)
    heads = ('batch', 'length', 'act_heads', 'act_kv')  # logical axes (partitioning)
    q = constrain(unflat_q(dense(self.num_heads, 'query')(flat_q)), heads)  # [B, T, H, K]
    k = constrain(unflat_kv(dense(kv_heads, 'key')(flat_kv)), heads)  # [B, S, G, K]
    v = constrain(unflat_kv(dense(kv_heads, 'value')(flat_kv)), heads)  # [B, S, G, K]

    caching = self.decode and self_attention
    if caching:
      cache = self._cache(k, v)
    if self.position == 'rotary' and self_attention:
      if positions is None:
        offset = cache['index'].value if caching and cache['ready'] else 0
        positions = offset + jnp.arange(q.shape[1])  # [T]
      q = rotary(q, positions, self.rope_theta)
      k = rotary(k, positions, self.rope_theta)

    is_causal = False
    lengths = None
    explicit = self.is_mutable_collection('intermediates')
    implementation = resolve_implementation(self.implementation, q, k, mask)
    if caching and cache['ready']:
      k, v, mask = self._update_cache(cache, k, v, mask, key_valid)
      if implementation == 'cudnn' and self.implementation == 'auto':
        implementation = 'xla'  # a [B, 1, T, S] cache mask: not a cuDNN pattern
    else:
      if key_valid is not None:
        if implementation == 'cudnn' and mask is None and not explicit:
          lengths = key_lengths(key_valid)  # cuDNN masks padding by lengths: no [B, S] mask
        else:
          mask = _and(mask, key_valid[:, None, None, :])  # [B, 1, 1, S]
      if causal or caching:  # `init` of a decoding module: plain causal attention
        if mask is None:
          is_causal = True  # fused kernels skip the masked blocks; no [T, S] matrix
        else:
          mask = mask & causal_mask(q.shape[1])

    if explicit:
      out = self._explicit_attention(q, k, v, mask, is_causal)  # [B, T, H, K]
    else:
      out = jax.nn.dot_product_attention(
        q,
        k,
        v,
        mask=mask,
        is_causal=is_causal,
        key_value_seq_lengths=lengths,
        implementation=implementation,
      )  # [B, T, H, K]
    flat_out, unflat_out = rows(out, keep=2)  # [B*T, H, K]
    return unflat_out(
      nn.DenseGeneral(
        self.out_features or width,
        axis=(-2, -1),
        use_bias=self.use_bias,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=self.out_kernel_init or self.kernel_init,
        name='out',
      )(flat_out)
    )  # [B, T, D]

  def _explicit_attention(self, q, k, v, mask, is_causal) -> jax.Array:
    """The fused kernel's computation written out, to sow the attention weights.

    Used only when 'intermediates' is mutable (probing, distillation): sows
    'attention_weights' [B, H, T, S] (float32) and returns what `dot_product_attention`
    returns, [B, T, H, K]: logits in float32, masked keys at the float32 minimum (so a
    query with no visible key attends uniformly, as the XLA kernel does), softmax in float32.
    """
    groups = q.shape[2] // k.shape[2]
    k = jnp.repeat(k, groups, axis=2)  # [B, S, H, K]: query head h reads key head h // groups
    v = jnp.repeat(v, groups, axis=2)  # [B, S, H, K]
    logits = jnp.einsum('bthk,bshk->bhts', q, k, preferred_element_type=jnp.float32)
    logits = logits * (q.shape[-1] ** -0.5)  # [B, H, T, S]
    if is_causal:
      mask = causal_mask(q.shape[1])
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)  # [B, H, T, S]
    self.sow('intermediates', 'attention_weights', weights)
    return jnp.einsum('bhts,bshk->bthk', weights.astype(v.dtype), v)  # [B, T, H, K]

  def _cache(self, k: jax.Array, v: jax.Array) -> dict:
    """The cache variables, sized by the `init` call's [B, S_max, G, K] keys."""
    ready = self.has_variable('cache', 'cached_key')
    batch, length = k.shape[:2]
    return {
      'ready': ready,  # False during `init`, which only sizes the cache
      'key': self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype),
      'value': self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype),
      'valid': self.variable('cache', 'cached_valid', jnp.zeros, (batch, length), bool),
      'index': self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32)),
    }

  def _update_cache(self, cache, k, v, mask, key_valid):
    """Writes k, v and their validity at the cache index; returns the cache and its mask."""
    step = k.shape[1]
    i = cache['index'].value
    valid = jnp.ones(k.shape[:2], bool) if key_valid is None else key_valid  # [B, T]
    cache['key'].value = jax.lax.dynamic_update_slice(cache['key'].value, k, (0, i, 0, 0))
    cache['value'].value = jax.lax.dynamic_update_slice(cache['value'].value, v, (0, i, 0, 0))
    cache['valid'].value = jax.lax.dynamic_update_slice(cache['valid'].value, valid, (0, i))
    cache['index'].value = i + step
    max_length = cache['key'].value.shape[1]
    # Query t (absolute position i + t) may see the valid keys at positions <= i + t.
    query_pos = i + jnp.arange(step)[:, None]  # [T, 1]
    key_pos = jnp.arange(max_length)[None, :]  # [1, S]
    cache_mask = (key_pos <= query_pos)[None, None]  # [1, 1, T, S]
    cache_mask = cache_mask & cache['valid'].value[:, None, None, :]  # [B, 1, T, S]
    return cache['key'].value, cache['value'].value, _and(cache_mask, mask)
