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

from typing import Any

import flax.struct
import jax


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
