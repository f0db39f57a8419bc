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

Mesh axes. `rules(preset)` gives the one table (a Flax rules list of (logical name, mesh
axes) pairs, earlier pairs first) that maps logical names to the mesh axes of
`bigjax.train.sharding` ('data', 'fsdp', 'expert', 'tensor'); `config.mesh.rules` picks it:

  data                everything replicated (plain data parallelism)
  fsdp                parameters' `embed` axis over 'fsdp'
  zero3               like fsdp, over ('data', 'fsdp') (ZeRO-3)
  fsdp_tensor         fsdp + heads, kv_heads, mlp, vocab over 'tensor' (Megatron: query,
                      key, value, fc1 and gate split on their output units, attn/out and
                      fc2 on their input units)
  fsdp_tensor_expert  fsdp_tensor + experts over 'expert'
  auto                the full table (= fsdp_tensor_expert): mesh axes of size 1 shard
                      nothing, so the default mesh (data=-1, the others 1) is plain data
                      parallelism

`spec_of(names, shape, rules, mesh_shape)` resolves one array with Flax's own
`nn.logical_to_mesh_axes` (a mesh axis is used at most once per PartitionSpec), after
dropping, for that array, the mesh axes of size 1 and those that do not divide the
dimension (a dimension the mesh does not divide stays unsplit on that axis: never an
error). FSDP fallback: a parameter whose `embed` axis did not take the FSDP mesh axes (it
has no `embed` axis, as a bias [F], a convolution kernel or a parameter of a model family
without rules here; or its width does not divide) takes them on its largest other
dimension that they divide (never `layers`), so every parameter of every model is sharded
under FSDP when its shape allows.

