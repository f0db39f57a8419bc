"""The distillation configs under `tfds.testing.mock_data`: the ResNet-50 -> ResNet-18
ImageNet config's `test` variant trains to its end from a teacher workdir written here, and
the teacher it builds is the checkpoint `distill.teacher` names (the workdir's latest, or a
`checkpoints/<step>` folder); the BERT-base -> BERT-tiny SST-2 config's trains from a
Hugging Face folder written by `bigjax.save_pretrained`; the documented hint and attention
options are wired; a missing teacher or an unknown loss is one line and exit code 2, and
leaves no workdir behind."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import bigjax
from bigjax.train import cli
from bigjax.train.cli import apply_override, load_config
from bigjax.train.loop import build_run
from bigjax.train.optim import param_path
from bigjax.train.state import TERM_PARAMS_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESNET = 'distill_resnet50_to_resnet18_imagenet2012'
BERT = 'distill_bert_base_to_tiny_glue_sst2'
# A WordPiece vocab.txt the mock GLUE text (random letters) tokenizes with: BERT's specials,
# [PAD] = 0, then letters as word starts and continuations.
LETTERS = [chr(c) for c in range(ord('a'), ord('z') + 1)]
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *LETTERS, *[f'##{c}' for c in LETTERS]]


def _config(name):
  return os.path.join(ROOT, 'configs', f'{name}.py')


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _check_distilled(workdir, steps):
  """Every train record carries a finite, non-negative `distill` term (KL >= 0), the run
  evaluated at its last step; returns the train records."""
  records = _records(workdir)
  train = [r for r in records if r['split'] == 'train']
  evals = [r for r in records if r['split'] == 'eval']
  assert train and evals and evals[-1]['step'] == steps, records
  assert all(math.isfinite(r['loss']) for r in records), records
  for r in train:
    assert 'distill' in r and math.isfinite(r['distill']) and r['distill'] >= 0, r
  assert math.isfinite(evals[-1]['loss']) and 0 <= evals[-1]['accuracy'] <= 1
  return train


# --- ResNet-50 -> ResNet-18 on (mock) ImageNet --------------------------------------------


def _random_state(abstract, rng):
  """A TrainState of `abstract`'s shapes: random parameters, batch-norm running means 0 and
  variances 1, optimiser state 0."""
  return abstract.replace(
    params=jax.tree.map(lambda s: 0.1 * rng.standard_normal(s.shape, np.float32), abstract.params),
    opt_state=jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract.opt_state),
    model_state=jax.tree_util.tree_map_with_path(
      lambda p, s: np.full(s.shape, param_path(p).endswith('var'), s.dtype),
      abstract.model_state,
    ),
  )


@pytest.fixture(scope='module')
def resnet_teacher(tmp_path_factory):
  """A teacher workdir of resnet50_imagenet2012:test (a bottleneck resnet_test) with two
  checkpoints of different parameters, at steps 1 and 2; and those parameters by step.
  They are random rather than trained: a distillation run needs the teacher's outputs, not
  good ones, and training would cost compiles."""
  workdir = tmp_path_factory.mktemp('teacher') / 'resnet50'
  config, _ = load_config(f'{_config("resnet50_imagenet2012")}:test')
  with tfds.testing.mock_data(num_examples=32):
    run = build_run(config, str(workdir))
  rng = np.random.default_rng(0)
  saved = {}
  for step in (1, 2):
    state = _random_state(run.abstract, rng).replace(step=np.int32(step))
    run.checkpointer.save(step, state, None, run.meta)
    saved[step] = _flat(state.params)
  run.checkpointer.wait()
  run.checkpointer.close()
  return workdir, saved


def _flat(tree):
  return {param_path(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.slow
def test_resnet_distillation_trains(resnet_teacher, tmp_path, capsys):
  """The config's `test` variant to its end, the teacher a workdir (its latest checkpoint)."""
  teacher, _ = resnet_teacher
  workdir = tmp_path / 'student'
  with tfds.testing.mock_data(num_examples=32):
    code = cli.main(
      [
        '--config',
        f'{_config(RESNET)}:test',
        '--workdir',
        str(workdir),
        f'--config.distill.teacher={teacher}',
      ]
    )
  out = capsys.readouterr().out
  assert code == 0, out
  assert f'distilling from resnet_test from {teacher} (latest checkpoint): loss=kl alpha=1.0' in out
  train = _check_distilled(workdir, 6)
  assert any(r['distill'] > 0 for r in train), train
  with open(workdir / 'config.json') as f:
    model = json.load(f)['model']
  assert model['name'] == 'resnet_test' and model['block'] == 'basic'  # not the teacher's


@pytest.mark.parametrize('at', ['workdir', 'checkpoint_folder'])
def test_resnet_teacher_is_the_named_checkpoint(at, resnet_teacher, tmp_path):
  """The run's frozen teacher holds the parameters of the step that distill.teacher names:
  the latest of a workdir, or that of a checkpoints/<step> folder (the same run as above
  from then on: only the teacher's variables differ; built, not trained, to save compiles)."""
  teacher, saved = resnet_teacher
  path, step = (teacher, 2) if at == 'workdir' else (teacher / 'checkpoints' / '1', 1)
  config, _ = load_config(f'{_config(RESNET)}:test')
  config.distill.teacher = str(path)
  with tfds.testing.mock_data(num_examples=32):
    run = build_run(config, str(tmp_path / 'student'))
  run.checkpointer.close()
  frozen = _flat(jax.device_get(run.frozen['params']))
  assert set(frozen) == set(saved[step])
  for name, value in frozen.items():
    np.testing.assert_array_equal(value, saved[step][name], err_msg=name)
    assert not np.array_equal(value, saved[3 - step][name]), name
  described = f'{teacher} (step 1)' if step == 1 else f'{teacher} (latest checkpoint)'
  assert f'distilling from resnet_test from {described}' in run.notes[-1], run.notes


