"""CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision"): an image tower and a text tower trained to agree.

Legend: B batch (images and texts; the i-th text describes the i-th image), H height,
W width, C channels, T text length, V vocabulary, D a tower's width, E the shared
embedding width (projection_dim), K prompts (classes), N audio samples, F frames, M mel bands.

Image tower: the existing `bigjax.models.vit.ViT` with `num_classes=0`, configured as CLIP's
(no patch bias, a LayerNorm before the blocks, quick-GELU): its final-norm class token is
the image feature. Text tower (`TextTower`): token and learned position embeddings, L causal
(GPT-style) pre-LN `EncoderBlock`s from `bigjax.layers`, a final LayerNorm, and the feature
of one position, `text_pool`:
  'eos'     the first `eos_token_id` of each row (transformers' CLIPTextTransformer);
  'argmax'  the largest token id of each row, transformers' rule for configs with
            eos_token_id == 2 (the original checkpoints: their EOS is the last id);
  'last'    the last token that is not the pad id 0 (tokenizers without an EOS).
With causal attention and padding after the text, the pooled position never sees padding, so
no padding mask is needed. Each feature goes through a bias-free projection to E and is
L2-normalised; the logits are s * images @ texts.T, s = exp(logit_scale), logit_scale
learned from log(1 / 0.07) and s clipped at 100 (section 2.5 of the paper).

Audio instead of images (`audio=True`): raw audio [B, N] passes through the parameter-free
`bigjax.layers.audio.LogMel` front end, is standardised per example (zero mean, unit
variance over [F, M]: `normalize_per_utterance`, as in the speech classifiers) and becomes
a one-channel image [B, F, M, 1]; the frames and bands are edge-padded to multiples of the
patch size (the ViT cuts whole patches).

Parameter names (stable; `bigjax.convert.hf_clip` maps Hugging Face `CLIPModel` onto them):
  vision/...                    the ViT's names (patch_embed, cls, pos_embed, norm_pre,
                                block_{i} or layers, norm), no patch bias, no head
  text/embed/embedding [V, D]
  text/pos_embed/embedding [max_len, D]
  text/block_{i}/...            (scan_layers: text/layers/..., stacked)
  text/norm/{scale, bias}
  image_proj/kernel [D_image, E], text_proj/kernel [D_text, E]
  logit_scale []
"""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers import BlockConfig, EncoderBlock, LearnedPositions, stack_blocks
from bigjax.layers.audio import LogMel, normalize_per_utterance
from bigjax.models.vit import ViT
from bigjax.outputs import ModelOutput
from bigjax.typing import Dtype

TEXT_POOLS = ('eos', 'argmax', 'last')
# The temperature's initial value, tau = 0.07, and its ceiling (section 2.5 of the paper).
LOGIT_SCALE_INIT = math.log(1 / 0.07)
MAX_LOGIT_SCALE = 100.0

# Table 20 of the paper (ViT-B/32, ViT-B/16: a 12-layer, 768-wide image tower; a 12-layer,
# 512-wide, 8-head text tower over 49,408 BPE ids and 77 positions; E = 512); Hugging Face
# `openai/clip-vit-base-patch32` and `-patch16` hold these weights.
_B = dict(
  vision_hidden_size=768,
  vision_layers=12,
  vision_heads=12,
  vision_mlp_dim=3072,
  text_hidden_size=512,
  text_layers=12,
  text_heads=8,
  text_mlp_dim=2048,
  vocab_size=49408,
  max_len=77,
  projection_dim=512,
  eos_token_id=49407,
)
VARIANTS: dict[str, dict] = {
  'test': dict(
    patch_size=4,
    vision_hidden_size=32,
    vision_layers=2,
    vision_heads=2,
    vision_mlp_dim=64,
    text_hidden_size=32,
    text_layers=2,
    text_heads=2,
    text_mlp_dim=64,
    vocab_size=64,
    max_len=16,
    projection_dim=16,
    text_pool='last',
  ),
  # The offline demonstration's towers (configs/clip_spoken_words.py: 8x8 patches of a
  # log-mel spectrogram, a byte-level text of up to 8 tokens pooled at its last byte).
  'tiny': dict(
    patch_size=8,
    vision_hidden_size=96,
    vision_layers=2,
    vision_heads=4,
    vision_mlp_dim=192,
    text_hidden_size=64,
    text_layers=2,
    text_heads=2,
    text_mlp_dim=128,
    vocab_size=256,
    max_len=8,
    projection_dim=64,
    text_pool='last',
  ),
  'vit_b32': dict(patch_size=32, **_B),
  'vit_b16': dict(patch_size=16, **_B),
}


