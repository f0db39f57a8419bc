"""Sharding on one mesh (bigjax.layers.partitioning, bigjax.train.sharding).

On the 8 fake CPU devices: one training step of each Transformer family (and a ResNet, for
batch norm) under data parallelism, FSDP, FSDP + tensor and expert parallelism equals the
step on 1 device; the state's shardings are those the rules give; FSDP divides the
per-device parameter bytes; checkpoints move between meshes; train.py runs under FSDP and
resumes. Tiny variants (one block, or a scanned stack) keep each compile short.
"""

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import bigjax
from bigjax.layers import partitioning
from bigjax.train import optim, sharding
from bigjax.train.checkpoint import Checkpointer
from bigjax.train.loop import _abstract_state, state_shardings
from bigjax.train.state import TERM_PARAMS_KEY, init_state
from bigjax.train.step import make_train_step
from bigjax.train.tasks import get_task
from configs import common

B = 8  # examples: they divide over every layout's batch axes

LAYOUTS = {
  'data8': dict(data=8),
  'fsdp8': dict(data=1, fsdp=8),
  'dp2_fsdp2_tp2': dict(data=2, fsdp=2, tensor=2),
  'ep4_dp2': dict(data=2, expert=4),
}
# Test variants, made smaller still; gpt2_test's dims divide by 8 (for exact FSDP factors)
# and it scans its blocks (the `layers` axis).
MODELS = {
  'gpt2_test': dict(num_heads=8, hidden_size=64, mlp_dim=128, scan_layers=True),
  'llama_test': dict(num_layers=1),
  'mixtral_test': dict(num_layers=1),
  'bert_test': dict(num_layers=1),
  'vit_test': dict(num_layers=1),
  'transformer_test': dict(num_encoder_layers=1, num_decoder_layers=1),
  'clip_test': dict(vision_layers=1, text_layers=1),
  'resnet_test': {},
}


def _config(optimizer: str = 'sgd'):
  config = common.base_config()
  config.optim.name = optimizer
  config.optim.lr = 0.1
  config.schedule.name = 'constant'
  return config


def _mesh(devices=None, **sizes):
  config = common.base_config().mesh
  config.update({'data': -1, **sizes})
  return sharding.make_mesh(config, devices)


def _batch(name: str) -> tuple[str, dict]:
  """(task name, a batch of B examples) for the model `name`."""
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 64, (B, 9)).astype(np.int32)
  images = lambda side: rng.normal(size=(B, side, side, 3)).astype(np.float32)  # noqa: E731
  if name in ('vit_test', 'resnet_test'):
    return 'classification', {
      'image': images(8),
      'label': rng.integers(0, 10, (B,)).astype(np.int32),
    }
  if name == 'bert_test':
    return 'mlm', {
      'input_ids': ids[:, :8],
      'segment_ids': np.zeros((B, 8), np.int32),
      'mlm_labels': np.where(rng.random((B, 8)) < 0.3, ids[:, 1:], -1).astype(np.int32),
    }
  if name == 'transformer_test':
    return 'seq2seq', {'src': ids[:, 1:], 'tgt_in': ids[:, :-1], 'tgt_out': ids[:, 1:]}
  if name == 'clip_test':
    return 'contrastive', {'image': images(16), 'text': ids[:, :5]}
  return 'lm', {'inputs': ids[:, :-1], 'targets': ids[:, 1:]}


@functools.cache
def _setup(name: str, optimizer: str = 'sgd'):
  """(model, tx, step function, batch, inputs) of a test variant."""
  config = _config(optimizer)
  model = bigjax.create_model(name, **MODELS[name])
  task_name, batch = _batch(name)
  task = get_task(task_name, config)
  schedule, tx = optim.from_config(config)
  inputs = tuple(np.asarray(x)[:1] for x in task.inputs(batch))
  return model, tx, make_train_step(model, task, config, schedule, tx), batch, inputs


@functools.cache
def _initial(name: str, optimizer: str = 'sgd'):
  """The initial state of a test variant (on one device)."""
  model, tx, _, _, inputs = _setup(name, optimizer)
  return jax.jit(lambda: init_state(model, tx, jax.random.key(0), inputs))()


def _abstract(name: str, mesh, rules: str = 'auto', optimizer: str = 'sgd'):
  model, tx, _, _, inputs = _setup(name, optimizer)
  return _abstract_state(model, tx, inputs, mesh, None, rules)


