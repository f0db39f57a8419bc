"""Fine-tuning from a checkpoint: init_from, its report and errors, freezing, layer decay."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigjax.registry import create_model
from bigjax.train import init_from, optim
from bigjax.train.cli import main
from bigjax.train.loop import build_run, restore_from_workdir

# vit_test (or mlp) on the 8x8 digits: patch 4, 5 tokens, two blocks, a 10-way head; lr
# high enough that 4 steps move every parameter.
CONFIG = """
from configs import common


def get_config(arg=None):
  c = common.base_config()
  if arg == 'mlp':
    c.model.update(name='mlp', num_classes=10, width=32)
  else:
    c.model.update(name='vit_test', num_classes=10, patch_size=4)
  c.data.update(name='digits', image_size=0, **common.image_stats('digits'))
  c.optim.update(name='adamw', lr=0.01)
  c.schedule.name = 'constant'
  c.train.update(steps=4, batch_size=16, eval_batch_size=16, eval_steps=1)
  c.train.update(log_every=2, eval_every=0, checkpoint_every=4)
  return c
"""


@pytest.fixture(scope='module')
def config_file(tmp_path_factory):
  path = tmp_path_factory.mktemp('config') / 'vit_digits.py'
  path.write_text(CONFIG)
  return str(path)


def _flags(config_file, data_dir, steps=4, extra=(), arg='vit'):
  return [
    '--config',
    f'{config_file}:{arg}',
    f'--config.data.data_dir={data_dir}',
    f'--config.train.steps={steps}',
    f'--config.train.checkpoint_every={steps}',
    *extra,
  ]


def _config(config_file, data_dir, **overrides):
  """The run of `_flags` as a ConfigDict, for build_run; `overrides` by dotted key."""
  from bigjax.train.cli import apply_override, load_config

  config, _ = load_config(f'{config_file}:vit')
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    apply_override(config, key, str(value))
  return config


def _params(workdir):
  return {
    optim.param_path(p): np.asarray(v)
    for p, v in jax.tree_util.tree_leaves_with_path(restore_from_workdir(workdir)[2]['params'])
  }


def _flat(tree):
  return {optim.param_path(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope='module')
def source(tmp_path_factory, config_file, data_dir):
  """Workdir A: vit_test trained 4 steps on digits."""
  workdir = str(tmp_path_factory.mktemp('source') / 'a')
  assert main(['--workdir', workdir, *_flags(config_file, data_dir)]) == 0
  return workdir


def test_loads_matching_params_and_skips_a_new_head(source, config_file, tmp_path, data_dir):
  """A 5-way head under init_from_skip: everything else equals A's, the head is fresh."""
  workdir = str(tmp_path / 'b')
  config = _config(
    config_file, data_dir, init_from=source, init_from_skip='^head/', **{'model.num_classes': 5}
  )
  run = build_run(config, workdir)
  state, restored = run.initial_state(run.data.train_iter(16, 0))
  assert restored is None
  ours, theirs = _flat(state.params), _params(source)
  assert set(ours) == set(theirs)
  for name, value in ours.items():
    if name.startswith('head/'):
      assert value.shape != theirs[name].shape
    else:
      np.testing.assert_array_equal(value, theirs[name], err_msg=name)
  report = json.load(open(os.path.join(workdir, 'init_from.json')))
  assert report['init_from'] == source and report['model'] == 'vit_test'
  assert report['kind'] == 'bigjax workdir' and report['step'] == 4
  assert report['skipped'] == ['head/bias', 'head/kernel']
  assert report['new'] == [] and report['dropped'] == [] and report['frozen'] == []
  assert len(report['loaded']) == len(ours) - 2
  notes = '\n'.join(run.notes)
  assert f'init_from {source} (bigjax workdir, vit_test, step 4): loaded {len(ours) - 2}' in notes
  assert 'new 0, skipped 2, dropped 0' in notes
  assert 'block_0 (16), block_1 (16), cls, norm/bias' in notes
  assert "skipped (init_from_skip='^head/'): head/bias, head/kernel" in notes


