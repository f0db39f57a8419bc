"""WaveNet: an autoregressive model of raw audio (van den Oord et al., 2016), with the
queue-based fast generation of Paine et al. (2016), "Fast Wavenet Generation Algorithm".

Legend: B batch, T samples (time steps), V output classes (256 mu-law levels), R residual
channels (hidden_size), S skip channels, L layers, K kernel size, d dilation, N conditioning
audio samples, F log-mel frames, M mel bands, P mixture parameters (3 x mixtures).

codes [B, T] int (8-bit mu-law, `bigjax.layers.audio.mu_law_encode`) -> embedding [B, T, R]
-> causal input convolution (`input_kernel_size` taps) -> L residual blocks whose dilations
run 1, 2, ..., 2^(layers_per_cycle - 1) and repeat `dilation_cycles` times (section 2.1:
"1, 2, 4, ..., 512, 1, 2, 4, ..., 512, 1, 2, 4, ..., 512") -> the sum of the blocks' skip
outputs -> ReLU -> 1x1 -> ReLU -> 1x1 -> logits [B, T, V]. Output t is the distribution of
sample t + 1: it sees codes[:, :t + 1] only (causal).

A residual block (section 2.3-2.4): a causal dilated convolution of K = 2 taps to 2R
channels, plus the conditioning, gives the filter and gate halves f, g; z = tanh(f) *
sigmoid(g) (the gated activation, eq. 2); a 1x1 to R channels is added to the block's input
(residual) and a 1x1 to S channels to the skip sum. The last block has no residual 1x1.

Conditioning (section 2.5), added to the filter and gate pre-activations of every block:
  global  label [B] int (a word or a voice) -> an embedding per block [B, 2R]
          (`num_labels` > 0);
  local   audio [B, N] -> log-mel frames [B, F, M] (`bigjax.layers.audio.LogMel`, computed
          in the model) -> upsampled to one vector [B, T, R] per sample by a transposed
          convolution whose kernel equals its stride, the hop (`local_upsample=
          'transposed'`: sample t takes frame (t + hop / 2) // hop through the kernel tap of
          its offset in the frame) or by repetition ('repeat': one tap) -> a 1x1 per block
          (`mel_bands` > 0). Frames are centred (`stft`), so sample t takes the nearest
          frame centre.

Outputs (`output`):
  'categorical'       logits [B, T, V] of a softmax over the V mu-law levels (section 2.2).
  'logistic_mixture'  a discretised mixture of `num_mixtures` logistics over the V levels
                      (Salimans et al., 2017, PixelCNN++): `features['mixture']` holds its
                      parameters [B, T, P] (scored by
                      `bigjax.losses.discretized_logistic_mixture_nll`) and the logits are
                      the log-probabilities of the V levels it implies (what sampling and
                      the categorical metrics read).

Receptive field: `receptive_field` = input_kernel_size + sum over blocks of (K - 1) * d
samples (the current one included): output t depends on codes[t - receptive_field + 1 .. t].
The trainer logs it at the start of a run (`summary()`).

Cached decoding (`decode=True`, see `bigjax.decode`): the model keeps `cache/index` (the
position of the next sample) and every causal convolution a queue `cache/queue` [B, (K -
1) d, C] of its last (K - 1) d inputs, a ring buffer indexed by position mod (K - 1) d. A
call with T new samples reads each tap from the queue (past samples) or from its own input,
then writes its last inputs to the queue: O(L) work per generated sample and nothing of the
receptive field computed again (Paine et al., 2016). A locally conditioned model computes
its log-mel frames once, when the cache is created from the conditioning audio
(`cache/mel`), and each step upsamples only the frames of its own samples. The conditioning
(label, audio) is passed to every step; `bigjax.decode.lm_decoder(..., conditioning=...)`
does that.

Parameter names (stable):
  embed/embedding [V, R]; input_conv/{kernel [Kin, R, R], bias [R]}
  block_{i}/dilated/{kernel [K, R, 2R], bias [2R]}; block_{i}/label/embedding
  [num_labels, 2R]; block_{i}/local/{kernel [R, 2R], bias}; block_{i}/residual (not in
  the last block) and block_{i}/skip: {kernel, bias}
  upsample/{kernel [hop or 1, M, R], bias [R]} (local conditioning)
  head_hidden/{kernel [S, S], bias}; head_out/{kernel [S, V or P], bias}
"""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax import losses
from bigjax.layers.audio import MU_LAW_CHANNELS, LogMel
from bigjax.layers.mlp import rows
from bigjax.outputs import ModelOutput
from bigjax.typing import Dtype

OUTPUTS = ('categorical', 'logistic_mixture')
UPSAMPLES = ('transposed', 'repeat')


