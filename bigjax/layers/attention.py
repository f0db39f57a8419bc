"""Multi-head attention over `jax.nn.dot_product_attention`, with an optional KV cache.

Legend: B batch, T query length, S key length, D model width, H heads, K head dim.
Masks are boolean and broadcast to [B, H, T, S]; True means "may attend".
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.typing import Dtype


def padding_mask(query_valid: jax.Array, key_valid: jax.Array) -> jax.Array:
  """[B, T] and [B, S] validity -> [B, 1, T, S] mask."""
  return query_valid[:, None, :, None] & key_valid[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
  """[1, 1, T, T] lower-triangular mask."""
  return jnp.tril(jnp.ones((length, length), bool))[None, None]


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention (Vaswani et al., 2017).

  With `decode=True` the keys and values of every call are appended to a cache in the
  `cache` collection (initialise it by calling `init` with a full-length input), so an
  autoregressive decoder computes each prefix position once.
  """

  num_heads: int
  head_dim: int | None = None  # defaults to D // H
  out_features: int | None = None  # defaults to D
  use_bias: bool = True
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.xavier_uniform()
  implementation: str | None = None  # None: XLA on CPU, 'cudnn' for the flash kernel

  @nn.compact
  def __call__(
    self,
    inputs_q: jax.Array,
    inputs_kv: jax.Array | None = None,
    *,
    mask: jax.Array | None = None,
    causal: bool = False,
  ) -> jax.Array:
    """[B, T, D] queries (and [B, S, D] keys/values, default self) -> [B, T, D]."""
    self_attention = inputs_kv is None
    inputs_kv = inputs_q if self_attention else inputs_kv
    width = inputs_q.shape[-1]
    head_dim = self.head_dim or width // self.num_heads
    dense = lambda name: nn.DenseGeneral(  # noqa: E731
      (self.num_heads, head_dim),
      use_bias=self.use_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      name=name,
    )
    q = dense('query')(inputs_q)  # [B, T, H, K]
    k = dense('key')(inputs_kv)  # [B, S, H, K]
    v = dense('value')(inputs_kv)  # [B, S, H, K]

    if self.decode and self_attention:
      k, v, mask = self._update_cache(k, v, mask)
      causal = False  # the cache mask already hides future positions
    elif causal:
      length = q.shape[1]
      mask = causal_mask(length) if mask is None else mask & causal_mask(length)

    out = jax.nn.dot_product_attention(
      q, k, v, mask=mask, implementation=self.implementation
    )  # [B, T, H, K]
    return nn.DenseGeneral(
      self.out_features or width,
      axis=(-2, -1),
      use_bias=self.use_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      name='out',
    )(out)

  def _update_cache(self, k, v, mask):
    """Writes k, v at the cache index; returns the full cache and its mask."""
    initialised = self.has_variable('cache', 'cached_key')
    cached_k = self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
    cached_v = self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
    index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
    if not initialised:  # the `init` call only sizes the cache: plain causal attention
      length = k.shape[1]
      full = causal_mask(length)
      return k, v, full if mask is None else mask & full
    batch, max_length, heads, head_dim = cached_k.value.shape
    step = k.shape[1]
    i = index.value
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (0, i, 0, 0))
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (0, i, 0, 0))
    index.value = i + step
    # Query t (absolute position i + t) may see keys at positions <= i + t.
    query_pos = i + jnp.arange(step)[:, None]  # [T, 1]
    key_pos = jnp.arange(max_length)[None, :]  # [1, S]
    cache_mask = (key_pos <= query_pos)[None, None]  # [1, 1, T, S]
    if mask is not None:
      cache_mask = cache_mask & mask
    return cached_k.value, cached_v.value, cache_mask
