"""The BERT configs train end to end (`test` argument) through the command line: the
pystdlib pre-train-then-fine-tune pair offline, Wikipedia and GLUE under
`tfds.testing.mock_data` (GLUE from a Hugging Face folder written by `bigjax.save_pretrained`);
what init_from loaded, created and dropped; and init_from's one-line errors for BERT."""

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import bigjax
from bigjax.data.builders.prepare import open_prepared
from bigjax.data.builders.pystdlib_syntax import PystdlibSyntax
from bigjax.train import cli, init_from
from bigjax.train.cli import apply_override, load_config
from bigjax.train.loop import build_run, restore_from_workdir
from bigjax.train.optim import param_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENCODER = ('embeddings/', 'encoder/', 'pooler/')  # what fine-tuning loads
CLASSIFIER = ['classifier/bias', 'classifier/kernel']  # what it adds
# A WordPiece vocab.txt: the specials at BERT's relative order, [PAD] = 0, then letters (the
# mock GLUE text is random letters) as word starts and continuations.
LETTERS = [chr(c) for c in range(ord('a'), ord('z') + 1)]
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *LETTERS, *[f'##{c}' for c in LETTERS]]


def _config(name):
  return os.path.join(ROOT, 'configs', f'{name}.py')


def _flags(name, workdir, data_dir, *extra):
  return [
    '--config',
    f'{_config(name)}:test',
    '--workdir',
    str(workdir),
    f'--config.data.data_dir={data_dir}',
    *extra,
  ]


def _train(name, workdir, data_dir, *extra, metrics=()):
  """Runs `name`:test to its 6 steps; returns the final evaluation, checked finite."""
  assert cli.main(_flags(name, workdir, data_dir, *extra)) == 0
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == 6  # the test configs train 6 steps
  assert all(math.isfinite(r['loss']) for r in records)
  final = evals[-1]
  for key in ('loss', *metrics):
    assert key in final and math.isfinite(final[key]), (key, final)
  return final