class CausalConv(nn.Module):
  """A causal dilated 1-D convolution: y[t] = b + sum_j W_j x[t - (K - 1 - j) d].

  x [B, T, C] -> y [B, T, features]. The kernel is [K, C, features], tap j reading
  x[t - (K - 1 - j) d] (`nn.Conv`'s layout with left padding (K - 1) d). In training it is
  one dilated `lax.conv_general_dilated`; with `decode`, `index` is the position of x[:, 0],
  the past taps come from the ring buffer `cache/queue` (see the module docstring) and the
  K taps are concatenated on channels and multiplied once ([B, T, K C] @ [K C, features]).
  """

  features: int
  kernel_size: int = 2
  dilation: int = 1
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, index: jax.Array | None = None) -> jax.Array:
    k, d = self.kernel_size, self.dilation
    span = (k - 1) * d  # how far back the first tap reads
    channels = x.shape[-1]
    kernel = self.param(
      'kernel', nn.initializers.lecun_normal(), (k, channels, self.features), self.param_dtype
    )
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
    if not self.decode:
      # XLA's dilated convolution: forward + backward of a [16, 2000, 32] -> 64 layer took
      # 15 ms against 39 ms for the taps' concatenation and one matmul (2 loaded CPU cores).
      y = jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1,),
        padding=[(span, 0)],
        rhs_dilation=(d,),
        dimension_numbers=('NWC', 'WIO', 'NWC'),
      )  # [B, T, features]
      return y + bias
    taps = self._queued_taps(x, index, span) if span else [x]
    stacked = jnp.concatenate(taps, axis=-1)  # [B, T, K C]
    return stacked @ kernel.reshape(k * channels, self.features) + bias  # [B, T, features]

  def _queued_taps(self, x: jax.Array, index: jax.Array, span: int) -> list[jax.Array]:
    """The K taps of x [B, T, C] at positions index .. index + T - 1, the past read from
    the queue; then the queue takes the last min(T, span) inputs."""
    batch, length, channels = x.shape
    ready = self.has_variable('cache', 'queue')  # False while the cache is being created
    queue = self.variable('cache', 'queue', jnp.zeros, (batch, span, channels), x.dtype)
    positions = index + jnp.arange(length)  # [T]
    taps = []
    for j in range(self.kernel_size - 1):
      back = (self.kernel_size - 1 - j) * self.dilation  # tap j reads x[t - back]
      past = queue.value[:, (positions - back) % span]  # [B, T, C]; zeros before position 0
      here = jnp.pad(x, ((0, 0), (back, 0), (0, 0)))[:, :length]  # x[t - back] in this call
      inside = (jnp.arange(length) >= back)[None, :, None]  # [1, T, 1]
      taps.append(jnp.where(inside, here, past))
    taps.append(x)
    if ready:
      n = min(length, span)  # distinct slots: the last n positions
      queue.value = queue.value.at[:, positions[-n:] % span].set(x[:, -n:])
    return taps


class Upsample(nn.Module):
  """Log-mel frames [B, F, M] -> one vector per sample [B, T, features]: a transposed
  convolution whose kernel equals its stride, the hop (`taps` = hop), or repetition (`taps`
  = 1). Sample t (its position: `index` + t) takes the frame whose centre is nearest,
  (t + hop / 2) // hop (the last frame past the end), through the tap of its offset."""

  features: int
  hop: int
  taps: int
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, frames: jax.Array, length: int, index: jax.Array | None) -> jax.Array:
    bands = frames.shape[-1]
    kernel = self.param(
      'kernel',
      nn.initializers.lecun_normal(in_axis=-2, out_axis=-1),
      (self.taps, bands, self.features),
      self.param_dtype,
    ).astype(self.dtype)  # [taps, M, features]
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    frames = frames.astype(self.dtype)
    start = 0 if index is None else index
    shifted = start + jnp.arange(length) + self.hop // 2  # [T]
    frame = jnp.minimum(shifted // self.hop, frames.shape[1] - 1)  # [T]
    offset = shifted % self.hop if self.taps > 1 else jnp.zeros_like(shifted)  # [T]
    if self.decode:  # a few samples: gather their frames and taps
      y = jnp.einsum('btm,tmr->btr', frames[:, frame], kernel[offset])  # [B, T, features]
    else:  # every frame through every tap, then one row per sample
      every = jnp.einsum('bfm,omr->bfor', frames, kernel)  # [B, F, taps, features]
      every = every.reshape(frames.shape[0], -1, self.features)  # [B, F taps, features]
      y = every[:, frame * self.taps + offset]  # [B, T, features]
    return y + bias.astype(self.dtype)


class ResidualBlock(nn.Module):
  """One gated residual block (section 2.3-2.4): x [B, T, R] -> (x + residual [B, T, R]
  (x itself when `last`), skip [B, T, S])."""

  hidden_size: int
  skip_channels: int
  kernel_size: int
  dilation: int
  num_labels: int = 0
  last: bool = False
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, index, label=None, local=None) -> tuple[jax.Array, jax.Array]:
    """label [B] int or None; local [B, T, R] upsampled features or None."""
    width = 2 * self.hidden_size
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = CausalConv(
      width, self.kernel_size, self.dilation, decode=self.decode, name='dilated', **kw
    )(x, index)  # [B, T, 2R]
    if label is not None:
      embed = nn.Embed(self.num_labels, width, param_dtype=self.param_dtype, name='label')
      h = h + embed(label)[:, None].astype(self.dtype)  # [B, 1, 2R]
    if local is not None:
      h = h + nn.Dense(width, name='local', **kw)(local)  # [B, T, 2R]
    f, g = jnp.split(h, 2, axis=-1)  # [B, T, R] each
    z, unflatten = rows(jnp.tanh(f) * jax.nn.sigmoid(g))  # [B T, R]: the gated unit (eq. 2)
    skip = unflatten(nn.Dense(self.skip_channels, name='skip', **kw)(z))  # [B, T, S]
    if not self.last:
      x = x + unflatten(nn.Dense(self.hidden_size, name='residual', **kw)(z))
    return x, skip


