"""Simple baselines for WaveNet's held-out bits per sample on a speech data set.

  PYTHONPATH=. python bench/wavenet_baselines.py --config configs/wavenet_spoken_words.py
      [--data_dir DIR] [--workdir RUN] [--classifier SPEECH_RUN] [--per_word 3]
      [--temperature 1.0 ...]

Reads the config's data exactly as training does (its sample rate and clip length,
`bigjax.data.transforms.audio`; no crops, no shifts), turns every clip into 8-bit mu-law
codes and scores the test split's next codes (samples 1 .. N - 1 of every clip, the
positions the audio_lm task scores) with models fitted on the train split:

  uniform   8 bits: any code, equally likely;
  unigram   the histogram of the train codes (add-one smoothing);
  previous  the code given the previous one: a 256 x 256 table of train transition counts
            (add-0.1 smoothing), i.e. the best "like the last sample" predictor.

With --workdir (a trained wavenet_spoken_words run) it also evaluates that run on the same
positions, and with --classifier (a trained speech classifier run at the WaveNet's rate,
e.g. configs/speech_cnn_spoken_words.py:8k) it generates --per_word clips of every word
with the WaveNet (a clip's length, at each --temperature) and reports the classifier's
accuracy on them (chance: 1 / 20), the proxy for how the words sound. Prints one JSON
object. Not a test: it reads the whole data set.
"""

import argparse
import importlib.util
import json
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bigjax.data.datasets import dataset_spec  # noqa: E402
from bigjax.layers.audio import mu_law_encode  # noqa: E402


def load_config(path: str):
  spec = importlib.util.spec_from_file_location('config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def clips(data, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  """(audio [n, N] float32, labels [n]) of a split, through the eval-time transforms."""
  spec = dataset_spec(data.name)
  source = spec.open_split(split, data_dir, data)
  transforms = spec.transforms(data, False)
  audio, labels = [], []
  for i in range(len(source)):
    example = source[i]
    for t in transforms:
      example = t.map(example)
    audio.append(example['audio'])
    labels.append(int(example['label']))
  return np.stack(audio), np.asarray(labels)


def baselines(train_codes: np.ndarray, test_codes: np.ndarray) -> dict[str, float]:
  """Bits per next sample on test of the uniform, unigram and previous-code models."""
  levels = 256
  hist = np.bincount(train_codes[:, 1:].ravel(), minlength=levels) + 1.0
  unigram = -np.log2(hist / hist.sum())
  pairs = np.zeros((levels, levels))
  np.add.at(pairs, (train_codes[:, :-1].ravel(), train_codes[:, 1:].ravel()), 1.0)
  pairs += 0.1
  previous = -np.log2(pairs / pairs.sum(1, keepdims=True))
  prev, nxt = test_codes[:, :-1].ravel(), test_codes[:, 1:].ravel()
  return {
    'uniform_bits': 8.0,
    'unigram_bits': float(unigram[nxt].mean()),
    'previous_code_bits': float(previous[prev, nxt].mean()),
  }


def wavenet_bits(workdir: str, test_audio: np.ndarray, test_labels: np.ndarray) -> float:
  """The run's bits per sample on the same positions (full clips, as its evaluation)."""
  import jax

  from bigjax.train.tasks import get_task
  from bigjax.train.workdir import restore_from_workdir

  config, model, variables = restore_from_workdir(workdir)
  task = get_task('audio_lm', config)
  forward = jax.jit(lambda v, b: task.loss(model.apply(v, *task.inputs(b)), b).sum())
  total, count, batch = 0.0, 0, 50
  for i in range(0, len(test_audio), batch):
    b = {'audio': test_audio[i : i + batch], 'label': test_labels[i : i + batch]}
    total += float(forward(variables, b))
    count += b['audio'].shape[0] * (b['audio'].shape[1] - 1)
  return total / count / math.log(2)


def generated_accuracy(
  workdir: str, classifier: str, per_word: int, seconds: float, temperature: float
) -> dict:
  """Generates per_word clips of every word (one batched call) and classifies them."""
  from bigjax.classify import Classifier
  from bigjax.data.sets.speech import label_names
  from bigjax.generate import generate_audio
  from bigjax.train.workdir import restore_from_workdir

  config, _, _ = restore_from_workdir(workdir)
  judge = Classifier.from_workdir(classifier)
  words = label_names(config.data.name)
  asked = [w for w in words for _ in range(per_word)]
  audio, rate = generate_audio(workdir, asked, seconds=seconds, temperature=temperature)
  guesses = np.argmax(judge.probabilities(list(audio), rate), axis=-1)  # [len(asked)]
  predictions = {}
  for word, guess in zip(asked, guesses):
    predictions.setdefault(word, []).append(judge.labels[int(guess)])
  right = np.mean([judge.labels[int(g)] == w for w, g in zip(asked, guesses)])
  return {
    'temperature': temperature,
    'generated_accuracy': float(right),
    'chance': 1 / len(words),
    'predictions': predictions,
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default=os.path.join(ROOT, 'configs', 'wavenet_spoken_words.py'))
  p.add_argument('--data_dir', default=None)
  p.add_argument('--workdir', default=None, help='a trained WaveNet run to score too')
  p.add_argument('--classifier', default=None, help='a speech classifier run')
  p.add_argument('--per_word', type=int, default=3)
  p.add_argument('--temperature', type=float, action='append', help='repeatable; default 1.0')
  args = p.parse_args()
  data = load_config(args.config).data
  train, _ = clips(data, 'train', args.data_dir)
  test, labels = clips(data, 'test', args.data_dir)
  result = {
    'data': data.name,
    'sample_rate': int(data.sample_rate),
    'audio_samples': int(data.audio_samples),
    'test_clips': len(test),
    **baselines(mu_law_encode(train), mu_law_encode(test)),
  }
  if args.workdir:
    result['wavenet_bits'] = wavenet_bits(args.workdir, test, labels)
    if args.classifier:
      seconds = int(data.audio_samples) / int(data.sample_rate)  # a clip's length
      result['generated'] = [
        generated_accuracy(args.workdir, args.classifier, args.per_word, seconds, t)
        for t in args.temperature or [1.0]
      ]
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
