"""Model FLOPs of a training step and the peak FLOP/s of a device: what MFU is made of.

One counter serves the training log (`bigjax.train.loop`) and the benchmark (`bench/suite.py`,
whose PyTorch peers are charged the bigjax count of the same shapes), so their throughputs
and MFU compare. It traces the model's forward with `jax.make_jaxpr` at abstract shapes (no
compilation, no arrays) and walks the jaxpr:

  dot_general            2 * M * N * K (batch dimensions included in M * N)
  conv_general_dilated   2 * output elements * kernel spatial size * input features / groups
  fused attention        4 * B * H * T * S * K (QK^T and PV) of cuDNN's primitive
  sub-jaxprs             pjit / closed calls, custom_jvp / custom_vjp, remat: their body;
                         cond: the costliest branch; scan: body x length; while: body once

Elementwise work (norms, softmax, activations) is not counted, and causal attention counts
as full: the usual convention for MFU (Chowdhery et al., 2022, appendix B). A training step
is 3 x the forward (the backward costs twice the forward); rematerialised recomputation is
not counted, so MFU measures useful work only.
"""

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# Dense (no sparsity) peak TFLOP/s per device from NVIDIA's spec sheets: (bf16 / fp16, fp32
# matmuls, which run as TF32 on these GPUs under JAX's and torch autocast's defaults). The
# first key found in `device_kind` wins, so the longer names come first.
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
  'H200 NVL': (835.5, 417.5),
  'H200': (989.5, 494.5),  # H200 SXM
  'H100 NVL': (835.5, 417.5),
  'H100 PCIe': (756.0, 378.0),
  'H100': (989.5, 494.5),  # H100 SXM
  'A100': (312.0, 156.0),
}
_HALF = ('bfloat16', 'float16')


def _aval(var) -> Any:
  return var.aval


def _size(shape) -> int:
  return int(math.prod(shape))


def _sub_jaxprs(value) -> list:
  """The jaxprs inside one equation parameter (a jaxpr, a closed jaxpr or a tuple of them)."""
  if hasattr(value, 'eqns'):
    return [value]
  if hasattr(value, 'jaxpr') and hasattr(value, 'consts'):
    return [value.jaxpr]
  if isinstance(value, (tuple, list)):
    return [j for v in value for j in _sub_jaxprs(v)]
  return []


def _attention_flops(eqn) -> int:
  """cuDNN's fused attention: q [B, T, H, K] and k [B, S, H, K] (or BNTH: [B, H, T, K])."""
  q, k = _aval(eqn.invars[0]), _aval(eqn.invars[1])
  layout = eqn.params.get('layout', 0)
  layout = getattr(layout, 'value', layout)
  s = k.shape[2] if layout == 1 else k.shape[1]
  return 4 * _size(q.shape) * int(s)


