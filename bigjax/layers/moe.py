"""A mixture-of-experts MLP (Shazeer et al., 2017; GShard, Lepikhin et al., 2020; Switch,
Fedus et al., 2021; Mixtral, Jiang et al., 2024) in place of the dense MLP of a block.

Legend: B batch, T length, N = B * T tokens, D width, E experts, k experts per token,
F expert hidden width (mlp_dim), C capacity (slots per expert and row).

Routing: router logits [N, E] = x @ router/kernel (float32, no bias), softmax over E, the k
most probable experts, their probabilities renormalised to sum to 1 (Mixtral). The output
of a token is the weighted sum of its k experts' MLPs (each an `MlpBlock`-shaped MLP, plain
or gated).

Two ways to run the experts:
  dropless (`capacity_factor=0`): the N * k assignments are sorted by expert and each
    expert multiplies its contiguous group with `jax.lax.ragged_dot`: exact, no token is
    ever dropped, and the output of a token does not depend on the other tokens.
  capacity (`capacity_factor > 0`): every row of the batch gives each expert
    C = ceil(capacity_factor * T * k / E) slots, filled first by the tokens' first choices
    then by their second ones (GShard's priority), in order within a row; one-hot dispatch
    and combine einsums move the tokens in and out of [B, E, C, D] buffers. An assignment
    beyond capacity is dropped: its expert contributes nothing to that token.
Padding tokens (valid False) take no slot and get a zero output in both modes.

Auxiliary values (over the valid tokens only; `aux`):
  balance_loss  E * sum_e f_e * p_e (Switch eq. 4, GShard), f_e the fraction of the k * n
                assignments routed to e (before any capacity drop), p_e the mean router
                probability of e: 1 when routing is uniform, more when it is skewed
  z_loss        mean(logsumexp(router logits)^2) (ST-MoE, Zoph et al., 2022)
  expert_load   [E] the f_e above (sums to 1)

Params: router/kernel [D, E]; fc1/kernel and (gated) gate/kernel [E, D, F], fc2/kernel
[E, F, D]; with `use_bias` fc1/bias and gate/bias [E, F], fc2/bias [E, D]. A Mixtral
expert's w1 (gate_proj) maps to gate, w3 (up_proj) to fc1, w2 (down_proj) to fc2.
"""

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers.activations import Activation, activation
from bigjax.layers.partitioning import constrain
from bigjax.typing import Dtype

# The logical axes of the capacity mode's expert buffers (`bigjax.layers.partitioning`):
# with the experts over a mesh axis each device runs its own experts' MLPs. (The dropless
# mode's `ragged_dot` is not split by expert: the compiler gathers the experts' kernels.)
BUFFER = ('batch', 'act_experts', None, 'act_embed')


def _per_expert(init: Callable[..., Any], num_experts: int) -> Callable[..., Any]:
  """An initialiser of [E, ...] kernels drawing each expert's [...] kernel with `init`, so
  fan-in based initialisers see one expert's fans."""

  def expert_init(key, shape, dtype=jnp.float32):
    keys = jax.random.split(key, num_experts)
    return jax.vmap(lambda k: init(k, shape[1:], dtype))(keys)

  return expert_init


class ExpertDense(nn.Module):
  """The [E, in, out] kernel (and [E, out] bias) of one projection of every expert."""

  num_experts: int
  features: int
  use_bias: bool = False
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
    kernel = self.param(
      'kernel',
      _per_expert(self.kernel_init, self.num_experts),
      (self.num_experts, in_features, self.features),
      self.param_dtype,
    )
    bias = None
    if self.use_bias:
      bias = self.param(
        'bias', nn.initializers.zeros, (self.num_experts, self.features), self.param_dtype
      )
    return kernel, bias


def routing_aux(
  logits: jax.Array, probs: jax.Array, experts: jax.Array, valid: jax.Array
) -> dict[str, jax.Array]:
  """balance_loss, z_loss and expert_load of router logits and probs [..., E], chosen
  experts [..., k] and token validity [...] (see the module docstring)."""
  num_experts, k = probs.shape[-1], experts.shape[-1]
  v = valid.astype(jnp.float32)[..., None]  # [..., 1]
  n = jnp.maximum(v.sum(), 1.0)
  routed = jax.nn.one_hot(experts, num_experts, dtype=jnp.float32).sum(-2)  # [..., E]
  axes = tuple(range(probs.ndim - 1))
  load = (routed * v).sum(axes) / (n * k)  # [E]
  importance = (probs * v).sum(axes) / n  # [E]
  z = jax.nn.logsumexp(logits, axis=-1)[..., None] ** 2  # [..., 1]
  return {
    'balance_loss': num_experts * jnp.sum(load * importance),
    'z_loss': (z * v).sum() / n,
    'expert_load': load,
  }


