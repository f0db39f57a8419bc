"""Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words").

Legend: B batch, H height, W width, C channels, P patch size, N = (H/P)(W/P) patches,
T tokens (N, plus 1 with a class token), D width, L layers, K classes.

An image is cut into P x P patches by a strided convolution, a learned class token is
prepended (`pool='cls'`) or the patch tokens are averaged at the end (`pool='mean'`, the
paper's "GAP" variant, which has no class token), learned position embeddings are added,
and L pre-LN Transformer encoder blocks from `bigjax.layers` follow.

CLIP's image tower (Radford et al., 2021; `bigjax.models.clip`) is this model with three
options: no bias in the patch projection (`patch_bias=False`), a LayerNorm on the tokens
before the blocks (`norm_pre=True`, Hugging Face's `pre_layrnorm`) and `activation=
'quick_gelu'`; its pooled output is the final-norm class token, as here.

Parameter names (stable; `bigjax.convert.hf_vit` maps Hugging Face checkpoints onto them):
  patch_embed/{kernel [P, P, C, D], bias [D]}      (bias only with patch_bias)
  cls [1, 1, D]                                     (only with pool='cls')
  pos_embed/embedding [T, D]
  norm_pre/{scale, bias}                            (only with norm_pre)
  block_{i}/attn_norm/{scale, bias}
  block_{i}/attn/{query, key, value}/{kernel [D, heads, D/heads], bias [heads, D/heads]}
  block_{i}/attn/out/{kernel [heads, D/heads, D], bias [D]}
  block_{i}/mlp_norm/{scale, bias}
  block_{i}/mlp/fc1/{kernel [D, mlp_dim], bias}, block_{i}/mlp/fc2/{kernel [mlp_dim, D], bias}
  layers/...                                        (scan_layers: block_{i} stacked on axis 0)
  norm/{scale, bias}
  head/{kernel [D, K], bias [K]}                    (absent when num_classes=0)
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers import ACTIVATIONS, BlockConfig, EncoderBlock, LearnedPositions, stack_blocks
from bigjax.typing import Dtype

# Table 1 of the ViT paper (Ti and S come from DeiT, Touvron et al., 2021; B, L, H from ViT).
VARIANTS: dict[str, dict[str, int]] = {
  'test': dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64),
  'ti': dict(hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
  's': dict(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
  'b': dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
  'l': dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
  'h': dict(hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}

# Registered (size, patch) pairs: the paper's /16 and /32 (/14 for Huge), and small patches
# (/8, /4) so the small sizes see enough tokens on 32x32 and 64x64 images.
_REGISTERED = {
  'ti': (4, 8, 16, 32),
  's': (4, 8, 16, 32),
  'b': (8, 16, 32),
  'l': (16, 32),
  'h': (14,),
}


class ViT(nn.Module):
  """Vision Transformer classifier. `num_classes=0` returns the pooled [B, D] features."""

  num_classes: int = 1000
  patch_size: int = 16
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  pool: str = 'cls'  # 'cls' | 'mean'
  dropout_rate: float = 0.0
  layer_norm_eps: float = 1e-6  # big_vision; Hugging Face ViT checkpoints use 1e-12
  gelu_approximate: bool = False  # exact erf GELU, as in the paper and Hugging Face
  activation: str | None = None  # a name in ACTIVATIONS; None: GELU per gelu_approximate
  patch_bias: bool = True  # CLIP's patch projection has none
  norm_pre: bool = False  # a LayerNorm on the tokens before the blocks (CLIP)
  head_zero_init: bool = True  # the paper zero-initialises the classifier
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_impl: str | None = None  # `bigjax.layers.attention.IMPLEMENTATIONS`
  scan_layers: bool = False  # nn.scan over the blocks (params under `layers/`, stacked)
  remat: bool = False  # recompute each block's activations in the backward pass
  remat_policy: str | None = None  # `bigjax.layers.stack.REMAT_POLICIES`; implies remat

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, H, W, C] images -> [B, num_classes] float32 logits (or [B, D] when num_classes=0)."""
    chex.assert_rank(x, 4)
    if self.pool not in ('cls', 'mean'):
      raise ValueError(f"ViT pool must be 'cls' or 'mean', got {self.pool!r}")
    if self.activation is not None and self.activation not in ACTIVATIONS:
      raise ValueError(
        f'unknown ViT activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}'
      )
    batch, height, width, _ = x.shape
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(
        f'image size {height}x{width} is not divisible by patch_size {p}: '
        'resize or crop the images, or pick another patch size'
      )
    x = nn.Conv(
      self.hidden_size,
      (p, p),
      strides=(p, p),
      padding='VALID',
      use_bias=self.patch_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='patch_embed',
    )(x.astype(self.dtype))  # [B, H/P, W/P, D]
    x = x.reshape(batch, -1, self.hidden_size)  # [B, N, D], patches in row-major order
    if self.pool == 'cls':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, self.hidden_size), self.param_dtype)
      cls = jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, self.hidden_size))
      x = jnp.concatenate([cls, x], axis=1)  # [B, T, D]
    x = LearnedPositions(x.shape[1], param_dtype=self.param_dtype, name='pos_embed')(x)
    if self.norm_pre:
      x = nn.LayerNorm(
        epsilon=self.layer_norm_eps,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name='norm_pre',
      )(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)

    config = BlockConfig(
      num_heads=self.num_heads,
      mlp_dim=self.mlp_dim,
      dropout_rate=self.dropout_rate,
      pre_norm=True,
      layer_norm_eps=self.layer_norm_eps,
      activation=self.activation or ('gelu_tanh' if self.gelu_approximate else 'gelu'),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      attention_impl=self.attention_impl,
    )
    x = stack_blocks(
      x,
      EncoderBlock,
      config,
      self.num_layers,
      scan=self.scan_layers,
      remat=self.remat,
      remat_policy=self.remat_policy,
      train=train,
    )
    x = nn.LayerNorm(
      epsilon=self.layer_norm_eps,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='norm',
    )(x)
    x = x[:, 0] if self.pool == 'cls' else x.mean(axis=1)  # [B, D]
    self.sow('intermediates', 'features', x)
    if not self.num_classes:
      return x
    head_init = nn.initializers.zeros if self.head_zero_init else nn.initializers.lecun_normal()
    logits = nn.Dense(
      self.num_classes,
      kernel_init=head_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='head',
    )(x)
    chex.assert_shape(logits, (batch, self.num_classes))
    return logits.astype(jnp.float32)  # float32 logits (and loss) under bf16 compute


MODELS: dict[str, tuple[type[nn.Module], dict]] = {
  **{
    f'vit_{size}{patch}': (ViT, dict(patch_size=patch, **VARIANTS[size]))
    for size, patches in _REGISTERED.items()
    for patch in patches
  },
  'vit_test': (ViT, dict(patch_size=4, num_classes=10, head_zero_init=False, **VARIANTS['test'])),
}
