"""bigjax.classify: .wav files through a trained speech classifier, as in training."""

import jax
import ml_collections
import numpy as np
import pytest

from bigjax import classify
from bigjax.data.builders.spoken_words import WORDS
from bigjax.data.datasets import dataset_spec
from bigjax.data.transforms.audio import resample
from bigjax.data.wav import to_float, write_wav
from bigjax.train.workdir import restore_from_workdir


def test_classify_wav_files_as_training_sees_them(speech_run, data_dir, tmp_path, capsys):
  config, model, variables = restore_from_workdir(speech_run)
  data = ml_collections.ConfigDict({**config.data.to_dict(), 'data_dir': data_dir})
  spec = dataset_spec('spoken_words')
  source = spec.open_split('test', data_dir, data)
  (transform,) = spec.transforms(data, False)
  records = [source[i] for i in range(3)]
  paths = []
  for i, r in enumerate(records):  # one at 16 kHz, one at 22,050 Hz, one at 8 kHz
    rate = (16000, 22050, 8000)[i]
    paths.append(str(tmp_path / f'word{i}.wav'))
    write_wav(paths[-1], resample(to_float(r['audio']), 16000, rate), rate)

  assert classify.main(['--workdir', speech_run, '--top', '2', *paths]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 3
  for path, line in zip(paths, lines):
    name, rest = line.split(': ')
    assert name == path
    (w1, p1), (w2, p2) = [part.rstrip(')').split(' (') for part in rest.split(', ')]
    assert w1 in WORDS and w2 in WORDS and w1 != w2 and 1 >= float(p1) >= float(p2) >= 0

  # The file at the training rate gives what the model gives the training transform's output.
  direct = jax.nn.softmax(
    model.apply(variables, transform.map(records[0])['audio'][None], train=False)
  )[0]
  ((best,),) = classify.classify(speech_run, paths[:1])
  assert best == (WORDS[int(np.argmax(direct))], pytest.approx(float(direct.max()), abs=1e-4))


def test_bad_input_is_one_line_and_exit_2(speech_run, tmp_path, capsys):
  text = tmp_path / 'not.wav'
  text.write_text('hello')
  for argv in (
    ['--workdir', speech_run, str(text)],
    ['--workdir', speech_run, str(tmp_path / 'missing.wav')],
    ['--workdir', str(tmp_path), str(text)],
    ['--workdir', speech_run, '--top', '0', str(text)],
  ):
    assert classify.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1
