"""The distillation trainer (`config.distill`): a frozen teacher inside the one train step.

A LeNet teacher trained a few steps on the digits teaches an MLP student (another family):
the teacher's variables stay bitwise identical and are in neither the optimiser state nor
the student's checkpoint; a hint's projection is trained and checkpointed with the student;
an interrupted distillation run resumes to the same parameters; the precomputed store gives
the same soft loss as the online teacher; bad teacher settings are one-line errors before
anything is written.
"""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import optax
import pytest

from bigjax.train import distill, optim
from bigjax.train.checkpoint import Checkpointer
from bigjax.train.loop import build_run, restore_from_workdir, train
from configs import common


def _digits_config(data_dir, model: dict, steps: int) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.model.update(num_classes=10, **model)
  c.data.update(name='digits', image_size=0, data_dir=data_dir, **common.image_stats('digits'))
  c.optim.update(name='adam', lr=0.01)
  c.schedule.name = 'constant'
  c.train.update(steps=steps, batch_size=16, eval_batch_size=16, eval_steps=1)
  c.train.update(log_every=1, eval_every=0, checkpoint_every=steps)
  return c


def _student(data_dir, teacher: str, steps: int = 4, **distill_options):
  c = _digits_config(data_dir, {'name': 'mlp', 'width': 16, 'depth': 1}, steps)
  c.distill.update(teacher=teacher, **distill_options)
  return c


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _flat(tree):
  return {optim.param_path(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope='module')
def teacher(tmp_path_factory, data_dir):
  """A LeNet trained 4 steps on the digits (batch statistics free: plain LeNet)."""
  workdir = str(tmp_path_factory.mktemp('teacher') / 'lenet')
  c = _digits_config(data_dir, {'name': 'lenet'}, 4)
  train(build_run(c, workdir), tty=False)
  return workdir


def test_teacher_is_frozen_and_absent_from_the_students_state(tmp_path, data_dir, teacher):
  workdir = str(tmp_path / 'student')
  c = _student(data_dir, teacher, alpha=0.7, hints='features:features', hint_weight=0.5)
  run = build_run(c, workdir)
  before = jax.tree.map(np.array, run.frozen)
  expected = _flat(restore_from_workdir(teacher)[2])  # the teacher's latest checkpoint
  assert _flat(before).keys() == expected.keys()
  assert all(np.array_equal(a, expected[k]) for k, a in _flat(before).items())
  train(run, tty=False)
  # Bitwise untouched: never donated, never updated.
  after = _flat(jax.device_get(run.frozen))
  assert after.keys() == _flat(before).keys()
  assert all(np.array_equal(after[k], v) for k, v in _flat(before).items())

  ckpt = Checkpointer(workdir, read_only=True)
  step = ckpt.latest_step()
  shapes = ckpt.state_shapes(step)
  ckpt.close()
  names = {'/'.join(k) for k in shapes['params']}
  student_names = set(_flat(restore_from_workdir(workdir)[2]['params']))
  teacher_names = set(_flat(before['params']))
  # The checkpoint holds the student and the hint's projection (64 -> LeNet's width), no
  # teacher parameter (LeNet's convolutions), and no model state borrowed from it.
  assert names == student_names | {'loss_terms/hint/pair_0/kernel', 'loss_terms/hint/pair_0/bias'}
  assert not names & (teacher_names - student_names)  # no conv_*, fc_*
  assert shapes['params'][('head', 'kernel')] == (16, 10)  # the student's head, not LeNet's
  assert shapes['params'][('loss_terms', 'hint', 'pair_0', 'kernel')][0] == 16
  # The optimiser state mirrors the trainable parameters only: its moments have exactly the
  # parameters' shapes.
  state = run.checkpointer.restore(step, run.abstract)
  adam = [
    s
    for s in jax.tree.leaves(
      state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)
    )
    if isinstance(s, optax.ScaleByAdamState)
  ]
  assert adam and all(jax.tree.structure(a.mu) == jax.tree.structure(state.params) for a in adam)
  moment_sizes = sum(x.size for a in adam for x in jax.tree.leaves(a.mu))
  assert moment_sizes == sum(x.size for x in jax.tree.leaves(state.params))

  rows = [m for m in _metrics(workdir) if m['split'] == 'train']
  for m in rows:  # objective = (1 - alpha) task + alpha distill + hint weight * hint
    assert m['distill'] > 0 and m['hint'] > 0
    np.testing.assert_allclose(
      m['objective'], 0.3 * m['loss'] + 0.7 * m['distill'] + 0.5 * m['hint'], rtol=1e-5
    )
  # The hint is learned: its projection moved from its initialisation.
  fresh = jax.jit(run.term_init)(jax.random.fold_in(jax.random.split(jax.random.key(0))[0], 1))
  moved = np.abs(
    state.params['loss_terms']['hint']['pair_0']['kernel'] - fresh['hint']['pair_0']['kernel']
  )
  assert moved.max() > 1e-4


def test_interrupted_distillation_resumes_to_the_same_parameters(tmp_path, data_dir, teacher):
  options = dict(alpha=0.5, temperature=3.0, hints='features:features', hint_weight=0.1)
  whole = str(tmp_path / 'whole')
  train(build_run(_student(data_dir, teacher, steps=6, **options), whole), tty=False)

  cut = str(tmp_path / 'cut')
  c = _student(data_dir, teacher, steps=6, **options)
  c.train.checkpoint_every = 3
  train(build_run(c, cut), tty=False)
  shutil.rmtree(os.path.join(cut, 'checkpoints', '6'))  # as if killed after step 3's save
  run = build_run(c, cut)
  assert run.checkpointer.latest_step() == 3
  train(run, tty=False)

  a = _flat(restore_from_workdir(whole)[2])
  b = _flat(restore_from_workdir(cut)[2])
  assert a.keys() == b.keys()
  for k in a:
    assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize('loss, top_k', [('kl', 0), ('topk', 3)])