class MoeBlock(nn.Module):
  """[B, T, D] and token validity [B, T] -> ([B, T, D], aux) (see the module docstring)."""

  num_experts: int
  experts_per_token: int = 2
  mlp_dim: int = 2048
  activation: str | Activation = 'silu'
  gated: bool = True
  use_bias: bool = False
  capacity_factor: float = 0.0  # 0: dropless
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.xavier_uniform()
  out_kernel_init: Callable[..., Any] | None = None  # fc2; None: kernel_init

  @nn.compact
  def __call__(
    self, x: jax.Array, valid: jax.Array | None = None, *, train: bool = False
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    num_experts, k = self.num_experts, self.experts_per_token
    if not 1 <= k <= num_experts:
      raise ValueError(f'experts_per_token must be in [1, num_experts], got {k} of {num_experts}')
    if self.capacity_factor < 0:
      raise ValueError(f'capacity_factor must be >= 0 (0: dropless), got {self.capacity_factor}')
    batch, length, width = x.shape
    valid = jnp.ones((batch, length), bool) if valid is None else valid.astype(bool)

    router = nn.Dense(
      num_experts,
      use_bias=False,
      dtype=jnp.float32,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      name='router',
    )
    logits = router(x.astype(jnp.float32))  # [B, T, E]
    probs = jax.nn.softmax(logits, axis=-1)  # [B, T, E]
    weights, experts = jax.lax.top_k(probs, k)  # [B, T, k]
    weights = weights / weights.sum(-1, keepdims=True)  # renormalised over the k (Mixtral)
    aux = routing_aux(logits, probs, experts, valid)

    proj = lambda features, name, init=self.kernel_init: ExpertDense(  # noqa: E731
      num_experts, features, self.use_bias, self.param_dtype, init, name=name
    )
    names = (('gate',) if self.gated else ()) + ('fc1',)
    hidden = {n: proj(self.mlp_dim, n)(width) for n in names}
    fc2 = proj(width, 'fc2', self.out_kernel_init or self.kernel_init)(self.mlp_dim)
    dropout = nn.Dropout(self.dropout_rate)
    act = activation(self.activation)

    def mlp(h, matmul):
      """The experts' MLP of h, with matmul(h, (kernel, bias)) one projection."""
      a = matmul(h, hidden['fc1'])
      a = act(matmul(h, hidden['gate'])) * a if self.gated else act(a)
      return matmul(dropout(a, deterministic=not train), fc2)

    if self.capacity_factor:
      y = self._with_capacity(x, experts, weights, valid, mlp)
    else:
      y = self._dropless(x, experts, weights * valid[..., None], mlp)
    return y, aux

  def _dropless(self, x, experts, weights, mlp) -> jax.Array:
    """Every assignment, sorted by expert, through `jax.lax.ragged_dot`."""
    batch, length, width = x.shape
    k = experts.shape[-1]
    flat = experts.reshape(-1)  # [N*k]
    order = jnp.argsort(flat, stable=True)  # assignments grouped by expert
    sorted_experts = flat[order]  # [N*k]
    sizes = jnp.bincount(flat, length=self.num_experts).astype(jnp.int32)  # [E]
    h = x.reshape(-1, width)[order // k]  # [N*k, D]

    def matmul(h, params):
      kernel, bias = params
      y = jax.lax.ragged_dot(h, kernel.astype(self.dtype), sizes)  # [N*k, out]
      return y if bias is None else y + bias.astype(self.dtype)[sorted_experts]

    out = mlp(h.astype(self.dtype), matmul)  # [N*k, D]
    out = out[jnp.argsort(order)].reshape(batch, length, k, width)  # [B, T, k, D]
    return jnp.einsum('btkd,btk->btd', out, weights.astype(self.dtype))  # [B, T, D]

  def _with_capacity(self, x, experts, weights, valid, mlp) -> jax.Array:
    """C slots per expert and row; one-hot dispatch into [B, E, C, D] and combine out."""
    batch, length, width = x.shape
    num_experts, k = self.num_experts, experts.shape[-1]
    capacity = math.ceil(self.capacity_factor * length * k / num_experts)
    chosen = jax.nn.one_hot(experts, num_experts, dtype=jnp.int32)  # [B, T, k, E]
    chosen = chosen * valid[:, :, None, None]  # padding takes no slot
    # Priority: every first choice of the row, in order, then every second choice, ...
    queue = chosen.transpose(0, 2, 1, 3).reshape(batch, k * length, num_experts)
    slot = jnp.cumsum(queue, axis=1) - 1  # [B, k*T, E] the slot each assignment would take
    kept = queue * (slot < capacity)  # [B, k*T, E]
    slots = jax.nn.one_hot(slot, capacity, dtype=x.dtype) * kept[..., None].astype(x.dtype)
    slots = slots.reshape(batch, k, length, num_experts, capacity)  # [B, k, T, E, C]
    dispatch = slots.sum(1)  # [B, T, E, C] (a token's k experts are distinct)
    combine = jnp.einsum('bktec,btk->btec', slots, weights.astype(x.dtype))  # [B, T, E, C]
    buffers = jnp.einsum('btec,btd->becd', dispatch, x.astype(self.dtype))  # [B, E, C, D]
    buffers = constrain(buffers, BUFFER)

    def matmul(h, params):
      kernel, bias = params
      y = jnp.einsum('becd,edf->becf', h, kernel.astype(self.dtype))  # [B, E, C, out]
      return y if bias is None else y + bias.astype(self.dtype)[None, :, None]

    out = constrain(mlp(buffers, matmul), BUFFER)  # [B, E, C, D]
    return jnp.einsum('btec,becd->btd', combine.astype(self.dtype), out)  # [B, T, D]