Activations carry logical names too, through `constrain(x, names)` (Flax's
`nn.with_logical_constraint`): `batch`, `length`, `act_embed`, `act_heads`, `act_kv`,
`act_mlp`, `act_experts`, `act_vocab`. They are distinct from the parameters' names so that
`embed -> fsdp` never splits an activation's width. Outside a rules context and a mesh
(`bigjax.train.sharding.under_rules`, what the train and eval steps are traced with) it is
the identity: generation and tests that apply a model directly are unchanged.
"""

import math
import re

import flax.linen as nn
import jax

from bigjax.typing import PyTree

# The name of a scanned stack's parameters (`bigjax.layers.stack`), whose leading axis is
# named `layers`.
SCAN_NAME = 'layers'

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
  (r'(^|/)\w*norm\w*/(scale|bias)$', ('embed',)),
  # token embeddings [V, D], untied output [D, V], learned positions [T, D]
  (r'(^|/)(embed|src_embed|tgt_embed)/embedding$', ('vocab', 'embed')),
  (r'(^|/)(logits|lm_head)/kernel$', ('embed', 'vocab')),
  (r'(^|/)logits/bias$', ('vocab',)),
  (r'(^|/)pos_embed/embedding$', ('position', 'embed')),
  # ViT: patch convolution [P, P, C, D], class token [1, 1, D], classifier [D, K]
  (r'(^|/)patch_embed/kernel$', (None, None, None, 'embed')),
  (r'(^|/)patch_embed/bias$', ('embed',)),
  (r'(^|/)cls$', (None, None, 'embed')),
  (r'(^|/)head/kernel$', ('embed', 'classes')),
  (r'(^|/)head/bias$', ('classes',)),
  # CLIP (`bigjax.models.clip`): projections into the joint space [D, E], the temperature
  (r'(^|/)(image|text)_proj/kernel$', ('embed', None)),
  (r'^logit_scale$', ()),
  # speech Transformer: frames [F, D] -> width
  (r'(^|/)frame_embed/kernel$', (None, 'embed')),
  (r'(^|/)frame_embed/bias$', ('embed',)),
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


def logical_axes(params: PyTree, *, strict: bool = True) -> PyTree:
  """A tree like `params` (arrays or ShapeDtypeStructs) holding each one's axis names;
  with `strict=False` a parameter without a rule gets all-None axes instead of an error
  (the families without rules here: convolutions, recurrences; FSDP's fallback still
  shards them)."""

  def axes(path, x):
    try:
      return axes_of(_path(path), x.ndim)
    except ValueError:
      if strict:
        raise
      return (None,) * x.ndim

  return jax.tree_util.tree_map_with_path(axes, params)


# ------------------------------------------------------------------------------ mesh rules
Rules = tuple[tuple[str, str | tuple[str, ...]], ...]
PRESETS = ('auto', 'data', 'fsdp', 'zero3', 'fsdp_tensor', 'fsdp_tensor_expert')
BATCH = ('data', 'fsdp', 'expert')  # the batch's mesh axes (bigjax.train.sharding.BATCH_AXES)
TENSOR_NAMES = ('heads', 'kv_heads', 'mlp', 'vocab', 'act_heads', 'act_mlp', 'act_vocab')


def rules(preset: str) -> Rules:
  """The rules table of a preset (see the module docstring)."""
  if preset not in PRESETS:
    raise ValueError(f'mesh.rules={preset!r} is not a preset: use one of {", ".join(PRESETS)}')
  if preset == 'auto':
    preset = 'fsdp_tensor_expert'
  table: list = []
  if preset == 'fsdp_tensor_expert':
    # Before the batch: expert buffers [B, E, C, D] put E on 'expert', B on the rest.
    table += [('experts', 'expert'), ('act_experts', 'expert')]
  table += [('batch', BATCH), ('batch', ('data', 'fsdp'))]
  if preset.startswith('fsdp_tensor'):
    table += [(name, 'tensor') for name in TENSOR_NAMES]
  if preset != 'data':
    table += [('embed', ('data', 'fsdp') if preset == 'zero3' else 'fsdp')]
  return tuple(table)


def _as_tuple(axes) -> tuple[str, ...]:
  return (axes,) if isinstance(axes, str) else tuple(axes or ())


def _fitting(axes, size: int, mesh_shape) -> tuple[str, ...]:
  """`axes` without the mesh axes of size 1, then shortened from the end until their
  product divides `size` (possibly to nothing)."""
  axes = tuple(a for a in _as_tuple(axes) if mesh_shape.get(a, 1) > 1)
  while axes and size % math.prod(mesh_shape[a] for a in axes):
    axes = axes[:-1]
  return axes


def fitted_rules(names, shape, table: Rules, mesh_shape) -> Rules:
  """The rules of `table` that apply to one array of `shape` whose axes are `names`, each
  reduced to the mesh axes that split its dimension evenly."""
  out = []
  for name, axes in table:
    if name in names:
      fit = _fitting(axes, shape[list(names).index(name)], mesh_shape)
      if fit:
        out.append((name, fit[0] if len(fit) == 1 else fit))
  return tuple(out)


def spec_of(names, shape, table: Rules, mesh_shape, *, fsdp_fallback: bool = True):
  """The PartitionSpec of a parameter (module docstring: divisibility, FSDP fallback)."""
  mesh_shape = dict(mesh_shape)
  spec = list(nn.logical_to_mesh_axes(tuple(names), fitted_rules(names, shape, table, mesh_shape)))
  fsdp = next((_as_tuple(axes) for name, axes in table if name == 'embed'), ())
  used = {a for entry in spec for a in _as_tuple(entry)}
  if fsdp_fallback and fsdp and not used & set(fsdp):
    free = [i for i, n in enumerate(names) if spec[i] is None and n != 'layers']
    for i in sorted(free, key=lambda i: -shape[i]):
      fit = _fitting(fsdp, shape[i], mesh_shape)
      if fit:
        spec[i] = fit[0] if len(fit) == 1 else fit
        break
  return jax.sharding.PartitionSpec(*spec)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
  """`nn.with_logical_constraint(x, names)` under the current rules and mesh, with each
  rule reduced to the mesh axes that divide x's dimension; the identity outside them."""
  table = nn.get_logical_axis_rules()
  if not table:
    return x
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  fit = fitted_rules(names, x.shape, table, dict(mesh.shape))
  return nn.with_logical_constraint(x, names, rules=fit) if fit else x