def _flat(tree):
  return {param_path(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _params(workdir):
  return _flat(restore_from_workdir(str(workdir))[2]['params'])


def _check_report(workdir, source, names, kind):
  """init_from.json: every encoder name of the source loaded, the classifier new, the
  pre-training heads dropped."""
  with open(os.path.join(workdir, init_from.REPORT_FILE)) as f:
    report = json.load(f)
  assert report['init_from'] == str(source) and report['kind'] == kind
  encoder = sorted(n for n in names if n.startswith(ENCODER))
  assert any(n.startswith('encoder/block_1/') for n in encoder) and 'pooler/kernel' in encoder
  assert report['loaded'] == encoder
  assert report['new'] == CLASSIFIER and report['skipped'] == [] and report['frozen'] == []
  assert report['dropped'] == sorted(n for n in names if n.startswith(('mlm/', 'nsp/')))
  assert 'nsp/kernel' in report['dropped'] and 'mlm/bias' in report['dropped']
  return report


# --- the offline pair: pre-train on pystdlib_mlm, fine-tune on pystdlib_syntax --------------


@pytest.fixture(scope='module')
def mlm_run(tmp_path_factory, data_dir):
  """bert_tiny_pystdlib_mlm:test: (workdir, final eval)."""
  workdir = tmp_path_factory.mktemp('bert_mlm')
  final = _train('bert_tiny_pystdlib_mlm', workdir, data_dir, metrics=('accuracy', 'nsp_accuracy'))
  return workdir, final


@pytest.mark.slow
def test_bert_tiny_pystdlib_mlm(mlm_run):
  workdir, final = mlm_run
  assert 0 <= final['accuracy'] <= 1 and 0 <= final['nsp_accuracy'] <= 1
  assert final['nsp_loss'] > 0
  assert os.path.isfile(workdir / 'tokenizer.json')  # learned on first use, for step 2
  names = set(_params(workdir))
  assert {'mlm/bias', 'nsp/kernel', 'pooler/kernel', 'embeddings/word/embedding'} <= names


def _build(name, workdir, data_dir, **overrides):
  """`build_run` of `name`:test with dotted-key overrides; its initial parameters."""
  config, _ = load_config(f'{_config(name)}:test')
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    apply_override(config, key, str(value))
  run = build_run(config, str(workdir))
  try:
    state, restored = run.initial_state(run.data.train_iter(config.train.batch_size, 0))
  finally:
    run.checkpointer.close()
  assert restored is None
  return run, _flat(state.params)


@pytest.mark.slow
def test_bert_tiny_pystdlib_finetune(mlm_run, tmp_path, data_dir):
  source, _ = mlm_run
  workdir = tmp_path / 'finetune'
  final = _train(
    'bert_tiny_pystdlib_finetune',
    workdir,
    data_dir,
    f'--config.init_from={source}',
    metrics=('accuracy', 'f1', 'mcc'),
  )
  assert 0 <= final['accuracy'] <= 1 and -1 <= final['mcc'] <= 1
  pretrained = _params(source)
  report = _check_report(workdir, source, pretrained, 'bigjax workdir')
  # data.tokenizer was empty: the run read the pre-training run's vocabulary, learned none.
  assert not os.path.exists(workdir / 'tokenizer.json')
  with open(workdir / 'config.json') as f:
    assert json.load(f)['data']['tokenizer'] == str(source)

  # The first state of each arm: the encoder is the pre-trained one with init_from, and a
  # fresh one without (the control arm of examples/bert_pystdlib.py, same vocabulary).
  run, loaded = _build(
    'bert_tiny_pystdlib_finetune', tmp_path / 'loaded', data_dir, init_from=source
  )
  assert 'loaded 39, new 2, skipped 0, dropped 7' in run.notes[0]
  _, scratch = _build(
    'bert_tiny_pystdlib_finetune',
    tmp_path / 'scratch',
    data_dir,
    init_from='',
    **{'data.tokenizer': source},
  )
  assert set(loaded) == set(scratch) == set(report['loaded'] + CLASSIFIER)
  assert not os.path.exists(tmp_path / 'scratch' / init_from.REPORT_FILE)
  for name in loaded:
    if name.startswith(ENCODER):
      np.testing.assert_array_equal(loaded[name], pretrained[name], err_msg=name)
      assert not np.array_equal(scratch[name], pretrained[name]), name


# --- Wikipedia and GLUE under mock_data ---------------------------------------------------


@pytest.mark.slow
def test_bert_base_wikipedia_mlm(tmp_path, data_dir):
  with tfds.testing.mock_data(num_examples=200):
    final = _train(
      'bert_base_wikipedia_mlm', tmp_path, data_dir, metrics=('accuracy', 'nsp_accuracy')
    )
  assert 0 <= final['accuracy'] <= 1
  assert os.path.isfile(tmp_path / 'tokenizer.json')  # learned from the mock articles


def _random(model, *inputs):
  """Random variables of `model` (N(0, 0.02); the shapes of `init`, without compiling it)."""
  abstract = jax.eval_shape(model.init, jax.random.key(0), *inputs)
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: (0.02 * rng.standard_normal(s.shape)).astype(s.dtype), abstract)


@pytest.fixture(scope='module')
def hf_folder(tmp_path_factory):
  """A Hugging Face BERT folder: a random bert_test pre-training model exported with
  `bigjax.save_pretrained`, with a vocab.txt of len(VOCAB) tokens; and its parameters."""
  folder = tmp_path_factory.mktemp('hf') / 'bert'
  model = bigjax.create_model('bert_test', head='pretraining', vocab_size=len(VOCAB))
  variables = _random(model, np.ones((1, 8), np.int32))
  bigjax.save_pretrained(model, variables, str(folder))
  (folder / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n')
  return folder, _flat(variables['params'])


@pytest.mark.slow
@pytest.mark.parametrize('name', ['bert_base_glue_sst2', 'bert_base_glue_mrpc'])
def test_bert_base_glue(name, hf_folder, tmp_path, data_dir):
  folder, theirs = hf_folder
  metrics = ('accuracy', 'f1') if name.endswith('mrpc') else ('accuracy',)
  with tfds.testing.mock_data(num_examples=48):
    final = _train(
      name,
      tmp_path,
      data_dir,
      f'--config.init_from={folder}',
      f'--config.model.vocab_size={len(VOCAB)}',  # the folder's vocabulary, not bert_test's
      metrics=metrics,
    )
  assert 0 <= final['accuracy'] <= 1
  report = _check_report(tmp_path, folder, theirs, 'Hugging Face folder')
  assert report['model'] == 'bert' and report['model_class'] == 'Bert'
  assert not os.path.exists(tmp_path / 'tokenizer.json')  # the folder's vocab.txt


# --- init_from errors: one line on stderr, exit code 2, the workdir untouched --------------


@pytest.fixture(scope='module')
def resnet_workdir(tmp_path_factory, data_dir):
  """A bigjax workdir of resnet_test (resnet18_digits:test) with one checkpoint, untrained."""
  workdir = tmp_path_factory.mktemp('resnet')
  config, _ = load_config(f'{_config("resnet18_digits")}:test')
  config.data.data_dir = data_dir
  run = build_run(config, str(workdir))
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), run.abstract)  # values unread
  run.checkpointer.save(1, state, None, run.meta)
  run.checkpointer.wait()
  run.checkpointer.close()
  return workdir


