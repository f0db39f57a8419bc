"""Pure per-example losses (optax style): callers reduce, `where=` masks.

Every loss takes any leading dims ([B], [B, T], ...) and returns one value per element of them,
computed in float32 whatever the input dtype. `where=` is a boolean mask shaped like the leading
dims; masked elements give exactly 0 (and no gradient).

Distillation losses put the teacher under `jax.lax.stop_gradient`: no gradient reaches it, so a
frozen teacher's forward pass can sit inside the same `jax.grad` as the student's.

Token-level distillation of sequence models is nothing special: pass [B, T, V] student and
teacher logits with `where=` the [B, T] token mask (False on padding). Each loss then returns
[B, T], zero on padding, and the caller reduces, e.g. `loss.sum() / where.sum()` for a mean
over real tokens. The same holds for `hint_loss` on [B, T, D] hidden states.

Legend: B batch (any leading dims), T length, C classes (V for a vocabulary), K top-k size,
Ds / Dt student / teacher width, Hs / Ht student / teacher heads, S attended keys.
"""

import jax
import jax.numpy as jnp
import optax

from bigjax.outputs import PADDED_LOGIT, LazyLogits

# Floor on student attention probabilities inside the log of `attention_map_loss`: a key the
# student ignores but the teacher attends to costs at most -log(1e-9) ~ 20.7 nats per unit of
# teacher mass instead of inf.
ATTENTION_PROB_FLOOR = 1e-9


def _masked(loss: jax.Array, where: jax.Array | None) -> jax.Array:
  return loss if where is None else jnp.where(where, loss, 0.0)


def _check_temperature(temperature: float) -> None:
  # A traced temperature (one swept inside jit) cannot be checked; any concrete number can.
  if not isinstance(temperature, jax.core.Tracer) and not temperature > 0:
    raise ValueError(f'temperature must be positive, got {temperature}')


def _teacher(x: jax.Array) -> jax.Array:
  return jax.lax.stop_gradient(jnp.asarray(x).astype(jnp.float32))


def _kl_terms(p_logp: jax.Array, q_logp: jax.Array) -> jax.Array:
  """Elementwise p * (log p - log q) with 0 where p == 0 (0 log 0 = 0), NaN-free gradients.

  `p_logp` may hold -inf (zero mass); the double `where` keeps its unselected branch finite so
  the backward pass multiplies zeros by finite numbers only.
  """
  has_mass = p_logp > -jnp.inf
  safe_p_logp = jnp.where(has_mass, p_logp, 0.0)
  safe_q_logp = jnp.where(has_mass, q_logp, 0.0)
  return jnp.where(has_mass, jnp.exp(safe_p_logp) * (safe_p_logp - safe_q_logp), 0.0)


def _real_columns(logits: jax.Array) -> jax.Array:
  """[..., C] -> [..., C] bool: the columns that are not vocabulary padding (PADDED_LOGIT)."""
  return logits > PADDED_LOGIT / 2


def _cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
  """float32 [..., C] logits and [...] integer labels -> [...] cross-entropy.

  Label smoothing spreads its mass over the real columns only: padded vocabulary columns
  (PADDED_LOGIT) are not classes and get no target mass (else each would add e / C * 1e9).
  """
  logp = jax.nn.log_softmax(logits)  # [..., C]
  # A compare-and-sum, not a gather: it fuses with the softmax, and a label outside [0, C)
  # scores 0 as a one-hot target would.
  hit = jnp.arange(logits.shape[-1]) == labels[..., None]  # [..., C]
  loss = -jnp.sum(jnp.where(hit, logp, 0.0), -1)
  if label_smoothing:
    real = _real_columns(logits)
    uniform = -jnp.sum(jnp.where(real, logp, 0.0), -1) / jnp.sum(real, -1)  # [...]
    loss = (1.0 - label_smoothing) * loss + label_smoothing * uniform
  return loss