def _step(name: str, mesh, rules: str = 'auto'):
  """(loss, new state, abstract state) of one train step of `name` on `mesh`."""
  _, _, step, batch, _ = _setup(name)
  state = _initial(name)
  abstract = _abstract(name, mesh, rules)
  shardings = state_shardings(abstract)
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  jitted = jax.jit(
    sharding.under_rules(step, mesh, partitioning.rules(rules)),
    in_shardings=(shardings, batch_sh, repl),
    out_shardings=(shardings, repl),
  )
  new, metrics = jitted(
    jax.device_put(state, shardings), sharding.global_batch(batch, mesh), jax.random.key(1)
  )
  return float(metrics['loss'][0] / metrics['loss'][1]), new, abstract


@functools.cache
def _run(name: str, layout: str):
  """`_step` of `name` on the layout's mesh ('one': 1 device), once per session."""
  mesh = _mesh(jax.devices()[:1]) if layout == 'one' else _mesh(**LAYOUTS[layout])
  return _step(name, mesh)


CASES = [(name, layout) for name in ('gpt2_test', 'bert_test', 'vit_test') for layout in LAYOUTS]
CASES = [c for c in CASES if c[1] != 'ep4_dp2'] + [
  ('mixtral_test', 'ep4_dp2'),
  ('mixtral_test', 'dp2_fsdp2_tp2'),
  ('transformer_test', 'dp2_fsdp2_tp2'),
  ('clip_test', 'dp2_fsdp2_tp2'),
  ('resnet_test', 'fsdp8'),  # batch norm: the batch statistics are global under SPMD
]


@pytest.mark.parametrize('name,layout', CASES)
def test_one_step_equals_one_device(name, layout):
  loss, new, abstract = _run(name, layout)
  ref_loss, ref = _run(name, 'one')[:2]
  ref = jax.device_get(ref)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # noqa: E731
  jax.tree.map(close, jax.device_get(new.params), ref.params)
  jax.tree.map(close, jax.device_get(new.model_state), ref.model_state)  # batch_stats
  jax.tree.map(close, jax.device_get(new.opt_state), ref.opt_state)
  # The step returns the state in the rules' shardings, and they split something.
  assert jax.tree.map(lambda x: x.sharding, new) == state_shardings(abstract)
  specs = [x.sharding.spec for x in jax.tree.leaves(new.params)]
  assert layout == 'data8' or any(any(s) for s in specs)


def _leaf(tree, suffix: str):
  """The one leaf of `tree` whose '/'-joined dict path ends with `suffix`."""
  found = [
    x
    for path, x in jax.tree_util.tree_leaves_with_path(tree)
    if ('/' + '/'.join(sharding._keys(path))).endswith('/' + suffix)
  ]
  assert len(found) == 1, (suffix, len(found))
  return found[0]


def _spec(tree, suffix: str) -> P:
  return _leaf(tree, suffix).sharding.spec


def test_parameter_and_optimizer_shardings_are_the_rules():
  mesh = _mesh(data=2, fsdp=2, tensor=2)
  a = _abstract('gpt2_test', mesh, 'fsdp_tensor', optimizer='adamw')
  # Megatron: query/key/value and fc1 split on their output units, out and fc2 on their
  # inputs; the width over fsdp; a scanned stack's leading `layers` axis unsplit.
  assert _spec(a.params, 'attn/query/kernel') == P(None, 'fsdp', 'tensor', None)
  assert _spec(a.params, 'attn/out/kernel') == P(None, 'tensor', None, 'fsdp')
  assert _spec(a.params, 'mlp/fc1/kernel') == P(None, 'fsdp', 'tensor')
  assert _spec(a.params, 'mlp/fc2/kernel') == P(None, 'tensor', 'fsdp')
  assert _spec(a.params, 'embed/embedding') == P('tensor', 'fsdp')
  assert _spec(a.params, 'final_norm/scale') == P('fsdp')
  # FSDP fallback: a bias without an embed axis takes fsdp on its largest free axis.
  assert _spec(a.params, 'mlp/fc1/bias') == P(None, 'tensor')  # never on `layers`
  assert _spec(a.params, 'attn/query/bias') == P(None, 'tensor', 'fsdp')
  # Adam's moments mirror their parameter; its count and the step are replicated.
  for part in ('mu', 'nu'):
    moments = [
      x
      for p, x in jax.tree_util.tree_leaves_with_path(a.opt_state)
      if f'.{part}[' in jax.tree_util.keystr(p)
    ]
    assert [m.sharding for m in moments] == [x.sharding for x in jax.tree.leaves(a.params)]
  assert all(x.sharding.spec == P() for x in jax.tree.leaves(a.opt_state) if x.ndim == 0)
  assert a.step.sharding.spec == P()
  # The same mesh under other presets.
  zero3 = _abstract('gpt2_test', mesh, 'zero3').params
  assert _spec(zero3, 'attn/query/kernel') == P(None, ('data', 'fsdp'), None, None)
  data = _abstract('gpt2_test', mesh, 'data').params
  assert all(not any(x.sharding.spec) for x in jax.tree.leaves(data))
  # The default mesh (data=-1) under 'auto' stays plain data parallelism.
  default = _abstract('gpt2_test', _mesh(), 'auto')
  assert all(not any(x.sharding.spec) for x in jax.tree.leaves(default))
  # Experts over 'expert', their MLP over fsdp and tensor; the router's experts too.
  moe = _abstract('mixtral_test', _mesh(expert=2, fsdp=2, tensor=2)).params
  assert _spec(moe, 'mlp/fc1/kernel') == P('expert', 'fsdp', 'tensor')
  assert _spec(moe, 'mlp/fc2/kernel') == P('expert', 'tensor', 'fsdp')
  assert _spec(moe, 'mlp/router/kernel') == P('fsdp', 'expert')
  # A dimension the mesh axis does not divide stays unsplit on it (4 heads, tensor=8).
  llama = _abstract('llama_test', _mesh(data=1, tensor=8)).params
  assert _spec(llama, 'attn/query/kernel') == P(None, None, None)
  assert _spec(llama, 'mlp/fc1/kernel') == P(None, 'tensor')


