"""Distillation losses: zero at the teacher, non-negative, frozen teacher, T^2 scaling, masks,
extreme and bf16 inputs, top-k against the full loss, hand-computed values, jit and vmap.

Compiling is what costs time here: inputs come from numpy, and most checks go through one jitted
`evaluate` (loss and both gradients) at the shared shape LEAD, so the tests share compilations;
op-by-op dispatch would compile each primitive separately and take ten times as long.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import losses

V = 8  # classes
TEMP = 2.0
K = 3  # top-k size for the generic cases
DS, DT = 4, 6  # hint widths
HS, HT, S = 2, 4, 5  # attention heads and keys
LEAD = (3, 4)  # [B, T]: the shape most checks share
NAMES = ['distillation', 'reverse_kl', 'logit_mse', 'topk', 'hint', 'attention_map']
KL_TYPE = ['distillation', 'reverse_kl', 'topk']
LOGIT_LOSSES = ['distillation', 'reverse_kl', 'logit_mse', 'topk']

_HINT_KERNEL = np.random.default_rng(7).normal(size=(DS, DT)).astype(np.float32) / 2
_HINT_BIAS = np.linspace(-0.5, 0.5, DT, dtype=np.float32)


def _loss(name, s, t, where=None, temperature=TEMP, k=K):
  """Loss `name` on (student, teacher); its result is shaped like the leading dims."""
  if name == 'distillation':
    return losses.distillation_loss(s, t, temperature=temperature, where=where)
  if name == 'reverse_kl':
    return losses.reverse_kl_loss(s, t, temperature=temperature, where=where)
  if name == 'logit_mse':
    return losses.logit_mse_loss(s, t, where=where)
  if name == 'topk':
    logp, idx = losses.teacher_topk(t, k, temperature=temperature)
    return losses.topk_distillation_loss(s, logp, idx, temperature=temperature, where=where)
  if name == 'hint':
    return losses.hint_loss(s, t, _HINT_KERNEL, _HINT_BIAS, where=where)
  assert name == 'attention_map', name
  return losses.attention_map_loss(s, t, where=where)


@functools.partial(jax.jit, static_argnames=('name', 'k'))
def _evaluate(name, k, s, t, where, temperature):
  f = lambda s, t: _loss(name, s, t, where, temperature, k)  # noqa: E731
  value, vjp = jax.vjp(f, s, t)
  grad_s, grad_t = vjp(jnp.ones_like(value))
  return value, grad_s, grad_t


def evaluate(name, s, t, where=None, temperature=TEMP, k=K):
  """(loss [...], d sum(loss) / d student, d sum(loss) / d teacher), one compile per shape."""
  if where is None:  # an all-True mask, so masked and unmasked calls share a compilation
    lead = s.shape[:-3] + s.shape[-2:-1] if name == 'attention_map' else s.shape[:-1]
    where = np.ones(lead, bool)
  return _evaluate(name, k, s, t, where, np.float32(temperature))


def loss(*args, **kwargs):
  return evaluate(*args, **kwargs)[0]


# Forward only, for the one-off shapes of the hand-computed examples.
forward = jax.jit(_loss, static_argnames=('name', 'k'))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _inputs(name, seed, lead, scale=2.0):
  """Random float32 (student, teacher) for loss `name` whose result is shaped `lead`."""
  rng = np.random.default_rng(seed)
  normal = lambda shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
  if name == 'hint':
    return normal(lead + (DS,)), normal(lead + (DT,))
  if name == 'attention_map':  # lead [..., T] -> maps [..., H, T, S]
    shape = lambda h: lead[:-1] + (h,) + lead[-1:] + (S,)  # noqa: E731
    student = _softmax(scale * normal(shape(HS))).astype(np.float32)
    return student, _softmax(scale * normal(shape(HT))).astype(np.float32)
  return scale * normal(lead + (V,)), scale * normal(lead + (V,))


# --- zero at the teacher ---------------------------------------------------------------------


@pytest.mark.parametrize('name', LOGIT_LOSSES)
def test_zero_when_student_equals_teacher(name):
  _, t = _inputs(name, 0, LEAD)
  np.testing.assert_allclose(loss(name, t, t), 0.0, atol=1e-6)


def test_hint_zero_with_identity_kernel():
  x = np.random.default_rng(0).normal(size=(4, 3, DT)).astype(np.float32)
  np.testing.assert_allclose(losses.hint_loss(x, x, jnp.eye(DT)), 0.0, atol=1e-6)
  np.testing.assert_allclose(losses.hint_loss(x, x, jnp.eye(DT), jnp.zeros(DT)), 0.0, atol=1e-6)


def test_attention_zero_when_maps_match():
  _, t = _inputs('attention_map', 0, LEAD)  # [B, HT, T, S]
  b, _, n, _ = t.shape
  grouped = t.reshape(b, HS, HT // HS, n, S).mean(axis=2)  # contiguous groups of Ht / Hs
  np.testing.assert_allclose(loss('attention_map', grouped, t), 0.0, atol=1e-6)
  assert np.all(loss('attention_map', grouped[:, ::-1], t) > 1e-3)  # groups matched in order
  mean_map = np.repeat(t.mean(axis=1, keepdims=True), 3, axis=1)  # 3 heads do not divide 4
  np.testing.assert_allclose(forward('attention_map', mean_map, t), 0.0, atol=1e-6)
  np.testing.assert_allclose(forward('attention_map', t, t), 0.0, atol=1e-6)  # Hs == Ht


# --- non-negative ----------------------------------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_never_negative(name):
  # Shapes [B, T] and [B] (the one test_mask_equals_slicing also compiles), several seeds and
  # temperatures, and logits or maps of very different sharpness: scales from 0.03 to 30.
  scales = np.logspace(-1.5, 1.5, 12, dtype=np.float32)
  temps = [0.5, 1.0, 4.0] if name in KL_TYPE else [TEMP]
  for lead in [LEAD, (12,)]:
    for seed in range(4):
      if name in ('attention_map', 'hint'):
        s, t = _inputs(name, seed, lead, scale=scales[seed * 3])
      else:
        s, t = _inputs(name, seed, lead, scale=1.0)
        s, t = s * scales.reshape(lead + (1,)), t * scales[::-1].reshape(lead + (1,))
      for temperature in temps:
        value = np.asarray(loss(name, s, t, temperature=temperature))
        assert value.shape == lead and np.all(value >= 0.0), (lead, seed, temperature)


def test_attention_never_negative_across_head_counts():
  rng = np.random.default_rng(0)
  for hs, ht in [(4, 4), (3, 4), (4, 2), (1, 3)]:  # (2, 4) in test_never_negative
    scale = np.array([0.3, 3.0, 10.0], np.float32)[:, None, None, None]
    s = _softmax(scale * rng.normal(size=(3, hs, 4, S))).astype(np.float32)
    t = _softmax(scale * rng.normal(size=(3, ht, 4, S))).astype(np.float32)
    assert np.all(np.asarray(forward('attention_map', s, t)) >= 0.0), (hs, ht)


# --- the teacher is frozen -------------------------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_no_gradient_reaches_teacher(name):
  s, t = _inputs(name, 1, LEAD)
  _, grad_s, grad_t = evaluate(name, s, t)
  assert np.all(np.asarray(grad_t) == 0)
  assert np.any(np.asarray(grad_s) != 0)  # while the student does learn


def test_no_gradient_reaches_stored_topk():
  s, t = _inputs('topk', 1, (3,))
  logp, idx = losses.teacher_topk(t, K, temperature=TEMP)
  f = lambda s, logp: losses.topk_distillation_loss(s, logp, idx, temperature=TEMP).sum()  # noqa: E731
  grad_s, grad_logp = jax.jit(jax.grad(f, argnums=(0, 1)))(s, logp)
  assert np.all(np.asarray(grad_logp) == 0) and np.any(np.asarray(grad_s) != 0)


# --- T^2 keeps the gradient scale ------------------------------------------------------------


@pytest.mark.parametrize('name', KL_TYPE)
def test_temperature_squared_keeps_gradient_scale(name):
  # Logits ~ N(0, 1) over V = 8 classes, so T >= 1 is already large against the logit scale.
  # Then softmax(x / T) = 1/V + (x - mean x) / (V T) + O(1 / T^2), and for the forward KL
  # d/ds T^2 KL = T (softmax(s/T) - softmax(t/T)) = ((s - mean s) - (t - mean t)) / V + O(1/T):
  # the same at every T. The reverse KL's gradient, T p_s ((log p_s - log p_t) - KL), and the
  # top-k buckets' (sums of such classes) have the same first-order term. Without T^2 the
  # gradient would shrink as 1 / T^2, a factor 64 between T = 1 and T = 8.
  s, t = _inputs(name, 3, LEAD, scale=1.0)
  temps = [1.0, 2.0, 4.0, 8.0]
  norms = [float(jnp.linalg.norm(evaluate(name, s, t, temperature=x)[1])) for x in temps]
  assert max(norms) / min(norms) < 3.0, norms
  unscaled = [n / x**2 for n, x in zip(norms, temps)]
  assert max(unscaled) / min(unscaled) > 20.0, unscaled


# --- masks -----------------------------------------------------------------------------------


@pytest.mark.parametrize('name', [n for n in NAMES if n != 'attention_map'])
def test_mask_equals_slicing(name):
  # [B] examples, and [B, T] tokens of sequences padded after 4, 2 and 0 tokens.
  token_mask = np.arange(4)[None, :] < np.array([4, 2, 0])[:, None]  # [B, T] = LEAD
  example_mask = np.arange(12) % 2 == 0  # [B]: 6 kept, as many as token_mask keeps
  for where in [example_mask, token_mask]:
    s, t = _inputs(name, 2, where.shape)  # e.g. [B, T, V] logits
    masked = np.asarray(loss(name, s, t, where))
    assert masked.shape == where.shape
    np.testing.assert_allclose(masked[where], loss(name, s[where], t[where]), rtol=1e-6)
    assert np.all(masked[~where] == 0)


def test_attention_mask_equals_slicing_query_rows():
  lengths = [4, 1, 0]
  where = np.arange(4)[None, :] < np.array(lengths)[:, None]  # [B, T]
  s, t = _inputs('attention_map', 2, (3, 4))  # [3, H, 4, S]
  masked = np.asarray(loss('attention_map', s, t, where))
  assert masked.shape == (3, 4)
  unmasked = loss('attention_map', s[:, :, :2], t[:, :, :2])  # the first two query rows
  np.testing.assert_allclose(masked[0, :2], unmasked[0], rtol=1e-6)
  np.testing.assert_allclose(masked[1, :1], unmasked[1, :1], rtol=1e-6)
  for b, n in enumerate(lengths):
    assert np.all(masked[b, n:] == 0)
  np.testing.assert_allclose(masked[where], loss('attention_map', s, t)[where], rtol=1e-6)


@pytest.mark.parametrize('name', LOGIT_LOSSES)
def test_token_level_distillation_with_padding(name):
  # [B, T, V] sequence logits with a [B, T] token mask: padding changes neither the mean over
  # real tokens nor the gradient, and gets exactly zero gradient itself.
  where = np.arange(4)[None, :] < np.array([4, 1, 1])[:, None]  # [B, T] = LEAD
  s, t = _inputs(name, 4, LEAD)
  junk = np.where(where[..., None], 0.0, 50.0 * _inputs(name, 5, LEAD)[0]).astype(np.float32)
  # The mean over real tokens, loss.sum() / where.sum(), and its gradient grad_s / where.sum().
  clean, grad, _ = (np.asarray(x) for x in evaluate(name, s, t, where))
  padded, grad_padded, _ = (np.asarray(x) for x in evaluate(name, s + junk, t - junk, where))
  np.testing.assert_allclose(padded.sum() / where.sum(), clean.sum() / where.sum(), rtol=1e-6)
  assert np.all(grad_padded[~where] == 0) and np.all(grad[~where] == 0)
  np.testing.assert_allclose(grad_padded[where], grad[where], rtol=1e-5, atol=1e-7)
  real = loss(name, s[where], t[where])  # [6 tokens]
  np.testing.assert_allclose(clean.sum() / where.sum(), real.mean(), rtol=1e-6)


# --- extreme and low-precision inputs --------------------------------------------------------


@pytest.mark.parametrize('name', [n for n in NAMES if n != 'attention_map'])
def test_finite_for_huge_logits(name):
  s, t = _inputs(name, 6, LEAD)
  s, t = 1e4 * np.sign(s), 1e4 * np.sign(t)
  value, grad_s, _ = evaluate(name, s, t)
  assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad_s))
  assert np.all(np.asarray(value) >= 0)


def test_attention_finite_when_student_ignores_a_key():
  t = np.array([[[[0.0, 1.0, 0.0]]]], np.float32)  # [1, 1, 1, 3]: keys 0 and 2 masked
  s = np.array([[[[1.0, 0.0, 0.0]]]], np.float32)  # the student puts nothing on key 1
  value, grad, _ = evaluate('attention_map', s, t)
  np.testing.assert_allclose(value, [[-np.log(losses.ATTENTION_PROB_FLOOR)]], rtol=1e-6)
  assert np.all(np.isfinite(grad))


@pytest.mark.parametrize('name', NAMES)
def test_bf16_inputs_computed_in_float32(name):
  s, t = _inputs(name, 8, LEAD)
  s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
  value, grad, _ = evaluate(name, s16, t16)
  assert value.dtype == jnp.float32
  assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))
  # Exactly the float32 computation on the rounded inputs, and close to the unrounded one.
  up = loss(name, np.asarray(s16, np.float32), np.asarray(t16, np.float32))
  np.testing.assert_allclose(value, up, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(value, loss(name, s, t), rtol=5e-2, atol=2e-2)


# --- top-k -----------------------------------------------------------------------------------


def test_teacher_topk():
  t = np.random.default_rng(9).normal(size=(2, 3, V)).astype(np.float32)
  logp, idx = jax.jit(losses.teacher_topk, static_argnums=1)(t, K, temperature=TEMP)
  assert logp.shape == idx.shape == (2, 3, K) and idx.dtype == jnp.int32
  full = _log_softmax(t / TEMP)
  np.testing.assert_array_equal(idx, np.argsort(-full, axis=-1)[..., :K])
  np.testing.assert_allclose(logp, np.take_along_axis(full, np.asarray(idx), -1), rtol=1e-6)
  for k in [0, V + 1]:
    with pytest.raises(ValueError, match='k must be'):
      losses.teacher_topk(t, k)


@pytest.mark.parametrize('scale', [2.0, 1e4])
def test_topk_with_every_class_equals_full_loss(scale):
  s, t = _inputs('topk', 10, LEAD, scale=scale)
  for temperature in [1.0, 3.0]:
    topk, grad_topk, _ = evaluate('topk', s, t, temperature=temperature, k=V)
    full, grad_full, _ = evaluate('distillation', s, t, temperature=temperature)
    np.testing.assert_allclose(topk, full, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(grad_topk))
    np.testing.assert_allclose(grad_topk, grad_full, rtol=1e-5, atol=1e-5)


def test_topk_is_a_coarsening_of_the_full_kl():
  # Merging classes into one bucket can only lower a KL (data-processing inequality); the top
  # k + 1 partition refines the top-k one, so the loss also grows with k up to the full KL.
  s, t = _inputs('topk', 11, LEAD, scale=1.5)
  # k = K and V reuse `evaluate`'s compilations; the others need only a forward pass.
  by_k = [forward('topk', s, t, k=1), loss('topk', s, t), forward('topk', s, t, k=V - 1)]
  by_k = np.stack(by_k + [loss('topk', s, t, k=V)])  # k = 1, K, V - 1, V: [4, B, T]
  full = np.asarray(loss('distillation', s, t))
  assert np.all(by_k - full <= 1e-6)
  assert np.all(np.diff(by_k, axis=0) >= -1e-6)
  assert np.all(by_k[1] < full)  # a strict coarsening loses something
  np.testing.assert_allclose(by_k[-1], full, rtol=1e-5, atol=1e-6)


def test_topk_by_hand():
  s = np.array([1.0, 0.0, -1.0, 2.0], np.float32)
  t = np.array([0.0, 3.0, 1.0, -2.0], np.float32)
  temp = 2.0
  p, q = _softmax(t / temp), _softmax(s / temp)
  # k = 2: the teacher's top classes are 1 and 2; classes 0 and 3 form the remainder.
  pb = np.array([p[1], p[2], p[0] + p[3]])
  qb = np.array([q[1], q[2], q[0] + q[3]])
  expected = temp**2 * (pb * np.log(pb / qb)).sum()
  _, idx = losses.teacher_topk(t, 2, temperature=temp)
  np.testing.assert_array_equal(idx, [1, 2])
  got = forward('topk', s, t, temperature=temp, k=2)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


# --- hand-computed values --------------------------------------------------------------------


def test_reverse_kl_by_hand():
  s = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]], np.float32)
  t = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
  temp = 2.0
  q, p = _softmax(s / temp), _softmax(t / temp)
  expected = temp**2 * (q * np.log(q / p)).sum(-1)
  got = forward('reverse_kl', s, t, temperature=temp)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(got, forward('distillation', s, t, temperature=temp), rtol=1e-2)


def test_logit_mse_by_hand():
  s = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
  t = np.array([[1.0, 0.0, 4.0], [5.0, 5.0, 5.0]], np.float32)
  np.testing.assert_allclose(forward('logit_mse', s, t), [(0 + 4 + 1) / 3, 25.0], rtol=1e-6)


def test_hint_by_hand():
  x = np.array([[1.0, 2.0], [0.0, -1.0]], np.float32)  # [2, Ds=2]
  w = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], np.float32)  # [Ds=2, Dt=3]
  b = np.array([0.5, 0.0, 0.0], np.float32)
  h = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], np.float32)  # [2, Dt=3]
  # x @ w + b = [[1.5, 2, 0], [0.5, -1, 1]]
  expected = [(0.25 + 1 + 1) / 3, (0.25 + 1 + 1) / 3]
  f = lambda *a: losses.hint_loss(*a).sum()  # noqa: E731
  value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))(x, h, w, b)
  np.testing.assert_allclose(losses.hint_loss(x, h, w, b), expected, rtol=1e-6)
  np.testing.assert_allclose(value, sum(expected), rtol=1e-6)
  # Gradients reach the student features, the kernel and the bias, never the teacher.
  r = x @ w + b - h  # residual [2, Dt]
  np.testing.assert_allclose(grads[0], 2 / 3 * r @ w.T, rtol=1e-6)
  np.testing.assert_allclose(grads[2], 2 / 3 * x.T @ r, rtol=1e-6)
  np.testing.assert_allclose(grads[3], 2 / 3 * r.sum(0), rtol=1e-6)
  assert np.all(np.asarray(grads[1]) == 0)
  with pytest.raises(ValueError, match='kernel'):
    losses.hint_loss(x, h, w.T)


def test_attention_map_by_hand():
  # Teacher [1, 2 heads, 1 query, 3 keys]; key 2 masked (probability 0) in both heads.
  t = np.array([[[[0.5, 0.5, 0.0]], [[0.9, 0.1, 0.0]]]], np.float32)
  s1 = np.array([[[[0.6, 0.3, 0.1]]]], np.float32)  # one student head: teacher heads averaged
  a = np.array([0.7, 0.3])  # grouped teacher row
  expected = (a * np.log(a / s1[0, 0, 0, :2])).sum()
  np.testing.assert_allclose(forward('attention_map', s1, t), [[expected]], rtol=1e-5)
  # Two student heads: matched one to one, KL averaged over heads.
  s2 = np.array([[[[0.6, 0.3, 0.1]], [[0.8, 0.2, 0.0]]]], np.float32)
  kl = [(t[0, h, 0, :2] * np.log(t[0, h, 0, :2] / s2[0, h, 0, :2])).sum() for h in range(2)]
  np.testing.assert_allclose(forward('attention_map', s2, t), [[np.mean(kl)]], rtol=1e-5)
  with pytest.raises(ValueError, match='attention maps'):
    losses.attention_map_loss(s2, t[..., :2])


# --- transforms ------------------------------------------------------------------------------


def test_jit_and_vmap():
  # Every loss vmapped over the batch axis, in one compilation, against `evaluate` (jitted).
  where = np.array([[True, False, True, True], [True, True, False, False], [False] * 4])
  inputs = {name: _inputs(name, 12, LEAD) for name in NAMES}

  @jax.jit
  def vmapped(inputs):
    per_example = lambda name, s, t, w: _loss(name, s, t, w)  # noqa: E731
    return {n: jax.vmap(functools.partial(per_example, n))(*inputs[n], where) for n in NAMES}

  got = vmapped(inputs)
  for name in NAMES:
    np.testing.assert_allclose(got[name], loss(name, *inputs[name], where), rtol=1e-6)


def test_rejects_non_positive_temperature():
  x = np.zeros((1, V), np.float32)
  logp, idx = np.zeros((1, 2), np.float32), np.zeros((1, 2), np.int32)
  for bad in [0.0, -1.0, np.float32(0.0), float('nan')]:
    with pytest.raises(ValueError, match='temperature'):
      losses.reverse_kl_loss(x, x, temperature=bad)
    with pytest.raises(ValueError, match='temperature'):
      losses.teacher_topk(x, 2, temperature=bad)
    with pytest.raises(ValueError, match='temperature'):
      losses.topk_distillation_loss(x, logp, idx, temperature=bad)
    with pytest.raises(ValueError, match='temperature'):
      losses.distillation_loss(x, x, temperature=bad)