def softmax_cross_entropy(
  logits: jax.Array | LazyLogits,
  labels: jax.Array,
  *,
  label_smoothing: float = 0.0,
  where: jax.Array | None = None,
) -> jax.Array:
  """[..., C] logits and [...] integer labels (or [..., C] probabilities) -> [...] loss.

  -sum_c y_c log softmax(z)_c.
  Legend: z logits, y the target distribution (one-hot of the label, or given), C classes.
  With `label_smoothing` e the target is (1 - e) * onehot + e / C (Szegedy et al., 2016),
  C counting the real classes only (not padded vocabulary columns, see `_cross_entropy`).
  `LazyLogits` (chunked cross-entropy) are scored chunk by chunk and never materialised.
  """
  if isinstance(logits, LazyLogits):
    loss = logits.map_chunks(lambda z, y: _cross_entropy(z, y, label_smoothing), labels)
    return _masked(loss, where)
  logits = logits.astype(jnp.float32)
  if labels.ndim == logits.ndim:  # already a distribution (mixup / cutmix)
    targets = labels.astype(jnp.float32)
    if label_smoothing:
      targets = targets * (1.0 - label_smoothing) + label_smoothing / logits.shape[-1]
    return _masked(optax.softmax_cross_entropy(logits, targets), where)
  return _masked(_cross_entropy(logits, labels, label_smoothing), where)


