"""Batch-level augmentation in JAX, run inside the jitted train step on a whole update batch
(before it is split into micro-batches): mixup and cutmix.

Legend: B batch, H height, W width, C channels, N classes.
"""

import jax
import jax.numpy as jnp


def mixup_cutmix(
  images: jax.Array,
  labels: jax.Array,
  rng: jax.Array,
  *,
  mixup_alpha: float = 0.0,
  cutmix_alpha: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """Mixes each example with another of the batch (pure JAX, jit-able).

  images [B, H, W, C], labels [B, N] one-hot or soft -> (images, labels) of the same shapes.
  mixup (Zhang et al., 2018): x = lam x_i + (1 - lam) x_j, lam ~ Beta(mixup_alpha).
  cutmix (Yun et al., 2019): a box of area (1 - lam) H W from x_j pasted into x_i,
  lam ~ Beta(cutmix_alpha); the label weight is the pasted area actually kept after
  clipping the box to the image. With both alphas > 0 each batch uses one of the two, at
  even odds. The partner j is a random permutation of the batch; one lam per batch.
  """
  if mixup_alpha < 0 or cutmix_alpha < 0:
    raise ValueError('mixup_alpha and cutmix_alpha must be >= 0 (0 turns one off)')
  if not (mixup_alpha or cutmix_alpha):
    return images, labels
  b, h, w, _ = images.shape
  k_perm, k_mix, k_cut, k_box, k_pick = jax.random.split(rng, 5)
  perm = jax.random.permutation(k_perm, b)
  other_images, other_labels = images[perm], labels[perm]
  outputs = []
  if mixup_alpha:
    lam = jax.random.beta(k_mix, mixup_alpha, mixup_alpha)
    outputs.append(
      (lam * images + (1 - lam) * other_images, lam * labels + (1 - lam) * other_labels)
    )
  if cutmix_alpha:
    lam = jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha)
    cut = jnp.sqrt(1.0 - lam)  # box sides are sqrt(1 - lam) of the image's
    cy, cx = jax.random.uniform(k_box, (2,)) * jnp.array([h, w])
    y0 = jnp.clip(jnp.round(cy - cut * h / 2), 0, h)
    y1 = jnp.clip(jnp.round(cy + cut * h / 2), 0, h)
    x0 = jnp.clip(jnp.round(cx - cut * w / 2), 0, w)
    x1 = jnp.clip(jnp.round(cx + cut * w / 2), 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # [H, W]
    kept = 1.0 - box.mean()  # fraction of x_i that remains
    outputs.append(
      (
        jnp.where(box[None, :, :, None], other_images, images),
        kept * labels + (1 - kept) * other_labels,
      )
    )
  if len(outputs) == 1:
    mixed_images, mixed_labels = outputs[0]
  else:
    use_cutmix = jax.random.bernoulli(k_pick)
    mixed_images = jnp.where(use_cutmix, outputs[1][0], outputs[0][0])
    mixed_labels = jnp.where(use_cutmix, outputs[1][1], outputs[0][1])
  return mixed_images.astype(images.dtype), mixed_labels.astype(labels.dtype)