def test_precomputed_store_gives_the_online_soft_loss(tmp_path, data_dir, teacher, loss, top_k):
  online = str(tmp_path / 'online')
  stored = str(tmp_path / 'stored')
  options = dict(temperature=2.0, loss=loss, top_k=top_k)
  train(build_run(_student(data_dir, teacher, steps=3, **options), online), tty=False)
  c = _student(data_dir, teacher, steps=3, precompute=True, **options)
  train(build_run(c, stored), tty=False)
  store = os.path.join(stored, distill.STORE_DIR)
  assert os.path.exists(os.path.join(store, 'meta.json'))
  a = [m for m in _metrics(online) if m['split'] == 'train']
  b = [m for m in _metrics(stored) if m['split'] == 'train']
  assert [m['step'] for m in a] == [m['step'] for m in b]
  for x, y in zip(a, b):  # no augmentation: the stored logits are the online ones
    np.testing.assert_allclose(x['distill'], y['distill'], rtol=2e-5)
    np.testing.assert_allclose(x['objective'], y['objective'], rtol=2e-5)
  if top_k:
    return
  # A resumed run reads the same store: not recomputed; another teacher is refused (full
  # logits do not depend on the temperature, the teacher's path does).
  stamp = os.path.getmtime(os.path.join(store, 'meta.json'))
  c.allow_changes = True  # the resumed run trains one step more (and below, hotter)
  c.train.steps = 4
  train(build_run(c, stored), tty=False)
  assert os.path.getmtime(os.path.join(store, 'meta.json')) == stamp
  c.distill.temperature = 5.0
  train(build_run(c, stored), tty=False)
  c.distill.teacher = os.path.join(teacher, 'checkpoints', '4')
  with pytest.raises(ValueError, match='teacher outputs'):
    build_run(c, stored)


def test_bad_teacher_settings_fail_before_anything_is_written(tmp_path, data_dir, teacher):
  workdir = str(tmp_path / 'never')
  cases = [
    ({'teacher': str(tmp_path / 'missing')}, FileNotFoundError, 'does not exist'),
    ({'teacher': str(tmp_path)}, FileNotFoundError, 'neither a bigjax workdir'),
    ({'teacher': teacher, 'loss': 'nope'}, ValueError, 'unknown distill.loss'),
    ({'teacher': teacher, 'alpha': 1.5}, ValueError, r'distill.alpha=1.5 is out of range'),
    ({'teacher': teacher, 'hints': 'features', 'hint_weight': 1.0}, ValueError, 'student:teacher'),
    ({'teacher': teacher, 'hints': 'nothing:features', 'hint_weight': 1.0}, ValueError, 'sows'),
    ({'teacher': teacher, 'precompute': True, 'hints': 'features:features', 'hint_weight': 1.0},
     ValueError, 'precompute'),
    ({'teacher': teacher, 'attention_weight': 1.0}, ValueError, 'attention maps'),
  ]  # fmt: skip
  for options, error, message in cases:
    c = _student(data_dir, '')
    c.distill.update(**options)
    with pytest.raises(error, match=message) as info:
      build_run(c, workdir)
    assert '\n' not in str(info.value)
    assert not os.path.exists(workdir), options
  # A teacher of another label space (10 classes for a 12-class student).
  c = _student(data_dir, teacher)
  c.model.num_classes = 12
  with pytest.raises(ValueError, match='same task and label space'):
    build_run(c, workdir)
  assert not os.path.exists(workdir)


def test_layer_pairs_spread_evenly_and_parse():
  assert distill.layer_pairs('', 2, 4) == [(0, 1), (1, 3)]
  assert distill.layer_pairs('', 3, 12) == [(0, 3), (1, 7), (2, 11)]
  assert distill.layer_pairs('', 4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]
  assert distill.layer_pairs('0:1, -1:-1', 2, 4) == [(0, 1), (1, 3)]
  with pytest.raises(ValueError, match='attention layers'):
    distill.layer_pairs('2:0', 2, 4)


def test_student_starts_from_a_checkpoint_while_distilling(tmp_path, data_dir, teacher):
  start = str(tmp_path / 'start')
  train(build_run(_student(data_dir, '', steps=2), start), tty=False)
  workdir = str(tmp_path / 'student')
  c = _student(data_dir, teacher, steps=2, hints='features:features', hint_weight=0.1)
  c.init_from = start
  run = build_run(c, workdir)
  state, _ = run.initial_state(run.data.train_iter(16, 0))
  loaded = _flat(restore_from_workdir(start)[2]['params'])
  got = _flat(state.variables['params'])
  assert got.keys() == loaded.keys()
  assert all(np.array_equal(got[k], v) for k, v in loaded.items())
  with open(os.path.join(workdir, 'init_from.json')) as f:
    report = json.load(f)
  assert sorted(report['loaded']) == sorted(loaded)
  assert report['new'] == ['loss_terms/hint/pair_0/bias', 'loss_terms/hint/pair_0/kernel']
  train(run, tty=False)
  assert all(m['distill'] > 0 for m in _metrics(workdir) if m['split'] == 'train')