def test_frozen_masked_states_and_loss_term_params_follow_their_parameter():
  mesh = _mesh(data=2, fsdp=4)
  model, _, _, _, inputs = _setup('vit_test')
  config = _config('adamw')
  config.optim.weight_decay = 0.1  # a masked weight decay
  _, tx = optim.from_config(config, frozen={'head/kernel', 'head/bias'})
  hint = lambda rng: {'hint': {'kernel': jnp.zeros((32, 16))}}  # noqa: E731
  a = _abstract_state(model, tx, inputs, mesh, hint, 'fsdp')
  query = _leaf(a.params, 'block_0/attn/query/kernel').sharding
  assert query.spec == P('fsdp', None, None)
  mirrored = [
    x.sharding
    for path, x in jax.tree_util.tree_leaves_with_path(a.opt_state)
    if '/'.join(sharding._keys(path)).endswith('block_0/attn/query/kernel')
  ]
  assert mirrored and all(s == query for s in mirrored)  # mu and nu, inside multi_transform
  term = a.params[TERM_PARAMS_KEY]['hint']['kernel']
  assert term.sharding.spec == P('fsdp', None)  # no rule: FSDP on its largest axis


def _ways(named) -> int:
  """Into how many parts a NamedSharding splits an array."""
  axes = [
    a for entry in named.spec if entry for a in ((entry,) if isinstance(entry, str) else entry)
  ]
  return math.prod(named.mesh.shape[a] for a in axes)


def _device_bytes(tree) -> int:
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


def test_fsdp_divides_the_per_device_parameter_bytes():
  state = _initial('gpt2_test')
  mesh = _mesh(data=1, fsdp=8)
  abstract = _abstract('gpt2_test', mesh)
  params = jax.device_put(state.params, state_shardings(abstract).params)
  total = sum(x.nbytes for x in jax.tree.leaves(state.params))
  expected = sum(
    x.size * x.dtype.itemsize // _ways(x.sharding) for x in jax.tree.leaves(abstract.params)
  )
  measured = _device_bytes(params)
  assert measured == expected
  assert total / measured > 7.5  # every parameter of this variant divides by 8
  assert _device_bytes(jax.device_put(state.params, sharding.replicated(mesh))) == total


def test_unknown_preset_is_a_one_line_error():
  with pytest.raises(ValueError, match="mesh.rules='megatron' is not a preset: use one of auto"):
    partitioning.rules('megatron')


def test_constraints_are_the_identity_outside_a_rules_context():
  x = jnp.ones((4, 3, 8))
  assert partitioning.constrain(x, ('batch', 'length', 'act_embed')) is x
  mesh = _mesh(data=1, fsdp=8)
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    assert partitioning.constrain(x, ('batch', 'length', 'act_embed')) is x  # no rules
  with partitioning.nn.logical_axis_rules(partitioning.rules('auto')):
    assert partitioning.constrain(x, ('batch', 'length', 'act_embed')) is x  # no mesh


