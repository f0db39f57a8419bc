"""Losses: hand-computed values, gradients, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import losses


def _np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_cross_entropy_by_hand():
  logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
  labels = jnp.array([0, 2])
  got = losses.softmax_cross_entropy(logits, labels)
  expected = [-np.log(np.exp(2) / (np.exp(2) + np.exp(1) + 1)), np.log(3)]
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_label_smoothing_by_hand():
  logits = jnp.array([[2.0, 1.0, 0.0]])
  got = losses.softmax_cross_entropy(logits, jnp.array([0]), label_smoothing=0.3)
  logp = np.log(_np_softmax(np.array([2.0, 1.0, 0.0])))
  target = np.array([0.7 + 0.1, 0.1, 0.1])
  np.testing.assert_allclose(got, [-(target * logp).sum()], rtol=1e-6)


def test_mask_equals_slicing():
  logits = jax.random.normal(jax.random.key(0), (6, 5))
  labels = jnp.array([0, 1, 2, 3, 4, 0])
  where = jnp.array([True, False, True, True, False, True])
  masked = losses.softmax_cross_entropy(logits, labels, where=where)
  sliced = losses.softmax_cross_entropy(logits[where], labels[where])
  np.testing.assert_allclose(masked[where], sliced, rtol=1e-6)
  assert np.all(masked[~where] == 0)
  d_masked = losses.distillation_loss(logits, logits[::-1], temperature=2.0, where=where)
  d_sliced = losses.distillation_loss(logits[where], logits[::-1][where], temperature=2.0)
  np.testing.assert_allclose(d_masked[where], d_sliced, rtol=1e-6)


def test_distillation_by_hand():
  s = np.array([[1.0, 0.0, -1.0]])
  t = np.array([[0.0, 2.0, 0.0]])
  temp, alpha = 2.0, 0.6
  p, q = _np_softmax(t / temp), _np_softmax(s / temp)
  kl = (p * (np.log(p) - np.log(q))).sum()
  ce = -np.log(_np_softmax(s)[0, 1])
  got = losses.distillation_loss(
    jnp.array(s), jnp.array(t), jnp.array([1]), temperature=temp, alpha=alpha
  )
  np.testing.assert_allclose(got, [alpha * temp**2 * kl + (1 - alpha) * ce], rtol=1e-5)
  same = losses.distillation_loss(jnp.array(s), jnp.array(s), temperature=temp)
  np.testing.assert_allclose(same, [0.0], atol=1e-6)


def test_distillation_gradients():
  s = jax.random.normal(jax.random.key(0), (4, 5))
  t = jax.random.normal(jax.random.key(1), (4, 5))
  temp = 3.0
  grad_s, grad_t = jax.grad(
    lambda s, t: losses.distillation_loss(s, t, temperature=temp).sum(), argnums=(0, 1)
  )(s, t)
  # d/ds T^2 KL(p_t || softmax(s/T)) = T (softmax(s/T) - softmax(t/T)); teacher frozen.
  expected = temp * (jax.nn.softmax(s / temp) - jax.nn.softmax(t / temp))
  np.testing.assert_allclose(grad_s, expected, atol=1e-5)
  assert np.all(grad_t == 0)
  # Finite differences on the cross-entropy.
  labels = jnp.array([0, 1, 2, 3])
  f = lambda x: losses.softmax_cross_entropy(x, labels, label_smoothing=0.1).sum()
  g = jax.grad(f)(s)
  eps = 1e-3
  bump = jnp.zeros_like(s).at[1, 2].set(eps)
  np.testing.assert_allclose((f(s + bump) - f(s - bump)) / (2 * eps), g[1, 2], rtol=1e-2)


def test_distillation_rejects_bad_arguments():
  x = jnp.zeros((1, 3))
  with pytest.raises(ValueError, match='temperature'):
    losses.distillation_loss(x, x, temperature=0.0)
  with pytest.raises(ValueError, match='labels'):
    losses.distillation_loss(x, x, alpha=0.5)


def _np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _np_logistic_mixture_probs(mixture, num_bins):
  """The bin masses [..., V] by hand: CDF differences over each bin, ends to +-inf."""
  k = mixture.shape[-1] // 3
  pi = _np_softmax(mixture[..., :k])[..., None, :]  # [..., 1, K]
  mu, s = mixture[..., None, k : 2 * k], np.exp(mixture[..., None, 2 * k :])
  centre = np.linspace(-1.0, 1.0, num_bins)[:, None]  # [V, 1]
  upper = np.where(
    np.arange(num_bins)[:, None] == num_bins - 1, np.inf, centre + 1 / (num_bins - 1)
  )
  lower = np.where(np.arange(num_bins)[:, None] == 0, -np.inf, centre - 1 / (num_bins - 1))
  mass = _np_sigmoid((upper - mu) / s) - _np_sigmoid((lower - mu) / s)  # [..., V, K]
  return (pi * mass).sum(-1)


# Jitted: one compile each, instead of dozens of eager ops.
_mixture_nll = jax.jit(losses.discretized_logistic_mixture_nll, static_argnames='num_bins')


def test_discretized_logistic_mixture_by_hand():
  """Two components over 8 levels: the bin masses by hand; they sum to 1; the NLL is
  -log of the target's mass; masked samples give 0."""
  mixture = np.array(
    [[0.3, -0.2, -0.5, 0.4, -1.0, -0.7], [1.0, 0.0, 0.9, 0.95, -2.0, -1.5]], np.float32
  )  # [2, 3K]: logits, means, log-scales
  probs = _np_logistic_mixture_probs(mixture.astype(np.float64), 8)  # [2, 8]
  log_probs = jax.jit(losses.discretized_logistic_mixture_log_probs, static_argnums=1)(
    jnp.asarray(mixture), 8
  )
  np.testing.assert_allclose(np.exp(log_probs), probs, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
  targets = jnp.array([0, 7])  # both end bins
  nll = _mixture_nll(mixture, targets, num_bins=8)
  np.testing.assert_allclose(nll, -np.log(probs[[0, 1], [0, 7]]), rtol=1e-5)
  masked = _mixture_nll(mixture, targets, num_bins=8, where=jnp.array([True, False]))
  np.testing.assert_allclose(masked, [nll[0], 0.0], rtol=1e-6)


def test_discretized_logistic_mixture_far_tail_and_gradients():
  """A narrow logistic far from a bin: the density fallback keeps the NLL finite (the CDF
  difference underflows) and close to the exact value; gradients are finite and match
  central differences."""
  narrow = jnp.array([[0.0, 0.5, -6.0]])  # one component at 0.5, scale e^-6
  nll = _mixture_nll(narrow, jnp.array([40]), num_bins=256)
  x, mu, s = 2 * 40 / 255 - 1, 0.5, np.exp(-6.0)
  z = (x - mu) / s
  exact = -(z - np.log(s) - 2 * np.logaddexp(0, z) + np.log(2 / 255))  # density x width
  np.testing.assert_allclose(nll, [exact], rtol=1e-4)
  mixture = jnp.array([[0.2, -0.3, 0.1, 0.4, -1.5, -1.0]])
  targets = jnp.array([100])

  def f(m):  # [..., 1, 3K] -> [...]
    return losses.discretized_logistic_mixture_nll(m, targets)[..., 0]

  grad = jax.jit(jax.grad(lambda m: f(m).sum()))(mixture)[0]  # [3K]
  assert np.isfinite(grad).all()
  eps = 1e-3
  steps = eps * jnp.eye(6)[:, None, :]  # [3K, 1, 3K]: one parameter moved per row
  numeric = (jax.jit(f)(mixture + steps) - jax.jit(f)(mixture - steps)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=2e-2, atol=2e-3)
