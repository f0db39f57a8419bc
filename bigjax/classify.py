"""Classify .wav files with a trained speech classifier.

  python -m bigjax.classify --workdir DIR FILE.wav [FILE.wav ...] [--top 3]

prints one line per file, `FILE: word (probability)` (with --top K, the K likeliest words,
comma-separated). The run's config and latest checkpoint come from
`bigjax.train.workdir.restore_from_workdir`; each file is read with `bigjax.data.wav.read_wav`
(16-bit PCM, averaged to mono), resampled to the run's `data.sample_rate` and padded or
cropped to `data.audio_samples` exactly as the training transforms do
(`bigjax.data.transforms.audio`). Bad input ends with a one-line message on stderr and exit
code 2.

From Python, `Classifier.from_workdir(DIR).probabilities(clips, sample_rate)` scores audio
arrays directly (how generated audio is judged, e.g. WaveNet's samples).
"""

import argparse
import sys
from typing import Sequence

import jax
import numpy as np

from bigjax.data.sets.speech import label_names
from bigjax.data.transforms.audio import audio_config, fit_length, resample
from bigjax.data.wav import read_wav
from bigjax.train.workdir import restore_from_workdir


class Classifier:
  """A restored speech classifier: audio clips -> class probabilities."""

  def __init__(self, config, model, variables):
    key = config.data.get('input_key', 'image')
    if key != 'audio':
      raise ValueError(f'the run classifies {key!r}, not audio: give a speech classifier run')
    self.labels = label_names(config.data.name)
    self.sample_rate, self.num_samples = audio_config(config.data)
    num_classes = getattr(model, 'num_classes', len(self.labels))
    if num_classes != len(self.labels):
      raise ValueError(
        f'the model has {num_classes} classes but {config.data.name!r} has {len(self.labels)}'
      )
    model_rate = getattr(model, 'sample_rate', self.sample_rate)
    if model_rate != self.sample_rate:
      raise ValueError(
        f'the model computes features at {model_rate} Hz but the run feeds it '
        f'{self.sample_rate} Hz audio: retrain with model.sample_rate = data.sample_rate'
      )
    self._forward = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False)))
    self.variables = variables

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None) -> 'Classifier':
    return cls(*restore_from_workdir(workdir, step))

  def prepare(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """float audio [n] at `sample_rate` -> [N] at the run's rate, as in training."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
      raise ValueError(f'expected mono audio [n], got shape {audio.shape}')
    return fit_length(resample(audio, sample_rate, self.sample_rate), self.num_samples)

  def probabilities(self, clips: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """float clips [n_i] in [-1, 1] at `sample_rate` -> probabilities [len(clips), K]."""
    batch = np.stack([self.prepare(c, sample_rate) for c in clips])  # [B, N]
    return np.asarray(self._forward(self.variables, batch))


def classify(workdir: str, paths: Sequence[str], top: int = 1) -> list[list[tuple[str, float]]]:
  """Per file, its `top` likeliest (label, probability) pairs, likeliest first."""
  if top < 1:
    raise ValueError(f'--top must be at least 1, got {top}')
  if not paths:
    raise ValueError('give at least one .wav file')
  classifier = Classifier.from_workdir(workdir)
  clips = [read_wav(p) for p in paths]
  out = []
  for audio, rate in clips:
    probs = classifier.probabilities([audio], rate)[0]
    order = np.argsort(-probs)[:top]
    out.append([(classifier.labels[i], float(probs[i])) for i in order])
  return out


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog='python -m bigjax.classify', description='Classify .wav files with a speech run.'
  )
  p.add_argument('--workdir', required=True, help='a speech classifier training run folder')
  p.add_argument('--top', type=int, default=1, help='how many likeliest words to print')
  p.add_argument('--verbose', action='store_true', help='show tracebacks')
  p.add_argument('files', nargs='+', metavar='FILE.wav')
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
  try:
    results = classify(args.workdir, args.files, args.top)
  except (ValueError, OSError) as e:
    if args.verbose:
      raise
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f'error: {message}', file=sys.stderr)
    return 2
  for path, best in zip(args.files, results):
    print(f'{path}: ' + ', '.join(f'{word} ({p:.3f})' for word, p in best))
  return 0


if __name__ == '__main__':
  sys.exit(main())