def count_jaxpr(jaxpr) -> int:
  """Matmul and convolution FLOPs of one evaluation of `jaxpr` (a Jaxpr or ClosedJaxpr)."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = _aval(eqn.invars[0])
      k = _size(lhs.shape[d] for d in contract)
      total += 2 * _size(_aval(eqn.outvars[0]).shape) * k
    elif name == 'conv_general_dilated':
      rhs = _aval(eqn.invars[1])
      out_feature_dim = eqn.params['dimension_numbers'].rhs_spec[0]
      per_output = _size(rhs.shape) // rhs.shape[out_feature_dim]  # spatial * in / groups
      total += 2 * _size(_aval(eqn.outvars[0]).shape) * per_output
    elif name.startswith('dot_product_attention') and 'fwd' in name:
      total += _attention_flops(eqn)
    elif name == 'cond':
      total += max((count_jaxpr(b) for b in eqn.params['branches']), default=0)
    elif name == 'scan':
      total += int(eqn.params['length']) * count_jaxpr(eqn.params['jaxpr'])
    elif name == 'while':
      total += count_jaxpr(eqn.params['body_jaxpr'])
    else:  # calls, custom derivatives, remat, shard_map: the body as written
      total += sum(count_jaxpr(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
  return total


def forward_flops(fn: Callable, *args) -> int:
  """FLOPs of `fn(*args)`, traced at the shapes of `args` (arrays or ShapeDtypeStructs)."""
  return count_jaxpr(jax.make_jaxpr(fn)(*args))


def _abstract(x) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype)


def train_step_flops(model, inputs: tuple) -> int:
  """Model FLOPs of one training step of `model` on `inputs` (the model's positional inputs
  for one whole update batch, arrays or shape structs): 3 x the training-mode forward."""
  inputs = tuple(_abstract(x) for x in inputs)
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)

  def init(rng, inputs):
    return model.init({'params': rng, 'dropout': rng}, *inputs, train=False)

  variables = jax.eval_shape(init, key, inputs)

  def forward(variables, inputs, rng):
    return model.apply(variables, *inputs, train=True, rngs={'dropout': rng}, mutable=True)

  return 3 * forward_flops(forward, variables, inputs, key)


def tokens_per_example(inputs: tuple) -> int:
  """Positions of the first token-id input [B, T] (LM, seq2seq source, masked LM, text
  classification); 0 when the model reads no token ids (images)."""
  for x in inputs:
    if np.ndim(x) == 2 and jnp.issubdtype(x.dtype, jnp.integer):
      return int(np.shape(x)[1])
  return 0


@functools.cache
def measured_peak(device=None, n: int = 1024, tries: int = 5) -> float:
  """The best FLOP/s of a float32 n^3 matmul on `device` over a few tries, measured once per
  process: the peak of a device without a spec-sheet number (a CPU). On a loaded machine it
  reads low, so MFU reads high (it may exceed 1)."""
  device = device or jax.devices()[0]
  x = jax.device_put(jnp.ones((n, n), jnp.float32), device)
  matmul = jax.jit(jnp.dot)
  matmul(x, x).block_until_ready()  # compile
  best = math.inf
  for _ in range(tries):
    t = time.perf_counter()
    matmul(x, x).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best


def peak_flops(
  compute_dtype: str = 'float32', *, override_tflops: float = 0.0, device=None
) -> tuple[float, str]:
  """(peak FLOP/s of one device, where the number comes from).

  `override_tflops` > 0 wins (train.peak_tflops); else the spec sheet of a known GPU
  (`PEAK_TFLOPS`, bf16 / fp16 or TF32 by `compute_dtype`); else `measured_peak`.
  """
  if override_tflops > 0:
    return float(override_tflops) * 1e12, 'train.peak_tflops'
  device = device or jax.devices()[0]
  kind = getattr(device, 'device_kind', '')
  for name, (half, single) in PEAK_TFLOPS.items():
    if name in kind:
      which = 'bf16' if compute_dtype in _HALF else 'tf32'
      return (half if compute_dtype in _HALF else single) * 1e12, f'{kind} {which} spec sheet'
  return measured_peak(device), f'measured float32 matmul on {kind or device.platform}'


def total_peak_flops(compute_dtype: str = 'float32', *, override_tflops: float = 0.0):
  """(peak FLOP/s of the whole run, where it comes from): the per-device peak times the
  devices, except a measured one, which already covers every core a process has (fake CPU
  devices share them), so it counts once per process."""
  peak, source = peak_flops(compute_dtype, override_tflops=override_tflops)
  measured = source.startswith('measured')
  return peak * (jax.process_count() if measured else jax.device_count()), source


@dataclasses.dataclass(frozen=True)
class StepCost:
  """What one training step does, for throughput and MFU at the log steps.

  flops: model FLOPs of one step over the global batch; examples: the global batch;
  tokens: tokens per step (0 for none); peak: FLOP/s of all devices together.
  """

  flops: float
  examples: int
  tokens: int
  peak: float

  def rates(self, steps: int, seconds: float) -> dict[str, float]:
    """examples_per_sec, tokens_per_sec (with a token axis), tflops_per_sec and mfu of
    `steps` steps that took `seconds`."""
    per_sec = steps / max(seconds, 1e-12)
    result = {'examples_per_sec': self.examples * per_sec}
    if self.tokens:
      result['tokens_per_sec'] = self.tokens * per_sec
    result['tflops_per_sec'] = self.flops * per_sec / 1e12
    result['mfu'] = self.flops * per_sec / self.peak
    return result
