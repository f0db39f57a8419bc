"""The WaveNet configs run end to end with their `test` argument (the offline spoken words,
and Speech Commands under `mock_data`), and `python -m bigjax.generate --word` says a word
with the trained spoken-words run."""

import ast
import json
import math
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigjax import generate
from bigjax.data.wav import read_wav
from bigjax.train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = ['wavenet_spoken_words', 'wavenet_speech_commands']


def _config_path(name):
  return os.path.join(ROOT, 'configs', f'{name}.py')


def _check_run(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == 6  # the test configs train 6 steps
  final = evals[-1]
  assert all(math.isfinite(r['loss']) for r in records)
  assert final['bits_per_sample'] == pytest.approx(final['loss'] / math.log(2), rel=1e-5)
  assert 0 < final['bits_per_sample'] <= 9 and 0 <= final['accuracy'] <= 1
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']


@pytest.mark.slow
def test_wavenet_spoken_words_trains_and_says_a_word(tmp_path, data_dir, capsys):
  pytest.importorskip('espeakng_loader')
  run = str(tmp_path / 'run')
  argv = ['--config', f'{_config_path("wavenet_spoken_words")}:test', '--workdir', run]
  assert cli.main(argv + [f'--config.data.data_dir={data_dir}']) == 0
  assert 'receptive field 9 samples' in capsys.readouterr().out  # logged at the start
  _check_run(run)

  out = str(tmp_path / 'yes.wav')
  argv = ['--workdir', run, '--word', 'yes', '--out', out, '--seconds', '0.01', '--seed', '3']
  assert generate.main(argv) == 0
  audio, rate = read_wav(out)
  assert rate == 8000 and audio.shape == (80,) and np.abs(audio).max() <= 1
  capsys.readouterr()
  assert generate.main(['--workdir', run, '--word', 'banana', '--out', out]) == 2
  assert 'unknown word' in capsys.readouterr().err
  assert generate.main(['--workdir', run, '--word', 'yes']) == 2  # no --out


def test_generation_needs_a_word_conditioned_wavenet(monkeypatch, tmp_path, capsys):
  """Runs that cannot say a word are refused with one line, before any sampling."""
  import ml_collections

  import bigjax
  from bigjax.train import loop

  config = ml_collections.ConfigDict(
    {'data': {'name': 'spoken_words'}, 'task': {'name': 'audio_lm', 'label_key': 'label'}}
  )
  model = bigjax.create_model('wavenet_test')  # unconditioned
  monkeypatch.setattr(loop, 'restore_from_workdir', lambda workdir: (config, model, None))
  argv = ['--workdir', str(tmp_path), '--word', 'yes', '--out', str(tmp_path / 'a.wav')]
  assert generate.main(argv) == 2
  assert 'not conditioned on the word' in capsys.readouterr().err
  config.task.name = 'classification'
  assert generate.main(argv) == 2
  assert 'needs a WaveNet run' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'a.wav')


@pytest.mark.slow
def test_wavenet_speech_commands_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=64):
    argv = ['--config', f'{_config_path("wavenet_speech_commands")}:test']
    assert cli.main(argv + ['--workdir', str(tmp_path)]) == 0
  _check_run(tmp_path)


@pytest.mark.parametrize('name', CONFIGS)
def test_configs_are_complete(name):
  full = cli.load_config(_config_path(name))[0]
  small = cli.load_config(f'{_config_path(name)}:test')[0]
  for c in (full, small):
    assert c.task.name == 'audio_lm' and c.model.name.startswith('wavenet_')
    assert c.model.sample_rate == c.data.sample_rate  # the log-mel and the log line agree
    assert c.model.num_labels == len(generate_words(c.data.name))
  assert small.train.steps < full.train.steps and small.model.name == 'wavenet_test'
  with open(_config_path(name)) as f:
    doc = ast.get_docstring(ast.parse(f.read()))
  assert 'Command: python train.py --config configs/' in doc and 'Expected' in doc
  with pytest.raises(ValueError, match='test'):
    cli.load_config(f'{_config_path(name)}:tset')


def generate_words(data_name):
  from bigjax.data.sets.speech import label_names

  return label_names(data_name)
