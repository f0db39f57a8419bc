"""The Transformer configs train end to end (`test` argument), and bigjax.generate reads
the workdirs they leave."""

import json
import math
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigjax import generate
from bigjax.data.builders.algorithmic import DIGIT0, EOS, PLUS
from bigjax.data.tokenizers import pad_operands
from bigjax.data.transforms.text import ReverseTarget
from bigjax.train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train(name, workdir, data_dir, *extra):
  config = os.path.join(ROOT, 'configs', f'{name}.py')
  rc = cli.main(
    [
      '--config',
      f'{config}:test',
      '--workdir',
      str(workdir),
      f'--config.data.data_dir={data_dir}',
      *extra,
    ]
  )
  assert rc == 0
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == 6  # the test configs train 6 steps
  assert all(math.isfinite(r['loss']) for r in records)
  assert 'exact_match' in evals[-1]
  return evals[-1]


@pytest.fixture(scope='module')
def addition_run(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp('tadd')
  _train('transformer_addition', workdir, data_dir)
  return workdir


def test_addition_formatting():
  ids = lambda text: [DIGIT0 + int(c) if c.isdigit() else PLUS for c in text]  # noqa: E731
  np.testing.assert_array_equal(pad_operands(ids('12+345'), 4), ids('0012+0345'))
  np.testing.assert_array_equal(pad_operands(ids('1234+5'), 4), ids('1234+0005'))
  record = {'src': np.array(ids('12+345')), 'tgt': np.array(ids('357'))}
  out = ReverseTarget(4).map(record)
  np.testing.assert_array_equal(out['tgt'], ids('753'))  # least significant digit first
  np.testing.assert_array_equal(out['src'], ids('0012+0345'))
  np.testing.assert_array_equal(ReverseTarget(0).map(record)['src'], record['src'])


def test_prompt_codecs():
  config = lambda **data: ml_collections.ConfigDict({'data': data, 'model': {}})  # noqa: E731
  text = generate.codec_for(config(name='pystdlib'), '')
  assert text.eos_id is None
  assert text.decode(text.encode('héllo, wörld')) == 'héllo, wörld'
  adder = generate.codec_for(
    config(name='algorithmic_reversed', task='addition', pad_operands=True), ''
  )
  ids = lambda s: [DIGIT0 + int(c) if c.isdigit() else PLUS for c in s]  # noqa: E731
  np.testing.assert_array_equal(adder.encode('12 + 345'), ids('00000012+00000345') + [EOS])
  assert adder.decode(ids('753') + [EOS, 0, 0]) == '357'  # answers come out reversed
  plain = generate.codec_for(config(name='algorithmic', task='addition'), '')
  np.testing.assert_array_equal(plain.encode('12+3'), ids('12+3') + [EOS])
  assert plain.decode(ids('15') + [EOS, 9]) == '15'


@pytest.mark.slow
def test_addition_config_and_generate(addition_run, capsys):
  assert os.listdir(addition_run / 'checkpoints')
  rc = generate.main(
    [
      '--workdir',
      str(addition_run),
      '--prompt',
      '12+345',
      '--max_new_tokens',
      '6',
      '--method',
      'beam',
      '--beam_size',
      '2',
    ]
  )
  assert rc == 0
  out = capsys.readouterr().out.strip().splitlines()[-1]
  # At most 6 symbols, from the answer vocabulary (the tiny model is untrained).
  assert len(out.replace('<s>', 'B')) <= 6 and set(out) <= set('0123456789+<s>')
  assert generate.main(['--workdir', str(addition_run), '--prompt', '12*3']) == 2
  assert 'digits and "+"' in capsys.readouterr().err


@pytest.mark.slow
def test_wmt_config_under_mock_data_and_generate(tmp_path, data_dir, capsys):
  with tfds.testing.mock_data(num_examples=64):
    _train('transformer_wmt14_ende', tmp_path, data_dir)
  assert os.path.exists(tmp_path / 'tokenizer.json')  # trained on first use, in the workdir
  rc = generate.main(
    [
      '--workdir',
      str(tmp_path),
      '--prompt',
      'ab cd ef',
      '--max_new_tokens',
      '5',
      '--method',
      'sample',
      '--top_p',
      '0.9',
    ]
  )
  assert rc == 0
  assert isinstance(capsys.readouterr().out, str)


@pytest.mark.slow
def test_generate_cli_exit_code_without_checkpoint(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'data': {'name': 'algorithmic'}}))
  result = subprocess.run(
    [sys.executable, '-m', 'bigjax.generate', '--workdir', str(tmp_path), '--prompt', '1+2'],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=120,
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'no checkpoint' in result.stderr