class WaveNet(nn.Module):
  """WaveNet (see the module docstring). Defaults: the paper's 3 cycles of 1 .. 512."""

  vocab_size: int = MU_LAW_CHANNELS  # V: the mu-law levels of the input and the output
  hidden_size: int = 64  # R: residual channels (the gates have 2R)
  skip_channels: int = 256  # S
  dilation_cycles: int = 3
  layers_per_cycle: int = 10  # dilations 1, 2, ..., 2^(layers_per_cycle - 1)
  kernel_size: int = 2
  input_kernel_size: int = 2
  num_labels: int = 0  # > 0: global conditioning on a label [B] in [0, num_labels)
  mel_bands: int = 0  # > 0: local conditioning on the log-mel of an audio [B, N]
  mel_hop: int = 160  # samples per log-mel frame (10 ms at 16 kHz)
  mel_fft: int = 400  # the STFT window (25 ms at 16 kHz)
  sample_rate: int = 16000  # of the audio (the mel filterbank; the receptive field in ms)
  local_upsample: str = 'transposed'  # 'transposed' | 'repeat'
  output: str = 'categorical'  # 'categorical' | 'logistic_mixture'
  num_mixtures: int = 10
  decode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def dilations(self) -> tuple[int, ...]:
    return tuple(2**i for i in range(self.layers_per_cycle)) * self.dilation_cycles

  @property
  def receptive_field(self) -> int:
    """Samples output t depends on, itself included: the input convolution's
    input_kernel_size taps plus (kernel_size - 1) * dilation for each block."""
    return self.input_kernel_size + sum((self.kernel_size - 1) * d for d in self.dilations)

  def summary(self) -> str:
    """One line for the training log: the blocks and the receptive field."""
    ms = 1000 * self.receptive_field / self.sample_rate
    cycle = self.dilations[: self.layers_per_cycle]
    return (
      f'WaveNet: {len(self.dilations)} blocks, dilations {cycle[0]}..{cycle[-1]} x '
      f'{self.dilation_cycles}, receptive field {self.receptive_field} samples '
      f'({ms:.1f} ms at {self.sample_rate} Hz)'
    )

  def _check(self) -> None:
    if self.output not in OUTPUTS:
      raise ValueError(f'model.output must be one of {OUTPUTS}, got {self.output!r}')
    if self.local_upsample not in UPSAMPLES:
      raise ValueError(
        f'model.local_upsample must be one of {UPSAMPLES}, got {self.local_upsample!r}'
      )
    if min(self.kernel_size, self.input_kernel_size, self.layers_per_cycle) < 1:
      raise ValueError('model.kernel_size, input_kernel_size and layers_per_cycle must be >= 1')

  def log_mel(self, audio: jax.Array) -> jax.Array:
    """audio [B, N] -> the log-mel frames [B, F, M] the local conditioning reads."""
    return LogMel(self.sample_rate, self.mel_fft, self.mel_hop, self.mel_bands)(audio)

  @nn.compact
  def __call__(
    self,
    codes: jax.Array,
    label: jax.Array | None = None,
    audio: jax.Array | None = None,
    *,
    train: bool = False,
  ) -> jax.Array | ModelOutput:
    """codes [B, T] int in [0, V) (or [B, T, V] one-hot floats, for input gradients);
    label [B] int, used when num_labels > 0; audio [B, N] in [-1, 1], used when
    mel_bands > 0 -> logits [B, T, V] float32 (a ModelOutput that also holds the mixture
    parameters [B, T, P] when output='logistic_mixture'). Output t predicts sample t + 1."""
    del train  # no dropout, no batch statistics
    self._check()
    batch, length = codes.shape[:2]
    index = None
    if self.decode:
      ready = self.has_variable('cache', 'index')
      counter = self.variable('cache', 'index', lambda: jnp.zeros((), jnp.int32))
      index = counter.value  # the position of codes[:, 0]
      if ready:
        counter.value = index + length
    embed = nn.Embed(self.vocab_size, self.hidden_size, param_dtype=self.param_dtype, name='embed')
    if codes.ndim == 3:  # one-hot (or soft) inputs: the lookup as a product
      x = codes.astype(self.dtype) @ embed.embedding.astype(self.dtype)  # [B, T, R]
    else:
      chex.assert_rank(codes, 2)
      x = embed(codes).astype(self.dtype)  # [B, T, R]
    kw = dict(decode=self.decode, dtype=self.dtype, param_dtype=self.param_dtype)
    x = CausalConv(self.hidden_size, self.input_kernel_size, name='input_conv', **kw)(x, index)
    label = self._label(label, batch)
    local = self._local(audio, length, index)  # [B, T, R] or None

    skip = 0.0
    for i, dilation in enumerate(self.dilations):
      x, s = ResidualBlock(
        self.hidden_size,
        self.skip_channels,
        self.kernel_size,
        dilation,
        num_labels=self.num_labels,
        last=i == len(self.dilations) - 1,
        name=f'block_{i}',
        **kw,
      )(x, index, label, local)
      skip = skip + s  # [B, T, S]

    dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out, unflatten = rows(nn.relu(skip))  # [B T, S]
    out = nn.relu(nn.Dense(self.skip_channels, name='head_hidden', **dense)(out))
    if self.output == 'categorical':
      logits = nn.Dense(self.vocab_size, name='head_out', **dense)(out)  # [B T, V]
      return unflatten(logits).astype(jnp.float32)  # [B, T, V]
    mixture = nn.Dense(3 * self.num_mixtures, name='head_out', **dense)(out)
    mixture = unflatten(mixture).astype(jnp.float32)  # [B, T, P]
    logits = losses.discretized_logistic_mixture_log_probs(mixture, self.vocab_size)
    return ModelOutput(logits=logits, features={'mixture': mixture})  # [B, T, V]

  def _label(self, label: jax.Array | None, batch: int) -> jax.Array | None:
    if not self.num_labels:
      return None
    if label is None:
      raise ValueError(
        f'this WaveNet is conditioned on a label (num_labels={self.num_labels}): pass '
        'label [B] ints'
      )
    chex.assert_shape(label, (batch,))
    return label

  def _local(self, audio: jax.Array | None, length: int, index) -> jax.Array | None:
    if not self.mel_bands:
      return None
    if audio is None:
      raise ValueError(
        f'this WaveNet is locally conditioned (mel_bands={self.mel_bands}): pass the '
        'conditioning audio [B, N]'
      )
    if self.decode:  # the frames are computed once, when the cache is created
      frames = self.variable('cache', 'mel', lambda: self.log_mel(audio)).value
    else:
      frames = self.log_mel(audio)  # [B, F, M]
    taps = self.mel_hop if self.local_upsample == 'transposed' else 1
    return Upsample(
      self.hidden_size,
      self.mel_hop,
      taps,
      decode=self.decode,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='upsample',
    )(frames, length, index)  # [B, T, R]


# ------------------------------------------------------------------------------ registry
# van den Oord et al. (2016) give the dilation pattern (section 2.1: 1, 2, ..., 512, three
# times; receptive field 3,071 samples here, 192 ms at 16 kHz) but not the channel counts:
# 'base' takes R = 64 and S = 256. 'small' is the CPU size of
# configs/wavenet_spoken_words.py; 'test' is for unit tests.
VARIANTS: dict[str, dict[str, Any]] = {
  'test': dict(hidden_size=8, skip_channels=16, dilation_cycles=2, layers_per_cycle=3),
  'small': dict(hidden_size=32, skip_channels=64, dilation_cycles=2, layers_per_cycle=8),
  'base': dict(hidden_size=64, skip_channels=256, dilation_cycles=3, layers_per_cycle=10),
}

MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
  f'wavenet_{size}': (WaveNet, dict(options)) for size, options in VARIANTS.items()
}
