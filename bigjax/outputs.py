"""What a model returns: logits, or `ModelOutput` when it has more to report.

One convention for every family. A model's `__call__` returns either a plain logits array
or a `ModelOutput` holding the logits plus
  aux_logits   name -> logits of an auxiliary head that the task scores against the same
               labels (Inception v3's auxiliary classifier), weighted by the config;
  aux_losses   name -> a scalar loss the model computes itself and has already weighted
               (a mixture-of-experts balance loss); the task adds it to the objective;
  features     name -> arrays for probing or feature distillation;
  metrics      name -> a scalar or a vector [N] the model measures about itself (the
               per-expert load of a mixture of experts); tasks report each as a mean
               over batches (a vector as name/0 ... name/N-1), never in the objective.
Tasks and the train step call `as_output` and never look at the raw return value.
"""

import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from bigjax.layers.partitioning import constrain


@flax.struct.dataclass
class ModelOutput:
  logits: jax.Array
  aux_logits: dict[str, jax.Array] = flax.struct.field(default_factory=dict)
  aux_losses: dict[str, jax.Array] = flax.struct.field(default_factory=dict)
  features: dict[str, Any] = flax.struct.field(default_factory=dict)
  metrics: dict[str, jax.Array] = flax.struct.field(default_factory=dict)


def as_output(outputs: Any) -> ModelOutput:
  """A model's return value as a `ModelOutput` (a plain array becomes its logits)."""
  return outputs if isinstance(outputs, ModelOutput) else ModelOutput(logits=outputs)


def logits_of(outputs: Any) -> jax.Array:
  """The main logits of a model's return value."""
  return as_output(outputs).logits


# The logit of a padded vocabulary column: no probability in a softmax, never sampled.
PADDED_LOGIT = -1e9


def vocab_logits(
  hidden: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None = None,
  *,
  vocab_size: int | None = None,
  dtype: Any = jnp.float32,
) -> jax.Array:
  """hidden [..., D] @ kernel [D, V'] (+ bias [V']) -> float32 logits [..., V'].

  The product runs in `dtype` (bf16 under bf16 compute) and accumulates in float32; the
  columns at or past `vocab_size` (vocabulary padding) are PADDED_LOGIT.
  """
  logits = jnp.dot(
    hidden.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32
  )  # [..., V']
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  padded = kernel.shape[-1]
  if vocab_size is not None and vocab_size < padded:
    logits = jnp.where(jnp.arange(padded) < vocab_size, logits, PADDED_LOGIT)
  return logits


@flax.struct.dataclass
class LazyLogits:
  """The vocabulary logits of a language model, not yet computed: `vocab_logits(hidden,
  kernel, bias)` [..., V'] (float32, padded columns masked).

  A model returns this as its logits in training when chunked cross-entropy is on
  (`loss_chunk > 0`): `bigjax.losses` then computes the loss `chunk` tokens at a time under
  `jax.checkpoint`, so neither the forward nor the backward pass holds more than [chunk, V']
  logits at once instead of the full [B, T, V'] (GPT-2 at B=16, T=1024: 3.3 GB in float32).
  What needs every logit (distillation, sampling) calls `materialize` or, better, evaluates
  the model with train=False, which returns plain logits.
  """

  hidden: jax.Array  # [..., D]
  kernel: jax.Array  # [D, V']
  bias: jax.Array | None = None  # [V']
  vocab_size: int | None = flax.struct.field(pytree_node=False, default=None)
  chunk: int = flax.struct.field(pytree_node=False, default=1024)  # tokens per chunk
  dtype: Any = flax.struct.field(pytree_node=False, default=jnp.float32)  # of the product

  @property
  def shape(self) -> tuple[int, ...]:
    return (*self.hidden.shape[:-1], self.kernel.shape[-1])

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[..., D] hidden states -> their float32 logits [..., V']."""
    return vocab_logits(
      hidden, self.kernel, self.bias, vocab_size=self.vocab_size, dtype=self.dtype
    )

  def materialize(self) -> jax.Array:
    """The full logits [..., V'] (float32): what the model returns with loss_chunk=0."""
    logits = self.logits(self.hidden)
    return constrain(logits, ('batch',) + (None,) * (logits.ndim - 2) + ('act_vocab',))

  def map_chunks(self, fn: Callable[..., Any], *per_token: jax.Array) -> Any:
    """fn(logits [C, V'], *per_token chunks [C, ...]) -> a pytree of [C, ...] per token,
    applied `chunk` tokens at a time; returns the pytree with the leading dims [...].

    Each chunk runs under `jax.checkpoint`: its backward pass recomputes the chunk's
    logits instead of storing them, so memory is O(chunk * V'), not O(tokens * V').
    """
    lead = self.hidden.shape[:-1]
    n = math.prod(lead)
    size = max(1, min(self.chunk, n))
    count = -(-n // size)

    def split(x):  # [..., *rest] -> [count, size, *rest], zero-padded
      x = x.reshape(n, *x.shape[len(lead) :])
      x = jnp.pad(x, [(0, count * size - n)] + [(0, 0)] * (x.ndim - 1))
      return x.reshape(count, size, *x.shape[1:])

    @jax.checkpoint
    def body(args):
      hidden, *rest = args
      return fn(self.logits(hidden), *rest)

    out = jax.lax.map(body, (split(self.hidden), *(split(x) for x in per_token)))

    def join(x):  # [count, size, ...] -> [..., ...]
      x = x.reshape(count * size, *x.shape[2:])[:n]
      return x.reshape(*lead, *x.shape[1:])

    return jax.tree.map(join, out)

  def _needs_full(self, *_, **__):
    raise ValueError(
      'this needs the full logits, but the model returned them chunked (LazyLogits): set '
      '--config.model.loss_chunk=0, or evaluate with train=False'
    )

  astype = __getitem__ = __array__ = __jax_array__ = _needs_full