# --- BERT-base -> BERT-tiny on (mock) SST-2, the teacher a Hugging Face folder --------------


@pytest.fixture(scope='module')
def bert_teacher(tmp_path_factory):
  """A Hugging Face BertForSequenceClassification folder: a random 2-class bert_test exported
  with `bigjax.save_pretrained`, with a vocab.txt of VOCAB."""
  folder = tmp_path_factory.mktemp('hf') / 'bert'
  model = bigjax.create_model(
    'bert_test', head='classification', num_classes=2, vocab_size=len(VOCAB)
  )
  tokens = np.ones((1, 8), np.int32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), tokens)
  rng = np.random.default_rng(0)
  # Wide enough (std 0.5) that the teacher's predictions are far from uniform.
  variables = jax.tree.map(lambda s: (0.5 * rng.standard_normal(s.shape)).astype(s.dtype), abstract)
  bigjax.save_pretrained(model, variables, str(folder))
  (folder / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n')
  # The teacher the run reads back: the 2-class head, not a pre-training one (whose logits
  # the trainer would cut to the student's 2 columns without complaint).
  with open(folder / 'config.json') as f:
    assert json.load(f)['architectures'] == ['BertForSequenceClassification']
  loaded, _ = bigjax.from_pretrained(str(folder))
  assert (loaded.head, loaded.num_classes) == ('classification', 2)
  return folder


@pytest.mark.slow
def test_bert_distillation_from_hugging_face_folder(bert_teacher, tmp_path, capsys):
  workdir = tmp_path / 'student'
  with tfds.testing.mock_data(num_examples=48):
    code = cli.main(
      [
        '--config',
        f'{_config(BERT)}:test',
        '--workdir',
        str(workdir),
        f'--config.distill.teacher={bert_teacher}',
        f'--config.data.tokenizer={bert_teacher}',  # the teacher's vocabulary
      ]
    )
  out = capsys.readouterr().out
  assert code == 0, out
  assert f'distilling from Bert from {bert_teacher} (Hugging Face)' in out, out
  train = _check_distilled(workdir, 6)
  assert any(r['distill'] > 0 for r in train), train
  assert not os.path.exists(workdir / 'tokenizer.json')  # read the teacher's, learned none


# --- the documented options are wired (built, not trained: their losses live elsewhere) ---


def _build(name, workdir, **overrides):
  config, _ = load_config(f'{_config(name)}:test')
  for key, value in overrides.items():
    apply_override(config, key, str(value))
  with tfds.testing.mock_data(num_examples=32):
    run = build_run(config, str(workdir))
  run.checkpointer.close()
  return run


def test_resnet_feature_hint_option(resnet_teacher, tmp_path):
  """hint_weight > 0 turns on the config's 'features:features' hint: the student's pooled
  features get a projection to the teacher's width (16 -> 64 at the test sizes; 512 -> 2048
  for ResNet-18 and ResNet-50), trained with the student."""
  teacher, _ = resnet_teacher
  overrides = {'distill.teacher': teacher, 'distill.hint_weight': 1.0}
  run = _build(RESNET, tmp_path / 'student', **overrides)
  assert "hints='features:features' x1.0" in run.notes[-1], run.notes
  projection = run.abstract.params[TERM_PARAMS_KEY]['hint']['pair_0']
  assert projection['kernel'].shape == (16, 64) and projection['bias'].shape == (64,)


def test_bert_attention_option(bert_teacher, tmp_path):
  """attention_weight > 0 pairs the student's attention maps with the teacher's."""
  overrides = {
    'distill.teacher': bert_teacher,
    'data.tokenizer': bert_teacher,
    'distill.attention_weight': 1.0,
  }
  run = _build(BERT, tmp_path / 'student', **overrides)
  assert run.notes[-1].endswith('attention x1.0'), run.notes


# --- bad input: one line, exit code 2, no workdir ----------------------------------------


@pytest.mark.parametrize('existing', [False, True], ids=['new_workdir', 'empty_workdir'])
@pytest.mark.parametrize('name', [RESNET, BERT])
def test_missing_teacher_is_one_line(name, existing, bert_teacher, tmp_path, capsys):
  workdir = tmp_path / 'run'
  if existing:
    workdir.mkdir()
  flags = ['--config.distill.teacher=/does/not/exist']
  if name == BERT:  # a vocabulary that exists, so that the teacher is what is missing
    flags.append(f'--config.data.tokenizer={bert_teacher}')
  capsys.readouterr()
  with tfds.testing.mock_data(num_examples=32):
    code = cli.main(['--config', f'{_config(name)}:test', '--workdir', str(workdir), *flags])
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  assert len(err.splitlines()) == 1, err
  assert err.startswith("error: distill.teacher '/does/not/exist' does not exist"), err
  # Nothing written: not config.json, not the tokenizer, not the folder itself.
  assert os.listdir(workdir) == [] if existing else not os.path.exists(workdir)


def test_unknown_loss_through_train_py(tmp_path):
  """train.py itself: the config is refused before any data is opened or file written."""
  workdir = tmp_path / 'run'
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'train.py'),
      '--config',
      f'{_config(RESNET)}:test',
      '--config.distill.loss=nope',
      '--workdir',
      str(workdir),
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
    timeout=120,
  )
  err = result.stderr.strip()
  assert result.returncode == 2, err
  assert len(err.splitlines()) == 1, err
  assert err == "error: unknown distill.loss 'nope': choose one of kl, reverse_kl, mse, topk"
  assert not os.path.exists(workdir)