def pool_positions(ids: jax.Array, rule: str, eos_token_id: int | None) -> jax.Array:
  """[B, T] token ids -> [B] the position whose feature stands for the text (`text_pool`)."""
  if rule == 'argmax':
    return jnp.argmax(ids, axis=-1)
  if rule == 'eos':
    return jnp.argmax(ids == eos_token_id, axis=-1)  # the first EOS (0 when there is none)
  length = jnp.sum(ids != 0, axis=-1)  # 'last': pad id 0 after the text
  return jnp.maximum(length - 1, 0)


class TextTower(nn.Module):
  """Causal Transformer over token ids: [B, T] int -> [B, D] pooled features (see the
  module docstring for `pool`)."""

  vocab_size: int
  max_len: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  pool: str = 'eos'
  eos_token_id: int | None = None
  activation: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_impl: str | None = None
  scan_layers: bool = False
  remat: bool = False
  remat_policy: str | None = None

  @nn.compact
  def __call__(self, ids: jax.Array, *, train: bool = False) -> jax.Array:
    chex.assert_rank(ids, 2)
    batch, length = ids.shape
    if length > self.max_len:
      raise ValueError(
        f'texts of {length} tokens exceed the text tower max_len={self.max_len}: cut them '
        f'(data.max_len <= {self.max_len}) or raise model.max_len'
      )
    x = nn.Embed(
      self.vocab_size,
      self.hidden_size,
      embedding_init=nn.initializers.normal(0.02),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='embed',
    )(ids)  # [B, T, D]
    x = LearnedPositions(
      self.max_len, param_dtype=self.param_dtype, init_std=0.01, name='pos_embed'
    )(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    config = BlockConfig(
      num_heads=self.num_heads,
      mlp_dim=self.mlp_dim,
      dropout_rate=self.dropout_rate,
      layer_norm_eps=self.layer_norm_eps,
      activation=self.activation,
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
      causal=True,
      train=train,
    )
    x = nn.LayerNorm(
      epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name='norm'
    )(x)  # [B, T, D]
    pos = pool_positions(ids, self.pool, self.eos_token_id)  # [B]
    return x[jnp.arange(batch), pos]  # [B, D]


def normalize(x: jax.Array) -> jax.Array:
  """[..., E] -> unit L2 norm along E (float32)."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


class CLIP(nn.Module):
  """Contrastive image (or audio) and text towers; see the module docstring.

  Methods: `encode_image`, `encode_text` (projected, not normalised, [B, E]) and
  `__call__(images, texts)` -> `ModelOutput`.
  """

  # image tower (a ViT)
  patch_size: int = 32
  vision_hidden_size: int = 768
  vision_layers: int = 12
  vision_heads: int = 12
  vision_mlp_dim: int = 3072
  # text tower
  vocab_size: int = 49408
  max_len: int = 77
  text_hidden_size: int = 512
  text_layers: int = 12
  text_heads: int = 8
  text_mlp_dim: int = 2048
  text_pool: str = 'eos'  # TEXT_POOLS
  eos_token_id: int | None = 49407
  # shared
  projection_dim: int = 512
  activation: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5
  dropout_rate: float = 0.0
  logit_scale_init: float = LOGIT_SCALE_INIT
  max_logit_scale: float = MAX_LOGIT_SCALE
  # audio front end in place of images: raw audio [B, N] -> log-mel [B, F, M, 1]
  audio: bool = False
  sample_rate: int = 16000
  n_fft: int = 400
  hop_length: int = 160
  n_mels: int = 40
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_impl: str | None = None
  scan_layers: bool = False
  remat: bool = False
  remat_policy: str | None = None

  def setup(self):
    if self.text_pool not in TEXT_POOLS:
      raise ValueError(f'CLIP text_pool must be one of {TEXT_POOLS}, got {self.text_pool!r}')
    if self.text_pool == 'eos' and self.eos_token_id is None:
      raise ValueError("CLIP text_pool='eos' needs eos_token_id: set it, or text_pool='last'")
    common = dict(
      activation=self.activation,
      layer_norm_eps=self.layer_norm_eps,
      dropout_rate=self.dropout_rate,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      attention_impl=self.attention_impl,
      scan_layers=self.scan_layers,
      remat=self.remat,
      remat_policy=self.remat_policy,
    )
    self.vision = ViT(
      num_classes=0,
      patch_size=self.patch_size,
      hidden_size=self.vision_hidden_size,
      num_layers=self.vision_layers,
      num_heads=self.vision_heads,
      mlp_dim=self.vision_mlp_dim,
      pool='cls',
      patch_bias=False,
      norm_pre=True,
      **common,
    )
    self.text = TextTower(
      vocab_size=self.vocab_size,
      max_len=self.max_len,
      hidden_size=self.text_hidden_size,
      num_layers=self.text_layers,
      num_heads=self.text_heads,
      mlp_dim=self.text_mlp_dim,
      pool=self.text_pool,
      eos_token_id=self.eos_token_id,
      **common,
    )
    proj = lambda: nn.Dense(  # noqa: E731
      self.projection_dim,
      use_bias=False,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=nn.initializers.lecun_normal(),
    )
    self.image_proj = proj()
    self.text_proj = proj()
    self.logit_scale = self.param(
      'logit_scale', nn.initializers.constant(self.logit_scale_init), (), self.param_dtype
    )
    if self.audio:
      self.front_end = LogMel(self.sample_rate, self.n_fft, self.hop_length, self.n_mels)

  def audio_image(self, audio: jax.Array) -> jax.Array:
    """Raw audio [B, N] -> standardised log-mel images [B, F', M', 1], F' and M' the frames
    and bands edge-padded to multiples of the patch size."""
    chex.assert_rank(audio, 2)
    x = normalize_per_utterance(self.front_end(audio))  # [B, F, M] float32
    p = self.patch_size
    pad = [(0, 0), (0, -x.shape[1] % p), (0, -x.shape[2] % p)]
    return jnp.pad(x, pad, mode='edge')[..., None]  # [B, F', M', 1]

  def encode_image(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, H, W, C] images (raw audio [B, N] with `audio`) -> [B, E] projected features."""
    if self.audio:
      images = self.audio_image(images)
    return self.image_proj(self.vision(images, train=train))  # [B, E]

  def encode_text(self, texts: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, T] int token ids -> [B, E] projected features."""
    return self.text_proj(self.text(texts, train=train))  # [B, E]

  def scale(self) -> jax.Array:
    """exp(logit_scale), clipped at max_logit_scale (float32 scalar)."""
    return jnp.minimum(jnp.exp(self.logit_scale.astype(jnp.float32)), self.max_logit_scale)

  def __call__(
    self,
    images: jax.Array,
    texts: jax.Array,
    class_texts: jax.Array | None = None,
    *,
    train: bool = False,
  ) -> ModelOutput:
    """images [B, H, W, C] (audio [B, N]), texts [B, T] -> ModelOutput with
    logits [B, B] float32: scale * image_embeds @ text_embeds.T (row i: image i against
      every text; Hugging Face's logits_per_image);
    features: image_embeds, text_embeds [B, E] (unit norm, float32), logit_scale (the
      clipped scale), and class_embeds [K, E] when `class_texts` [K, T] (zero-shot
      prompts) are given.
    """
    image_embeds = normalize(self.encode_image(images, train=train))  # [B, E]
    text_embeds = normalize(self.encode_text(texts, train=train))  # [B, E]
    scale = self.scale()
    logits = scale * image_embeds @ text_embeds.T  # [B, B]
    features = {'image_embeds': image_embeds, 'text_embeds': text_embeds, 'logit_scale': scale}
    if class_texts is not None:
      features['class_embeds'] = normalize(self.encode_text(class_texts, train=False))  # [K, E]
    return ModelOutput(logits=logits, features=features)


MODELS: dict[str, tuple[type[nn.Module], dict]] = {
  f'clip_{name}': (CLIP, dict(spec)) for name, spec in VARIANTS.items()
}