def cross_entropy_and_argmax(
  logits: jax.Array | LazyLogits, labels: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """[..., C] logits and [...] integer labels -> ([...] cross-entropy, [...] argmax class),
  in one pass over `LazyLogits` (what token metrics need, without a second chunked pass)."""
  if isinstance(logits, LazyLogits):
    return logits.map_chunks(lambda z, y: (_cross_entropy(z, y, 0.0), jnp.argmax(z, -1)), labels)
  return softmax_cross_entropy(logits, labels), jnp.argmax(logits, -1)


def contrastive_loss(logits: jax.Array, *, where: jax.Array | None = None) -> jax.Array:
  """Symmetric InfoNCE (CLIP; Radford et al., 2021, Figure 3), per pair: [B, B] -> [B].

  (CE(row i, i) + CE(column i, i)) / 2 = (lse_j z_ij - z_ii + lse_j z_ji - z_ii) / 2.
  Legend: z logits, row i image i against every text j, column i text i against every
  image; pair i matches at the diagonal, every other entry is a negative. The mean over
  pairs is the paper's loss, (CE over images + CE over texts) / 2. With `where` [B] the
  masked pairs (padding) are no negatives of any row or column and give 0. Under jit with
  the batch sharded over devices, [B, B] spans the global batch: every device's pairs are
  negatives of every other's.
  """
  z = logits.astype(jnp.float32)
  n = z.shape[-1]
  if z.ndim != 2 or z.shape[0] != n:
    raise ValueError(f'contrastive logits must be square [B, B], got {list(z.shape)}')
  diag = jnp.diagonal(z)  # [B]
  rows, cols = z, z
  if where is not None:
    keep = where[None, :] | jnp.eye(n, dtype=bool)  # [i, j]: text j is a negative of row i
    rows = jnp.where(keep, z, -jnp.inf)
    cols = jnp.where(keep.T, z, -jnp.inf)  # [i, j]: image i is a negative of column j
  image_to_text = jax.nn.logsumexp(rows, axis=1) - diag  # [B]
  text_to_image = jax.nn.logsumexp(cols, axis=0) - diag  # [B]
  return _masked(0.5 * (image_to_text + text_to_image), where)


# PixelCNN++'s floor on a logistic's log-scale, and the bin mass under which its log is read
# from the density at the bin centre instead (the difference of two CDFs loses precision).
LOGISTIC_MIN_LOG_SCALE = -7.0
LOGISTIC_MIN_BIN_MASS = 1e-5


def _logistic_mixture_bin_log_prob(mixture: jax.Array, bins: jax.Array, num_bins: int):
  """log P(bin) [...] for mixture parameters [..., 3K] and integer bins [...] (broadcast)."""
  mixture = mixture.astype(jnp.float32)
  logit_probs, means, log_scales = jnp.split(mixture, 3, axis=-1)  # [..., K] each
  log_scales = jnp.maximum(log_scales, LOGISTIC_MIN_LOG_SCALE)
  half = 1.0 / (num_bins - 1)  # half a bin on [-1, 1]
  bins = jnp.asarray(bins)
  x = (2.0 * bins.astype(jnp.float32) / (num_bins - 1) - 1.0)[..., None]  # [..., 1]
  centred = x - means  # [..., K]
  inv_scale = jnp.exp(-log_scales)
  plus_in = inv_scale * (centred + half)
  min_in = inv_scale * (centred - half)
  log_cdf_plus = plus_in - jax.nn.softplus(plus_in)  # log sigmoid: the bin from -inf (bin 0)
  log_sf_min = -jax.nn.softplus(min_in)  # log(1 - sigmoid): the bin to +inf (the last)
  mass = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
  mid_in = inv_scale * centred
  log_density_mid = mid_in - log_scales - 2.0 * jax.nn.softplus(mid_in) + jnp.log(2.0 * half)
  inner = jnp.where(
    mass > LOGISTIC_MIN_BIN_MASS, jnp.log(jnp.maximum(mass, 1e-12)), log_density_mid
  )
  first, last = (bins == 0)[..., None], (bins == num_bins - 1)[..., None]
  log_p = jnp.where(first, log_cdf_plus, jnp.where(last, log_sf_min, inner))  # [..., K]
  return jax.nn.logsumexp(log_p + jax.nn.log_softmax(logit_probs, axis=-1), axis=-1)


def discretized_logistic_mixture_log_probs(mixture: jax.Array, num_bins: int = 256) -> jax.Array:
  """The log-probabilities [..., V] of the V = num_bins levels under a discretised mixture
  of logistics (Salimans et al., 2017, PixelCNN++, eq. 2), from its parameters [..., 3K]:
  K mixture logits, K means and K log-scales (floored at -7), on [-1, 1] where level v sits
  at 2v / (V - 1) - 1. Level v gets the mixture's mass over its bin, +-1 / (V - 1) around
  it; the first and the last bins reach to -inf and +inf, so the V masses sum to 1. A bin
  with under 1e-5 of a component's mass reads that component's density at the bin centre
  times the bin width (PixelCNN++'s guard against cancellation)."""
  bins = jnp.arange(num_bins)  # [V]
  expanded = mixture[..., None, :]  # [..., 1, 3K]: broadcast over the levels
  return _logistic_mixture_bin_log_prob(expanded, bins, num_bins)


def discretized_logistic_mixture_nll(
  mixture: jax.Array,
  targets: jax.Array,
  *,
  num_bins: int = 256,
  where: jax.Array | None = None,
) -> jax.Array:
  """Per-sample negative log-likelihood (nats) of integer `targets` [...] in [0, num_bins)
  under the discretised logistic mixture with parameters `mixture` [..., 3K] (see
  `discretized_logistic_mixture_log_probs`, whose entry at the target it equals) -> [...]."""
  return _masked(-_logistic_mixture_bin_log_prob(mixture, targets, num_bins), where)


def distillation_loss(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array | None = None,
  *,
  temperature: float = 1.0,
  alpha: float = 1.0,
  where: jax.Array | None = None,
) -> jax.Array:
  """Knowledge distillation (Hinton et al., 2015), per example: [..., C] x2 -> [...].

  alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))
    + (1 - alpha) * CE(student, labels).
  Legend: T temperature, KL(p || q) = sum_c p_c (log p_c - log q_c), CE at temperature 1.
  The T^2 factor keeps the soft-target gradients on the same scale as T changes: the gradient
  w.r.t. the student logits is T * (softmax(s/T) - softmax(t/T)), which tends to
  ((s - mean s) - (t - mean t)) / C for T large against the logit scale.
  Mean-seeking: the student is pushed to cover every class the teacher gives mass to.
  The teacher gets no gradient.
  """
  _check_temperature(temperature)
  teacher_logits = _teacher(teacher_logits)
  student_logits = student_logits.astype(jnp.float32)
  t_logp = jax.nn.log_softmax(teacher_logits / temperature)
  s_logp = jax.nn.log_softmax(student_logits / temperature)
  kl = jnp.sum(_kl_terms(t_logp, s_logp), axis=-1)
  loss = alpha * temperature**2 * kl
  if labels is not None and alpha < 1.0:
    loss = loss + (1.0 - alpha) * softmax_cross_entropy(student_logits, labels)
  elif labels is None and alpha < 1.0:
    raise ValueError('alpha < 1 mixes in the hard-label loss: pass labels=')
  return _masked(loss, where)


def reverse_kl_loss(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  temperature: float = 1.0,
  where: jax.Array | None = None,
) -> jax.Array:
  """Reverse KL distillation, per example: [..., C] x2 -> [...].

  T^2 * KL(softmax(student/T) || softmax(teacher/T)).
  Legend: T temperature, KL(q || p) = sum_c q_c (log q_c - log p_c).
  Mode-seeking (as in MiniLLM, Gu et al., 2024): the student is penalised for mass where the
  teacher has little, not for missing some of the teacher's modes. The T^2 factor plays the
  same role as in `distillation_loss`. The teacher gets no gradient.
  """
  _check_temperature(temperature)
  t_logp = jax.nn.log_softmax(_teacher(teacher_logits) / temperature)
  s_logp = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  kl = jnp.sum(_kl_terms(s_logp, t_logp), axis=-1)
  return _masked(temperature**2 * kl, where)


def logit_mse_loss(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  where: jax.Array | None = None,
) -> jax.Array:
  """Logit matching (Ba & Caruana, 2014), per example: [..., C] x2 -> [...].

  mean_c (s_c - t_c)^2.
  Legend: s student logits, t teacher logits, C classes.
  Plain MSE on raw logits: no centring, so a constant shift between the two sides (which
  softmax ignores) is still penalised. This is the T -> infinity limit of
  `distillation_loss` on centred logits, up to a factor 2 (Hinton et al., 2015, section 2.1).
  The teacher gets no gradient.
  """
  diff = student_logits.astype(jnp.float32) - _teacher(teacher_logits)
  return _masked(jnp.mean(jnp.square(diff), axis=-1), where)


def teacher_topk(
  teacher_logits: jax.Array, k: int, *, temperature: float = 1.0
) -> tuple[jax.Array, jax.Array]:
  """The teacher's k most likely classes: [..., C] -> ([..., K] float32, [..., K] int32).

  Returns (log_softmax(t / T) at the top-k classes, their indices), most likely first.
  Legend: t teacher logits, T temperature, K = k.
  This is what a precomputed teacher store keeps for a large vocabulary (K numbers per token
  instead of V); feed it to `topk_distillation_loss` with the same temperature. `k` must be a
  Python int (static under jit). The outputs carry no gradient.
  """
  _check_temperature(temperature)
  num_classes = teacher_logits.shape[-1]
  if not 1 <= k <= num_classes:
    raise ValueError(f'k must be in [1, {num_classes}] (the number of classes), got {k}')
  logp = jax.nn.log_softmax(_teacher(teacher_logits) / temperature)
  values, indices = jax.lax.top_k(logp, k)
  return jax.lax.stop_gradient(values), indices.astype(jnp.int32)


def _log1mexp(x: jax.Array) -> jax.Array:
  """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler, 2012); -inf at x = 0."""
  x = jnp.minimum(x, 0.0)
  near_zero = x > -jnp.log(2.0)
  return jnp.where(
    near_zero,
    jnp.log(-jnp.expm1(jnp.where(near_zero, x, -1.0))),
    jnp.log1p(-jnp.exp(jnp.where(near_zero, -1.0, x))),
  )


def topk_distillation_loss(
  student_logits: jax.Array,
  teacher_topk_logprobs: jax.Array,
  teacher_topk_indices: jax.Array,
  *,
  temperature: float = 1.0,
  where: jax.Array | None = None,
) -> jax.Array:
  """Distillation from a teacher's top-k log-probabilities: [..., C], [..., K] x2 -> [...].

  T^2 * KL(p || q) over K + 1 buckets: the teacher's top-k classes and one remainder bucket.
    p_i = exp(teacher_topk_logprobs_i),  p_rest = 1 - sum_i p_i,
    q_i = softmax(s/T)_{idx_i},          q_rest = 1 - sum_i q_i (the student's mass elsewhere).
  Legend: s student logits, T temperature (the one `teacher_topk` used), idx the top-k indices.
  log q_rest is a logsumexp of the student's log-probs with the top-k positions at -inf, exact
  even when q_rest underflows 1 - sum; log p_rest is log(1 - exp(logsumexp(logprobs))). A bucket
  with no teacher mass contributes exactly 0, so with K = C (every class kept, no remainder) this
  equals `distillation_loss(..., alpha=1)`, gradients included. Merging classes into one bucket
  can only lower a KL (data-processing inequality): the result is <= the full KL, and the gap is
  the part of the full KL inside the remainder. Indices must be distinct (as `teacher_topk`
  gives). Log-probs stored in low precision may sum past 1: the teacher remainder is then 0.
  The teacher gets no gradient.
  """
  _check_temperature(temperature)
  t_logp = _teacher(teacher_topk_logprobs)  # [..., K]
  s_logp = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)  # [..., C]
  s_top = jnp.take_along_axis(s_logp, teacher_topk_indices, axis=-1)  # [..., K]
  in_top = jnp.put_along_axis(
    jnp.zeros(s_logp.shape, bool), teacher_topk_indices, True, axis=-1, inplace=False
  )  # [..., C]
  has_rest = ~jnp.all(in_top, axis=-1)  # [...]
  # A row with every class in the top-k has no remainder; feed logsumexp finite stand-ins there
  # so its gradient stays finite (it is multiplied by zero teacher mass below).
  rest_logits = jnp.where(in_top & has_rest[..., None], -jnp.inf, s_logp)
  s_rest = jax.nn.logsumexp(rest_logits, axis=-1)  # [...]
  t_rest = _log1mexp(jax.nn.logsumexp(t_logp, axis=-1))  # [...], -inf when no remainder
  t_rest = jnp.where(has_rest, t_rest, -jnp.inf)
  kl = jnp.sum(_kl_terms(t_logp, s_top), axis=-1) + _kl_terms(t_rest, s_rest)
  return _masked(temperature**2 * kl, where)