@pytest.mark.slow
def test_freeze_loaded_then_resume_ignores_init_from(
  source, config_file, tmp_path, data_dir, capsys
):
  """Frozen parameters stay bit-identical over training and a resume; the head moves."""
  workdir = str(tmp_path / 'b')
  flags = [
    '--config.model.num_classes=5',
    f'--config.init_from={source}',
    '--config.init_from_skip=^head/',
    '--config.freeze_loaded=true',
    '--config.optim.weight_decay=0.5',  # must not move the frozen kernels either
    '--config.optim.layer_decay=0.8',  # scales outside the frozen split
  ]
  assert main(['--workdir', workdir, *_flags(config_file, data_dir, steps=3, extra=flags)]) == 0
  out = capsys.readouterr().out
  assert out.count(f'init_from {source} (bigjax workdir') == 1
  assert 'freeze_loaded: 38 loaded parameters get no updates' in out
  theirs, after = _params(source), _params(workdir)
  for name, value in after.items():
    if not name.startswith('head/'):
      assert np.array_equal(value, theirs[name]), name
  rng = jax.random.split(jax.random.key(0))[0]  # the run's init key (seed 0)
  fresh = create_model('vit_test', num_classes=5).init(
    {'params': rng, 'dropout': rng}, jnp.zeros((1, 8, 8, 1))
  )['params']['head']
  assert not np.allclose(after['head/kernel'], fresh['kernel'])  # trained
  assert np.abs(after['head/bias']).max() > 0

  # Resume to step 5 with init_from now pointing nowhere: ignored, and still frozen.
  flags[1] = f'--config.init_from={tmp_path / "gone"}'
  argv = [*_flags(config_file, data_dir, steps=5, extra=flags), '--config.allow_changes=true']
  assert main(['--workdir', workdir, *argv]) == 0
  out = capsys.readouterr().out
  assert 'resuming from the checkpoint at step 3' in out
  assert f'init_from {tmp_path / "gone"} ignored: resuming' in out
  resumed = _params(workdir)
  assert not np.array_equal(resumed['head/kernel'], after['head/kernel'])
  for name, value in resumed.items():
    if not name.startswith('head/'):
      assert np.array_equal(value, theirs[name]), name


# A bad init_from: (flags, what the one-line message says). Every one leaves the workdir
# exactly as it was, whether it did not exist or held files.
BAD = {
  'missing_path': (['--config.init_from={tmp}/nowhere'], 'does not exist'),
  'not_a_checkpoint': (['--config.init_from={tmp}'], 'is neither a bigjax workdir'),
  'workdir_without_checkpoint': (['--config.init_from={tmp}/empty_run'], 'without a checkpoint'),
  'another_architecture': ([], 'holds a ViT (vit_test), but this run trains a MLP (mlp)'),
  'head_shape': (
    ['--config.model.num_classes=5'],
    "parameter 'head/bias' has shape (10,) there but (5,) in this run (1 more differ)",
  ),
  'patch_shape': (
    ['--config.model.patch_size=2'],
    "--config.init_from_skip='^patch_embed/'",
  ),
  'nothing_loads': (
    ['--config.init_from_skip=.'],
    "nothing to load, init_from_skip='.' skips every parameter",
  ),
  'bad_skip_regex': (['--config.init_from_skip=(head'], 'is not a regular expression'),
  'freeze_without_init_from': (
    ['--config.init_from=', '--config.freeze_loaded=true'],
    'freeze_loaded=True needs init_from',
  ),
}
CONFIG_ARG = {'another_architecture': 'mlp'}  # the config's argument, else 'vit'


@pytest.mark.parametrize('existing', [False, True], ids=['new_workdir', 'existing_workdir'])
@pytest.mark.parametrize('case', BAD)
def test_bad_init_from_is_one_line_and_touches_nothing(
  case, existing, source, config_file, tmp_path, data_dir, capsys, snapshot
):
  flags, match = BAD[case]
  arg = CONFIG_ARG.get(case, 'vit')
  (tmp_path / 'empty_run' / 'checkpoints').mkdir(parents=True)
  (tmp_path / 'empty_run' / 'config.json').write_text('{}')
  workdir = tmp_path / 'run'
  if existing:
    workdir.mkdir()
    (workdir / 'notes.txt').write_text('keep me')
  before = snapshot(str(workdir))
  flags = [f.format(tmp=tmp_path) for f in flags]
  if not any(f.startswith('--config.init_from=') for f in flags):
    flags.append(f'--config.init_from={source}')
  code = main(['--workdir', str(workdir), *_flags(config_file, data_dir, extra=flags, arg=arg)])
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  assert len(err.splitlines()) == 1, err
  assert match in err, err
  assert snapshot(str(workdir)) == before


