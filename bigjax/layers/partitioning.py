"""Logical axis names for parameters, from one rules table keyed on the stable names.

`logical_axes(params)` returns, for every parameter, a tuple naming each of its axes
(`embed`, `heads`, `kv_heads`, `kv`, `mlp`, `vocab`, `layers`, ...; None for an axis
never sharded). A sharding rules table (logical name -> mesh axis, e.g. `mlp -> tensor`,
`embed -> fsdp`) then turns it into `PartitionSpec`s without touching any model.

Why a table rather than `nn.with_logical_partitioning` on each parameter: boxed
parameters (`nn.LogicallyPartitioned`) are not arrays. They have no `.shape`, so every
consumer (optimisers, weight decay masks, converters, checkpoint restore, parameter
counts, `jax.tree.map` over params) would have to unbox first, and a forgotten unbox is
a silent bug. Parameter names are already stable (checkpoints and converters rely on
them), so the names carry the information; the table is checked to cover every parameter
of every model (an unknown parameter raises, so a new layer cannot be left out).

Scanned stacks (`bigjax.layers.stack`) hold their blocks' parameters under `layers/`
with a leading [L] axis, named `layers`.
"""

import re

import jax

from bigjax.layers.stack import SCAN_NAME
from bigjax.typing import PyTree

Axes = tuple[str | None, ...]

# (regular expression on the '/'-joined path, axes); the first match of the parameter's rank
# wins (the experts of a `MoeBlock` share the MLP's names with a leading [E] axis).
RULES: tuple[tuple[str, Axes], ...] = (
  # attention (`MultiHeadAttention`): query [D, H, K], key/value [D, G, K], out [H, K, D]
  (r'query/kernel$', ('embed', 'heads', 'kv')),
  (r'query/bias$', ('heads', 'kv')),
  (r'(key|value)/kernel$', ('embed', 'kv_heads', 'kv')),
  (r'(key|value)/bias$', ('kv_heads', 'kv')),
  (r'attn/out/kernel$', ('heads', 'kv', 'embed')),
  (r'attn/out/bias$', ('embed',)),
  # MLP (`MlpBlock`): fc1 and gate [D, F], fc2 [F, D]
  (r'mlp/(fc1|gate)/kernel$', ('embed', 'mlp')),
  (r'mlp/(fc1|gate)/bias$', ('mlp',)),
  (r'mlp/fc2/kernel$', ('mlp', 'embed')),
  (r'mlp/fc2/bias$', ('embed',)),
  # mixture of experts (`MoeBlock`): router [D, E], experts' fc1 and gate [E, D, F], fc2 [E, F, D]
  (r'mlp/router/kernel$', ('embed', 'experts')),
  (r'mlp/(fc1|gate)/kernel$', ('experts', 'embed', 'mlp')),
  (r'mlp/(fc1|gate)/bias$', ('experts', 'mlp')),
  (r'mlp/fc2/kernel$', ('experts', 'mlp', 'embed')),
  (r'mlp/fc2/bias$', ('experts', 'embed')),
  # norms [D]
  (r'(^|/)\w*norm/(scale|bias)$', ('embed',)),
  # token embeddings [V, D], untied output [D, V], learned positions [T, D]
  (r'(^|/)(embed|src_embed|tgt_embed)/embedding$', ('vocab', 'embed')),
  (r'(^|/)(logits|lm_head)/kernel$', ('embed', 'vocab')),
  (r'(^|/)logits/bias$', ('vocab',)),
  (r'(^|/)pos_embed/embedding$', ('position', 'embed')),
  # ViT: patch convolution [P, P, C, D], class token [1, 1, D], classifier [D, K]
  (r'(^|/)patch_embed/kernel$', (None, None, None, 'embed')),
  (r'(^|/)patch_embed/bias$', ('embed',)),
  (r'^cls$', (None, None, 'embed')),
  (r'(^|/)head/kernel$', ('embed', 'classes')),
  (r'(^|/)head/bias$', ('classes',)),
  # BERT (`bigjax.models.bert`): embeddings, pooler, heads (the MLM decoder is tied)
  (r'(^|/)embeddings/word/embedding$', ('vocab', 'embed')),
  (r'(^|/)embeddings/position/embedding$', ('position', 'embed')),
  (r'(^|/)embeddings/segment/embedding$', (None, 'embed')),
  (r'(^|/)(pooler|mlm/transform)/kernel$', (None, 'embed')),
  (r'(^|/)(pooler|mlm/transform)/bias$', ('embed',)),
  (r'(^|/)mlm/bias$', ('vocab',)),
  (r'(^|/)(nsp|classifier|token_classifier|span)/kernel$', ('embed', 'classes')),
  (r'(^|/)(nsp|classifier|token_classifier|span)/bias$', ('classes',)),
)


def _path(keys) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in keys)


def axes_of(path: str, ndim: int) -> Axes:
  """The logical axes of the parameter at `path` ('encoder/block_0/attn/query/kernel')."""
  scanned = SCAN_NAME in path.split('/')[:-1]
  prefix = (SCAN_NAME,) if scanned else ()
  matches = [prefix + axes for pattern, axes in RULES if re.search(pattern, path)]
  for axes in matches:
    if len(axes) == ndim:
      return axes
  if matches:
    raise ValueError(f'parameter {path} has rank {ndim}, but its rules give axes {matches}')
  raise ValueError(
    f'no logical axes for parameter {path}: add a rule to bigjax.layers.partitioning.RULES'
  )


def logical_axes(params: PyTree) -> PyTree:
  """A tree like `params` (arrays or ShapeDtypeStructs) holding each one's axis names."""
  return jax.tree_util.tree_map_with_path(lambda p, x: axes_of(_path(p), x.ndim), params)