@pytest.fixture(scope='module')
def hf_weights_only(hf_folder, tmp_path_factory):
  """The BERT folder of `hf_folder` without its vocab.txt."""
  folder = tmp_path_factory.mktemp('hf_bare') / 'bert'
  shutil.copytree(hf_folder[0], folder, ignore=shutil.ignore_patterns('vocab.txt'))
  return folder


@pytest.fixture(scope='module')
def vit_folder(tmp_path_factory):
  """A Hugging Face ViT folder (`bigjax.save_pretrained` of a random vit_test)."""
  folder = tmp_path_factory.mktemp('hf_vit') / 'vit'
  model = bigjax.create_model('vit_test')
  variables = _random(model, np.zeros((1, 8, 8, 3), np.float32))
  bigjax.save_pretrained(model, variables, str(folder))
  return folder


# case -> (config, init_from fixture, extra flags, what the one-line message says)
BAD = {
  'vocab_size_mismatch': (
    'bert_tiny_pystdlib_finetune',
    'mlm_run',
    ['--config.model.vocab_size=300'],
    "parameter 'embeddings/word/embedding' has shape (200, 32) there but (300, 32) in this run",
  ),
  'resnet_workdir': (
    'bert_tiny_pystdlib_finetune',
    'resnet_workdir',
    [],
    'holds a ResNet (resnet_test), but this run trains a Bert (bert_test)',
  ),
  'vit_folder': (
    'bert_base_glue_sst2',
    'vit_folder',
    [],
    'holds a ViT (vit), but this run trains a Bert (bert_test)',
  ),
  # No vocabulary in the folder: the run learns one from the (mock) training split before
  # the parameters are matched; that file must not stay behind either.
  'vocab_size_mismatch_hf': (
    'bert_base_glue_sst2',
    'hf_weights_only',
    [],
    f"parameter 'embeddings/word/embedding' has shape ({len(VOCAB)}, 32) there but (128, 32)",
  ),
}


@pytest.fixture(scope='module')
def syntax_data(data_dir):
  """pystdlib_syntax prepared beforehand: its first preparation prints progress on stderr."""
  open_prepared(PystdlibSyntax, 'train', data_dir)


@pytest.mark.slow
@pytest.mark.parametrize('existing', [False, True], ids=['new_workdir', 'existing_workdir'])
@pytest.mark.parametrize('case', BAD)
def test_bad_init_from_is_one_line_and_touches_nothing(
  case, existing, request, syntax_data, tmp_path, data_dir, capsys, snapshot
):
  name, fixture, extra, match = BAD[case]
  source = request.getfixturevalue(fixture)
  source = source[0] if isinstance(source, tuple) else source
  workdir = tmp_path / 'run'
  if existing:
    workdir.mkdir()
    (workdir / 'notes.txt').write_text('keep me')
  before = snapshot(str(workdir))
  capsys.readouterr()
  with tfds.testing.mock_data(num_examples=48):
    code = cli.main(_flags(name, workdir, data_dir, f'--config.init_from={source}', *extra))
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  assert len(err.splitlines()) == 1, err
  assert err.startswith('error: init_from') and match in err, err
  assert snapshot(str(workdir)) == before


@pytest.mark.slow
def test_a_tokenizer_larger_than_the_model_is_an_error(mlm_run, tmp_path, data_dir, capsys):
  """Token ids past the embedding table would be looked up out of range: a one-line error."""
  source, _ = mlm_run
  workdir = tmp_path / 'run'
  capsys.readouterr()
  code = cli.main(
    _flags(
      'bert_tiny_pystdlib_finetune',
      workdir,
      data_dir,
      '--config.init_from=',
      f'--config.data.tokenizer={source}',
      '--config.model.vocab_size=50',
    )
  )
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  assert len(err.splitlines()) == 1, err
  assert 'ids but the model has vocab_size=50: set --config.model.vocab_size=' in err, err
  assert not os.path.exists(workdir)
