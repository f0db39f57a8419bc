"""N identical blocks in a row, unrolled or under `nn.scan`, optionally rematerialised.

Legend: L layers, B batch.

`stack_blocks` is called inside a model's `nn.compact` method and adds no level to the
names. Unrolled (`scan=False`), the blocks are submodules `block_0` ... `block_{L-1}` of
that model, with the block's own parameter names below them. Scanned (`scan=True`), one block
is compiled once and run L times by `nn.scan`: its parameters live under `layers/` with a
leading [L] axis (`layers/attn/query/kernel` [L, D, H, K]) and so do its caches
(`layers/attn/cached_key` [L, B, S, G, K]: the batch axis is 1, not 0). `stack_layers`
and `unstack_layers` convert parameters between the two layouts. Scanning cuts compile
time from O(L) to O(1); `remat=True` (`nn.remat`, gradient checkpointing) recomputes each
block's activations in the backward pass instead of storing them, and `remat_policy`
(REMAT_POLICIES: 'full', 'dots', 'dots_no_batch') chooses what it keeps. `collect=True` also
returns every block's output (BERT sows them as its hidden states).

Blocks with a mixture of experts return `(x, aux)`; the stack then returns the per-layer
aux dicts stacked on a leading [L] axis as an extra last element of its result.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers.blocks import BlockConfig
from bigjax.layers.partitioning import SCAN_NAME, constrain
from bigjax.typing import PyTree

# What a rematerialised block keeps from its forward pass (`jax.checkpoint_policies`):
#   full           nothing but its input; the backward pass reruns the whole block (least memory)
#   dots           every matmul output; only the elementwise ops are recomputed
#   dots_no_batch  the matmuls without batch dimensions (the projections and the MLP, not the
#                  attention's q.k and p.v products), the usual Transformer compromise
REMAT_POLICIES = {
  'full': jax.checkpoint_policies.nothing_saveable,
  'dots': jax.checkpoint_policies.dots_saveable,
  'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def checkpoint_policy(remat: bool, policy: str | None):
  """The `jax.checkpoint` policy of (`remat`, `remat_policy`), or None for no remat: a
  policy name implies remat, remat alone is 'full'."""
  if policy is None:
    return REMAT_POLICIES['full'] if remat else None
  if policy not in REMAT_POLICIES:
    raise ValueError(
      f'unknown remat_policy {policy!r}; choose one of {sorted(REMAT_POLICIES)} '
      '(or None: no remat, or full remat with remat=True)'
    )
  return REMAT_POLICIES[policy]


def _static(value) -> bool:
  return value is None or isinstance(value, (bool, int, float, str))


@functools.cache
def _layer_class(block: type[nn.Module]) -> type[nn.Module]:
  """`block` with the call convention of `nn.scan`: (x, arrays) -> (x, None).

  Python values (`causal`, `train`) become attributes, so remat and scan see only arrays.
  """

  class Layer(block):
    static: tuple = ()
    emit: bool = False  # also return the output as the scan's per-layer output

    def __call__(self, x, arrays):
      out = block.__call__(self, x, **arrays, **dict(self.static))
      y, aux = out if isinstance(out, tuple) else (out, None)  # aux: a MoE block's values
      return y, ((y if self.emit else None), aux)

  Layer.__name__ = block.__name__
  return Layer


def stack_blocks(
  x: jax.Array,
  block: type[nn.Module],
  config: BlockConfig,
  num_layers: int,
  *,
  scan: bool = False,
  remat: bool = False,
  remat_policy: str | None = None,
  decode: bool = False,
  collect: bool = False,
  **kwargs,
) -> jax.Array | tuple:
  """Runs `num_layers` blocks of class `block` (EncoderBlock, DecoderBlock) on x [B, T, D].

  Call it inside an `nn.compact` method: the blocks become submodules of that module
  (`block_{i}`, or `layers` when scanned), so the stack adds no level to the names.
  `remat_policy` (a name in REMAT_POLICIES) picks what a rematerialised block keeps; it
  implies remat. Keyword arrays (masks, the encoder output) go to every block unchanged;
  Python values (`train`, `causal`, None) too, as static arguments.
  `collect=True` returns `(x, outputs)`, the list of every block's output (scanned: the
  scan's stacked per-layer outputs, split), for models that report their hidden states.
  Blocks that return (x, aux) (mixture of experts) add the aux dict stacked over the
  layers ([L, ...] leaves) as the last element: `(x, aux)` or `(x, outputs, aux)`.
  """
  static = tuple(sorted((k, v) for k, v in kwargs.items() if _static(v)))
  arrays = {k: v for k, v in kwargs.items() if not _static(v)}
  # The stack's input (an embedding lookup) in the blocks' layout: a scan's carry keeps it.
  x = constrain(x, ('batch', 'length', 'act_embed'))
  layer = _layer_class(block)
  policy = checkpoint_policy(remat, remat_policy)
  if policy is not None:
    layer = nn.remat(layer, prevent_cse=not scan, policy=policy)
  if scan:
    layer = nn.scan(
      layer,
      variable_axes={'params': 0, 'cache': 0, 'intermediates': 0},
      split_rngs={'params': True, 'dropout': True},
      in_axes=nn.broadcast,
      length=num_layers,
    )
    x, (ys, aux) = layer(config, decode, static, collect, name=SCAN_NAME)(x, arrays)
    outputs = list(ys) if collect else None  # ys [L, B, T, D]
  else:
    outputs, auxes = [], []
    for i in range(num_layers):
      x, (_, aux) = layer(config, decode, static, name=f'block_{i}')(x, arrays)
      outputs.append(x)
      auxes.append(aux)
    aux = None if not auxes or auxes[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *auxes)
  result = (x, outputs) if collect else (x,)
  if aux is not None:
    result = (*result, aux)
  return result if len(result) > 1 else x


def stack_layers(params: PyTree, num_layers: int) -> PyTree:
  """Unrolled {'block_0': p0, ...} -> scanned {'layers': p with a leading [L] axis}.

  Other entries of `params` are kept.
  """
  blocks = [params[f'block_{i}'] for i in range(num_layers)]
  rest = {k: v for k, v in params.items() if not k.startswith('block_')}
  return {**rest, SCAN_NAME: jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)}


def unstack_layers(params: PyTree) -> PyTree:
  """The inverse of `stack_layers`."""
  stacked = params[SCAN_NAME]
  num_layers = jax.tree.leaves(stacked)[0].shape[0]
  rest = {k: v for k, v in params.items() if k != SCAN_NAME}
  blocks = {f'block_{i}': jax.tree.map(lambda x: x[i], stacked) for i in range(num_layers)}
  return {**rest, **blocks}