# ------------------------------------------------------------------ checkpoints across meshes
def test_checkpoints_restore_onto_other_meshes(tmp_path):
  """Saved on 8 devices (data parallel), restored on 4 and on 1; and dp -> fsdp -> fsdp +
  tensor; every restore has the target's shardings and the saved values."""
  state = _initial('gpt2_test')  # sgd: its momentum mirrors the parameters
  state = state.replace(
    params=jax.tree.map(lambda x: x + jnp.arange(x.size).reshape(x.shape) * 1e-3, state.params)
  )
  saved = jax.device_get(state)

  def save(workdir, mesh, rules):
    shardings = state_shardings(_abstract('gpt2_test', mesh, rules))
    ckpt = Checkpointer(str(workdir))
    ckpt.save(1, jax.device_put(state, shardings), None, {'model': 'gpt2_test'})
    ckpt.wait()
    ckpt.close()

  def restore(workdir, mesh, rules):
    abstract = _abstract('gpt2_test', mesh, rules)
    ckpt = Checkpointer(str(workdir))
    restored = ckpt.restore(1, abstract)
    ckpt.close()
    assert jax.tree.map(lambda x: x.sharding, restored) == state_shardings(abstract)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), saved)
    return restored

  save(tmp_path / 'dp8', _mesh(), 'auto')
  restore(tmp_path / 'dp8', _mesh(jax.devices()[:4]), 'auto')
  restore(tmp_path / 'dp8', _mesh(jax.devices()[:1]), 'auto')
  fsdp = restore(tmp_path / 'dp8', _mesh(data=2, fsdp=4), 'fsdp')
  assert _spec(fsdp.params, 'attn/query/kernel') == P(None, 'fsdp', None, None)
  save(tmp_path / 'fsdp', _mesh(data=2, fsdp=4), 'fsdp')
  tp = restore(tmp_path / 'fsdp', _mesh(data=2, fsdp=2, tensor=2), 'fsdp_tensor')
  assert _spec(tp.params, 'attn/query/kernel') == P(None, 'fsdp', 'tensor', None)


# --------------------------------------------------------------------------- train.py level
@pytest.mark.slow
def test_train_py_under_fsdp_trains_and_resumes(tmp_path, data_dir, capsys):
  """mlp_digits (no rules of its own: FSDP's fallback shards every kernel) with fsdp=8:
  3 steps, then resumed from that checkpoint to 6."""
  from bigjax.train.cli import main
  from bigjax.train.workdir import restore_from_workdir

  config = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'mlp_digits.py')
  workdir = tmp_path / 'fsdp'

  def run(steps):
    args = ['--config', config + ':test', '--workdir', str(workdir)]
    args += [f'--config.data.data_dir={data_dir}', f'--config.train.steps={steps}']
    args += ['--config.allow_changes=true']  # the resumed run asks for more steps
    assert main(args + ['--config.train.eval_every=0', '--config.mesh.fsdp=8']) == 0

  run(3)
  capsys.readouterr()
  run(6)
  assert 'resuming from the checkpoint at step 3' in capsys.readouterr().out
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '6']
  rows = [line for line in open(workdir / 'metrics.jsonl') if '"train"' in line]
  assert [json.loads(r)['step'] for r in rows][-1] == 6
  params = restore_from_workdir(str(workdir))[2]['params']
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_the_default_mesh_is_bit_identical_to_replicated_data_parallelism():
  """'auto' on the default mesh (data=8) shards nothing but the batch: the step equals, bit
  for bit, the replicated step traced without rules (what the trainer did before)."""
  _, new, _ = _run('gpt2_test', 'data8')
  _, _, step, batch, _ = _setup('gpt2_test')
  mesh = _mesh()
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  plain = jax.jit(step, in_shardings=(repl, batch_sh, repl), out_shardings=(repl, repl))
  old, _ = plain(
    jax.device_put(_initial('gpt2_test'), repl),
    sharding.global_batch(batch, mesh),
    jax.random.key(1),
  )
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(new), jax.device_get(old))


def test_an_unknown_preset_stops_train_py_before_the_workdir_is_touched(tmp_path, capsys):
  from bigjax.train.cli import main

  config = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'mlp_digits.py')
  workdir = tmp_path / 'run'
  args = ['--config', config + ':test', '--workdir', str(workdir), '--config.mesh.rules=tp']
  assert main(args) == 2
  assert 'is not a preset: use one of auto, data, fsdp' in capsys.readouterr().err
  assert not workdir.exists()
