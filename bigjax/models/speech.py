"""Speech classifiers: raw audio -> log-mel -> per-utterance normalisation -> SpecAugment
(training only) -> a backbone -> class logits.

Legend: B batch, N samples, F frames (N // hop + 1), M mel bands, C channels, D width,
K classes.

The front end is `bigjax.layers.audio` (JAX, jit-able, no parameters): log-mel features
(25 ms Hann windows, 10 ms hops, 40 HTK mel bands at 16 kHz by default, the Speech Commands
baseline's), normalised to zero mean and unit variance per utterance, then in training
SpecAugment's frequency and time masks (Park et al., 2019; no time warping) drawn from the
'dropout' rng stream. Three backbones:

  SpeechCNN          conv3x3-BN-ReLU-maxpool blocks on the [F, M, 1] spectrogram image,
                     global average pooling, dropout, a linear head.
  SpeechResNet       `bigjax.models.resnet.ResNet` itself on the [F, M, 1] image (the
                     ImageNet stem takes 101 x 40 to 26 x 10); parameters under `backbone/`.
  SpeechTransformer  frames stacked `frame_stack` at a time ([F / s, s M]), a linear
                     embedding, learned positions, pre-LN `EncoderBlock`s from
                     `bigjax.layers` (as ViT), mean pooling over time, a linear head.

`num_classes=0` (CNN, Transformer) returns the pooled features [B, C] or [B, D]; the pooled
features are always sown into `intermediates` as 'features'.
"""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.layers import BlockConfig, EncoderBlock, LearnedPositions, initializers, stack_blocks
from bigjax.layers import audio as audio_lib
from bigjax.layers.conv import check_conv_impl, conv_bn, max_pool
from bigjax.models.resnet import ResNet
from bigjax.typing import Dtype


class _SpeechClassifier(nn.Module):
  """The front end's options, shared by every backbone (module docstring)."""

  num_classes: int = 20
  sample_rate: int = 16000
  n_fft: int = 400
  hop_length: int = 160
  n_mels: int = 40
  freq_masks: int = 2  # SpecAugment: bands of up to freq_width mel bands each
  freq_width: int = 8
  time_masks: int = 2  # and of up to time_width frames each
  time_width: int = 10
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def spectrogram(self, audio: jax.Array, train: bool) -> jax.Array:
    """audio [B, N] -> normalised (and in training masked) log-mel [B, F, M], float32."""
    chex.assert_rank(audio, 2)
    x = audio_lib.log_mel_spectrogram(
      audio.astype(jnp.float32),
      sample_rate=self.sample_rate,
      n_fft=self.n_fft,
      hop_length=self.hop_length,
      n_mels=self.n_mels,
    )  # [B, F, M]
    x = audio_lib.normalize_per_utterance(x)
    if train and (self.freq_masks or self.time_masks):
      x = audio_lib.spec_augment(
        x,
        self.make_rng('dropout'),
        freq_masks=self.freq_masks,
        freq_width=self.freq_width,
        time_masks=self.time_masks,
        time_width=self.time_width,
      )
    return x

  def head(self, x: jax.Array, train: bool) -> jax.Array:
    """pooled [B, C] -> dropout -> [B, num_classes] float32 logits (or [B, C] features)."""
    self.sow('intermediates', 'features', x)
    if not self.num_classes:
      return x.astype(jnp.float32)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    logits = nn.Dense(
      self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='head'
    )(x)
    return logits.astype(jnp.float32)  # float32 logits (and loss) under bf16 compute


class SpeechCNN(_SpeechClassifier):
  """Blocks of conv3x3 (`channels[i]`) - BN - ReLU - maxpool 2x2 on the spectrogram."""

  channels: tuple[int, ...] = (16, 32, 64, 64)
  conv_impl: str = 'auto'  # how convolutions reach XLA (`bigjax.layers.conv`)

  @nn.compact
  def __call__(self, audio: jax.Array, *, train: bool = False) -> jax.Array:
    """audio [B, N] in [-1, 1] -> [B, num_classes] float32 logits."""
    check_conv_impl(self.conv_impl)
    x = self.spectrogram(audio, train)[..., None].astype(self.dtype)  # [B, F, M, 1]
    for i, c in enumerate(self.channels):
      x = conv_bn(
        x,
        c,
        (3, 3),
        train=train,
        padding='SAME',
        kernel_init=initializers.he_normal('fan_out'),
        names=(f'conv_{i}', f'bn_{i}'),
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        conv_impl=self.conv_impl,
      )  # [B, F', M', C]
      x = nn.relu(x)
      if min(x.shape[1:3]) >= 2:
        x = max_pool(x, (2, 2), (2, 2), conv_impl=self.conv_impl)  # [B, F'/2, M'/2, C]
    return self.head(jnp.mean(x, axis=(1, 2)), train)  # pooled [B, C]