def hint_loss(
  student_features: jax.Array,
  teacher_features: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None = None,
  *,
  where: jax.Array | None = None,
) -> jax.Array:
  """FitNets hints (Romero et al., 2015), per example: [..., Ds], [..., Dt] -> [...].

  mean_d ((x W + b)_d - h_d)^2.
  Legend: x student features [..., Ds], W `kernel` [Ds, Dt], b `bias` [Dt] (optional),
  h teacher features [..., Dt].
  The regressor (W, b) is a learned parameter of the student side: it maps the student's width
  to the teacher's and is trained with it, then thrown away. Gradient flows into x, W and b;
  none reaches the teacher.
  """
  if kernel.shape != (student_features.shape[-1], teacher_features.shape[-1]):
    raise ValueError(
      f'kernel must be [Ds, Dt] = [{student_features.shape[-1]}, '
      f'{teacher_features.shape[-1]}], got {list(kernel.shape)}'
    )
  proj = jnp.einsum(
    '...s,st->...t', student_features.astype(jnp.float32), kernel.astype(jnp.float32)
  )  # [..., Dt]
  if bias is not None:
    proj = proj + bias.astype(jnp.float32)
  diff = proj - _teacher(teacher_features)
  return _masked(jnp.mean(jnp.square(diff), axis=-1), where)


