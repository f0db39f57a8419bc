"""Pure per-example losses (optax style): callers reduce, `where=` masks.

Legend: B batch (any leading dims), C classes.
"""

import jax
import jax.numpy as jnp
import optax


def _masked(loss: jax.Array, where: jax.Array | None) -> jax.Array:
  return loss if where is None else jnp.where(where, loss, 0.0)


def softmax_cross_entropy(
  logits: jax.Array,
  labels: jax.Array,
  *,
  label_smoothing: float = 0.0,
  where: jax.Array | None = None,
) -> jax.Array:
  """[..., C] logits and [...] integer labels (or [..., C] probabilities) -> [...] loss.

  With `label_smoothing` e the target is (1 - e) * onehot + e / C (Szegedy et al., 2016).
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  if labels.ndim == logits.ndim:  # already a distribution (mixup / cutmix)
    targets = labels.astype(jnp.float32)
  else:
    targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return _masked(optax.softmax_cross_entropy(logits, targets), where)


def distillation_loss(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array | None = None,
  *,
  temperature: float = 1.0,
  alpha: float = 1.0,
  where: jax.Array | None = None,
) -> jax.Array:
  """Knowledge distillation (Hinton et al., 2015), per example.

  alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))
    + (1 - alpha) * CE(student, labels).
  The T^2 factor keeps the soft-target gradients on the same scale as T changes.
  The teacher gets no gradient.
  """
  if temperature <= 0:
    raise ValueError(f'temperature must be positive, got {temperature}')
  teacher_logits = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  student_logits = student_logits.astype(jnp.float32)
  t_logp = jax.nn.log_softmax(teacher_logits / temperature)
  s_logp = jax.nn.log_softmax(student_logits / temperature)
  kl = jnp.sum(jnp.exp(t_logp) * (t_logp - s_logp), axis=-1)
  loss = alpha * temperature**2 * kl
  if labels is not None and alpha < 1.0:
    loss = loss + (1.0 - alpha) * softmax_cross_entropy(student_logits, labels)
  elif labels is None and alpha < 1.0:
    raise ValueError('alpha < 1 mixes in the hard-label loss: pass labels=')
  return _masked(loss, where)