class SpeechResNet(_SpeechClassifier):
  """`ResNet` (bigjax.models.resnet) on the [F, M, 1] spectrogram; no dropout."""

  stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
  block: str = 'basic'
  width: int = 16
  cifar_stem: bool = False
  zero_init_residual: bool = True
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, audio: jax.Array, *, train: bool = False) -> jax.Array:
    """audio [B, N] in [-1, 1] -> [B, num_classes] float32 logits."""
    if self.dropout_rate or not self.num_classes:
      raise ValueError('SpeechResNet has no dropout and always a head: set dropout_rate=0 and '
                       'num_classes > 0')  # fmt: skip
    x = self.spectrogram(audio, train)[..., None]  # [B, F, M, 1]
    return ResNet(
      stage_sizes=self.stage_sizes,
      block=self.block,
      width=self.width,
      num_classes=self.num_classes,
      cifar_stem=self.cifar_stem,
      zero_init_residual=self.zero_init_residual,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_impl=self.conv_impl,
      name='backbone',
    )(x, train=train)


class SpeechTransformer(_SpeechClassifier):
  """A pre-LN Transformer encoder over (stacked) log-mel frames, mean-pooled."""

  hidden_size: int = 192
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 768
  frame_stack: int = 2  # s frames -> one token: F / s tokens of s * M features
  max_frames: int = 256  # rows of the position table (tokens after stacking)
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, audio: jax.Array, *, train: bool = False) -> jax.Array:
    """audio [B, N] in [-1, 1] -> [B, num_classes] float32 logits."""
    x = self.spectrogram(audio, train)  # [B, F, M]
    batch, frames, mels = x.shape
    s = self.frame_stack
    tokens = frames // s
    if not 0 < tokens <= self.max_frames:
      raise ValueError(
        f'{frames} frames stacked {s} at a time give {tokens} tokens; the model takes 1 to '
        f'{self.max_frames}: change frame_stack, max_frames or data.audio_samples'
      )
    x = x[:, : tokens * s].reshape(batch, tokens, s * mels)  # [B, T, s M]
    x = nn.Dense(
      self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name='frame_embed'
    )(x.astype(self.dtype))  # [B, T, D]
    x = LearnedPositions(self.max_frames, param_dtype=self.param_dtype, name='pos_embed')(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    config = BlockConfig(
      num_heads=self.num_heads,
      mlp_dim=self.mlp_dim,
      dropout_rate=self.dropout_rate,
      pre_norm=True,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      attention_impl=self.attention_impl,
    )
    x = stack_blocks(x, EncoderBlock, config, self.num_layers, train=train)  # [B, T, D]
    x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name='norm')(x)
    return self.head(x.mean(axis=1), train)  # pooled [B, D]


# Sizes for the 20 spoken words (or Speech Commands' 12 labels); `test` variants for CPU
# tests. The ResNet is ResNet-18's depth at a quarter of its width, as `resnet18_digits`.
MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
  'speech_cnn': (SpeechCNN, dict(channels=(16, 32, 64, 64))),
  'speech_cnn_test': (SpeechCNN, dict(channels=(4, 8), n_mels=16, num_classes=10)),
  'speech_resnet18': (SpeechResNet, dict(stage_sizes=(2, 2, 2, 2), width=16)),
  'speech_resnet_test': (
    SpeechResNet,
    dict(stage_sizes=(1, 1), width=4, n_mels=16, num_classes=10),
  ),
  'speech_transformer': (
    SpeechTransformer,
    dict(hidden_size=128, num_layers=4, num_heads=4, mlp_dim=256, frame_stack=2),
  ),
  'speech_transformer_test': (
    SpeechTransformer,
    dict(hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, n_mels=16, num_classes=10),
  ),
}