def test_model_state_loads_with_the_parameters():
  """ResNet's BatchNorm statistics ('batch_stats/...') are matched and loaded too."""
  from bigjax.train.state import init_state

  model = create_model('resnet_test')
  x = (jnp.zeros((1, 8, 8, 3)),)
  theirs = model.init(jax.random.key(1), *x)
  theirs = {
    **_flat(theirs['params']),
    **{f'batch_stats/{k}': v + 1.0 for k, v in _flat(theirs['batch_stats']).items()},
  }
  source = init_from.Source(
    '/ckpt',
    'bigjax workdir',
    'resnet_test',
    'ResNet',
    1,
    {k: v.shape for k, v in theirs.items()},
    lambda wanted: {k: theirs[k].astype(d) for k, d in wanted.items()},
  )
  state = init_state(model, optax.sgd(0.1), jax.random.key(0), x)
  plan = init_from.FineTune(source=source, freeze=True)
  plan.match(state.params, state.model_state)
  assert 'batch_stats/stem_bn/mean' in plan.loaded and plan.new == plan.dropped == []
  assert plan.frozen and not any(n.startswith('batch_stats/') for n in plan.frozen)
  loaded = plan.load(state, None)
  ours = {**_flat(loaded.params), **_flat(loaded.model_state)}  # 'batch_stats/...'
  assert set(ours) == set(theirs)
  for name, value in ours.items():
    np.testing.assert_array_equal(value, theirs[name], err_msg=name)


def test_nothing_shared_names_both_sides():
  source = init_from.Source(
    '/ckpt', 'bigjax workdir', 'x', 'ViT', 1, {'a/kernel': (2, 2)}, lambda wanted: {}
  )
  with pytest.raises(ValueError, match=r'no parameter name is shared \(it has a/kernel'):
    init_from.FineTune(source=source).match({'b': {'kernel': jnp.zeros((2, 2))}}, {})


def test_tokenizer_of_a_folder(tmp_path):
  """The init_from folder whose tokenizer a run with an empty data.tokenizer reads."""
  run = tmp_path / 'run'  # a bigjax workdir with a learned tokenizer.json
  run.mkdir()
  (run / 'tokenizer.json').write_text('{}')
  hf = tmp_path / 'hf'  # a Hugging Face folder with BERT's vocab.txt
  hf.mkdir()
  (hf / 'vocab.txt').write_text('[PAD]\n[UNK]\n')
  bare = tmp_path / 'bare'  # weights only (an image model, a folder without a vocabulary)
  bare.mkdir()
  (bare / 'config.json').write_text('{}')
  (bare / 'vocab.json').write_text('{}')  # RoBERTa's BPE half: not read as a vocabulary
  (tmp_path / 'bare' / 'tokenizer.json.tmp').write_text('')
  assert init_from.tokenizer_of(str(run)) == str(run)
  assert init_from.tokenizer_of(str(hf)) == str(hf)
  assert init_from.tokenizer_of(str(bare)) == ''
  assert init_from.tokenizer_of(str(tmp_path / 'missing')) == ''
  assert init_from.tokenizer_of(str(run / 'tokenizer.json')) == ''  # a file, not a folder
  assert init_from.tokenizer_of('') == ''
  (bare / 'tokenizer.json').mkdir()  # a folder of that name is not a tokenizer
  assert init_from.tokenizer_of(str(bare)) == ''


@pytest.mark.parity
def test_hugging_face_folder_source(config_file, tmp_path, data_dir):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  hf_config = transformers.ViTConfig(
    image_size=8,
    patch_size=4,
    num_channels=1,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    num_labels=3,
  )
  folder = str(tmp_path / 'hf')
  transformers.ViTForImageClassification(hf_config).save_pretrained(folder)
  import bigjax

  _, variables = bigjax.from_pretrained(folder)
  theirs = _flat(variables['params'])
  config = _config(config_file, data_dir, init_from=folder, init_from_skip='^head/')
  run = build_run(config, str(tmp_path / 'run'))
  state, _ = run.initial_state(run.data.train_iter(16, 0))
  ours = _flat(state.params)
  for name, value in ours.items():
    if not name.startswith('head/'):
      np.testing.assert_array_equal(value, theirs[name], err_msg=name)
  report = json.load(open(tmp_path / 'run' / 'init_from.json'))
  assert report['kind'] == 'Hugging Face folder' and report['model'] == 'vit'
  assert report['skipped'] == ['head/bias', 'head/kernel'] and report['dropped'] == []


# --- the optimiser: layer-wise learning-rate decay and frozen parameters ---------------


def _shapes(name, **overrides):
  model = create_model(name, **overrides)
  x = jnp.zeros((1, 8, 8, 1)) if name.startswith('vit') else jnp.ones((1, 6), jnp.int32)
  inputs = (x,) if name.startswith('vit') else (x, x)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))['params']