def attention_map_loss(
  student_attention: jax.Array,
  teacher_attention: jax.Array,
  *,
  where: jax.Array | None = None,
) -> jax.Array:
  """Attention-map distillation (MiniLM, Wang et al., 2020): [B, Hs, T, S], [B, Ht, T, S] -> [B, T].

  mean_h sum_s a_{h,t,s} (log a_{h,t,s} - log max(b_{h,t,s}, 1e-9)).
  Legend: a teacher attention probabilities, b student's (rows sum to 1 over S), h over the
  heads after matching: when Ht % Hs == 0 the teacher's heads are averaged in Hs contiguous
  groups of Ht / Hs (group g = teacher heads g*Ht/Hs ... (g+1)*Ht/Hs - 1) and matched to the
  student's heads one to one; otherwise each side is averaged over all its heads (one map
  each). B may be any leading dims.
  KL(teacher row || student row) per query position. Keys with zero teacher probability (masked
  keys) contribute 0; a student probability below ATTENTION_PROB_FLOOR (1e-9) is floored inside
  the log, so a key the teacher attends to and the student ignores costs a finite amount (and
  no gradient flows through a floored probability). `where` [B, T] masks query rows.
  The teacher gets no gradient.
  """
  student = student_attention.astype(jnp.float32)
  teacher = _teacher(teacher_attention)
  if student.ndim < 3 or (student.shape[:-3], student.shape[-2:]) != (
    teacher.shape[:-3],
    teacher.shape[-2:],
  ):
    raise ValueError(
      'attention maps must be [B, Hs, T, S] and [B, Ht, T, S] (same B, T, S), got '
      f'{list(student.shape)} and {list(teacher.shape)}'
    )
  hs, ht = student.shape[-3], teacher.shape[-3]
  if ht % hs == 0:
    grouped = teacher.shape[:-3] + (hs, ht // hs) + teacher.shape[-2:]
    teacher = teacher.reshape(grouped).mean(axis=-3)  # [B, Hs, T, S]
  else:
    student = student.mean(axis=-3, keepdims=True)  # [B, 1, T, S]
    teacher = teacher.mean(axis=-3, keepdims=True)  # [B, 1, T, S]
  t_logp = jnp.log(teacher)  # -inf on masked keys: _kl_terms gives them 0
  s_logp = jnp.log(jnp.maximum(student, ATTENTION_PROB_FLOOR))
  kl = jnp.sum(_kl_terms(t_logp, s_logp), axis=-1)  # [B, H, T]
  return _masked(kl.mean(axis=-2), where)
