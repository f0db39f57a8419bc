"""Batch-level augmentation in the train step: mixup and cutmix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax.train import augment


def mix_inputs(b=8, side=16):
  # Example i is constant i + 1 and has class i, so both the partner and the mix are visible.
  imgs = jnp.broadcast_to(jnp.arange(1.0, b + 1)[:, None, None, None], (b, side, side, 3))
  return imgs, jax.nn.one_hot(jnp.arange(b), b)


# Jitted once for the module: each seed reuses the compiled function.
_mixup = jax.jit(lambda x, y, r: augment.mixup_cutmix(x, y, r, mixup_alpha=0.4))
_cutmix = jax.jit(lambda x, y, r: augment.mixup_cutmix(x, y, r, cutmix_alpha=1.0))
_both = jax.jit(lambda x, y, r: augment.mixup_cutmix(x, y, r, mixup_alpha=0.8, cutmix_alpha=1.0))


@pytest.mark.parametrize('seed', range(4))
def test_mixup(seed):
  imgs, labels = mix_inputs()
  out, soft = map(np.asarray, _mixup(imgs, labels, jax.random.key(seed)))
  np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-6)
  for i in range(8):
    lam = float(soft[i, i])
    assert 0.0 <= lam <= 1.0
    others = np.asarray(soft[i]).copy()
    others[i] = -1
    j = int(np.argmax(others)) if lam < 1 else i
    if lam < 1:
      np.testing.assert_allclose(soft[i, j], 1 - lam, atol=1e-6)
    expected = lam * (i + 1) + (1 - lam) * (j + 1)
    np.testing.assert_allclose(out[i], expected, atol=1e-5)


@pytest.mark.parametrize('seed', range(4))
def test_cutmix_area_matches_label_weight(seed):
  imgs, labels = mix_inputs()
  out, soft = map(np.asarray, _cutmix(imgs, labels, jax.random.key(seed)))
  np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-6)
  pasted = out[..., 0] != np.asarray(imgs[..., 0])  # [B, H, W]
  areas = pasted.mean((1, 2))
  assert len(set(areas.round(6))) <= 2  # one box for the batch (0 where paired with itself)
  for i in range(8):
    np.testing.assert_allclose(soft[i, i], 1 - areas[i], atol=1e-6)
    if areas[i]:  # the pasted pixels come from one partner, whose class gets the rest
      (partner,) = np.unique(out[i, ..., 0][pasted[i]])
      np.testing.assert_allclose(soft[i, int(partner) - 1], areas[i], atol=1e-6)
      rows, cols = np.nonzero(pasted[i])
      assert pasted[i, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a box


def test_mixup_cutmix_switch_and_off():
  imgs, labels = mix_inputs()
  kinds = set()
  for seed in range(12):
    out, soft = map(np.asarray, _both(imgs, labels, jax.random.key(seed)))
    np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-6)
    values = np.unique(out[..., 0])
    kinds.add('cutmix' if np.all(np.isin(values, np.arange(1, 9))) else 'mixup')
  assert kinds == {'mixup', 'cutmix'}
  same, same_labels = augment.mixup_cutmix(imgs, labels, jax.random.key(0))
  assert same is imgs and same_labels is labels
  with pytest.raises(ValueError):
    augment.mixup_cutmix(imgs, labels, jax.random.key(0), mixup_alpha=-1.0)