def _scale_of(params, decay=0.5):
  scales = optim.layer_decay_scales(params, decay)
  return {
    optim.param_path(p): np.asarray(s) for p, s in jax.tree_util.tree_leaves_with_path(scales)
  }


def test_layer_decay_scales_vit_unrolled_and_scanned():
  d = 0.5  # L = 2 blocks: depths 0 (embeddings) .. 3 (after the last block)
  scales = _scale_of(_shapes('vit_test'), d)
  for name, s in scales.items():
    top = name.split('/')[0]
    expected = {'patch_embed': d**3, 'cls': d**3, 'pos_embed': d**3, 'block_0': d**2,
                'block_1': d, 'norm': 1.0, 'head': 1.0}[top]  # fmt: skip
    assert s.shape == () and s == pytest.approx(expected), name
  scanned = _scale_of(_shapes('vit_test', scan_layers=True), d)
  leaf = scanned['layers/attn/query/kernel']  # [L, D, H, K] -> one factor per slice
  assert leaf.shape == (2, 1, 1, 1)
  np.testing.assert_allclose(leaf.ravel(), [d**2, d])
  assert scanned['layers/mlp_norm/scale'].shape == (2, 1)
  assert scanned['pos_embed/embedding'] == pytest.approx(d**3) and scanned['head/bias'] == 1


def test_layer_decay_depths_of_other_families():
  # The encoder-decoder Transformer: encoder blocks first, then the decoder's.
  depths, total = optim.layer_depths(_shapes('transformer_test'))
  flat = {k: int(np.max(v)) for k, v in _flat(depths).items()}
  n = total // 2
  assert flat['embed/embedding'] == 0
  assert flat['encoder/block_0/attn/query/kernel'] == 1
  assert flat[f'encoder/block_{n - 1}/mlp/fc2/bias'] == n
  assert flat['decoder/block_0/self_attn/query/kernel'] == n + 1
  assert flat[f'decoder/block_{n - 1}/mlp/fc2/bias'] == total
  # BERT's names (bigjax/models/bert.py): embeddings 0, encoder/block_i i + 1, the rest L + 1.
  leaf = jnp.zeros((2,))
  bert = {
    'embeddings': {'word': {'embedding': leaf}, 'norm': {'scale': leaf}},
    'encoder': {f'block_{i}': {'attn_norm': {'scale': leaf}} for i in range(12)},
    'pooler': {'kernel': leaf},
    'classifier': {'kernel': leaf},
  }
  depths, total = optim.layer_depths(bert)
  assert total == 12
  assert depths['embeddings']['word']['embedding'] == 0
  assert depths['encoder']['block_10']['attn_norm']['scale'] == 11  # natural order, not '1' '10'
  assert depths['pooler']['kernel'] == depths['classifier']['kernel'] == 13
  with pytest.raises(ValueError, match='set optim.layer_decay=1.0'):
    optim.layer_decay_scales({'dense': {'kernel': leaf}, 'head': {'kernel': leaf}}, 0.5)


def test_layer_decay_scales_the_update():
  params = jax.tree.map(jnp.ones_like, _shapes('vit_test'))
  cfg = ml_collections.ConfigDict({'name': 'sgd', 'layer_decay': 0.5})
  tx = optim.make_optimizer(cfg, optax.constant_schedule(1.0))
  updates, _ = tx.update(params, tx.init(params), params)
  got, want = _flat(updates), _scale_of(params, 0.5)
  for name in got:
    np.testing.assert_allclose(got[name], -want[name] * np.ones_like(got[name]), err_msg=name)
  with pytest.raises(ValueError, match=r'layer_decay must be in \(0, 1\]'):
    optim.make_optimizer(ml_collections.ConfigDict({'name': 'sgd', 'layer_decay': 1.5}), None)


def test_frozen_parameters_get_no_update_and_no_state():
  params = jax.tree.map(jnp.ones_like, _shapes('vit_test'))
  cfg = ml_collections.ConfigDict({'name': 'adamw', 'weight_decay': 0.5, 'layer_decay': 0.8})
  frozen = {'block_0/attn/query/kernel', 'patch_embed/kernel'}
  tx = optim.make_optimizer(cfg, optax.constant_schedule(0.1), frozen=frozen)
  state = tx.init(params)
  updates, _ = tx.update(params, state, params)
  for name, u in _flat(updates).items():
    assert (np.all(u == 0)) == (name in frozen), name
  moments = {optim.param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)}
  assert not any(f in m for f in frozen for m in moments)
  assert any('block_0/attn/key/kernel' in m for m in moments)
