"""The offline TFDS builders, the data set table and the Grain pipeline."""

import ast
import importlib
import os
import pkgutil

import jax
import ml_collections
import numpy as np
import pytest

import bigjax
import bigjax.data.sets
from bigjax.data import datasets, sources
from bigjax.data.builders.digits import Digits
from bigjax.data.builders.prepare import prepare_builder
from bigjax.data.builders.pystdlib import Pystdlib, is_validation, stdlib_files
from bigjax.data.pipeline import Data, pad_batch
from bigjax.data.spec import DatasetSpec
from bigjax.data.tokenizers import AlgorithmicTokenizer, ByteTokenizer
from bigjax.data.transforms.text import ShiftTokens
from bigjax.train.tasks import TASKS


def _digits_config(data_dir):
  return ml_collections.ConfigDict(
    {
      'name': 'digits',
      'data_dir': data_dir,
      'train_split': '',
      'eval_split': '',
      'image_size': 0,
      'mean': (0.0,),
      'std': (1.0,),
    }
  )


def test_digits_builder(data_dir):
  from sklearn.datasets import load_digits

  builder = prepare_builder(Digits, data_dir)
  train, test = builder.as_data_source('train'), builder.as_data_source('test')
  assert (len(train), len(test)) == (1438, 359)
  raw = load_digits()
  ex = test[0]
  assert ex['image'].shape == (8, 8, 1) and ex['image'].dtype == np.uint8
  # Each stored image is a scikit-learn digit scaled from 0..16 to 0..255, with its label.
  match = np.where((np.round(raw.images * 255 / 16) == ex['image'][..., 0]).all((1, 2)))[0]
  assert len(match) >= 1 and ex['label'] in raw.target[match]
  keys = lambda src: {src[i]['image'].tobytes() + bytes([src[i]['label']]) for i in range(len(src))}
  assert len(keys(train) & keys(test)) <= 2  # the corpus has a couple of exact duplicates


def test_pystdlib_builder_split_is_by_file(data_dir):
  builder = prepare_builder(Pystdlib, data_dir)
  train, val = builder.as_data_source('train'), builder.as_data_source('validation')
  files = stdlib_files()
  assert len(train) + len(val) == len(files) and len(val) > 10
  paths = lambda src: {
    src[i]['path'].decode() if isinstance(src[i]['path'], bytes) else src[i]['path']
    for i in range(len(src))
  }
  assert all(is_validation(p) for p in paths(val))
  assert not any(is_validation(p) for p in paths(train))
  assert not any('/test/' in p or p.startswith('test/') for p in paths(train))
  total = sum(len(train[i]['bytes']) for i in range(len(train)))
  assert total > 5_000_000  # megabytes of real source text


def test_windows_cover_every_byte_once():
  corpus = np.arange(23, dtype=np.uint8)
  source = sources.WindowSource(corpus, 5)
  assert len(source) == 4
  ex = ShiftTokens().map(source[1])
  np.testing.assert_array_equal(ex['inputs'], [5, 6, 7, 8, 9])
  np.testing.assert_array_equal(ex['targets'], [6, 7, 8, 9, 10])
  targets = np.concatenate([source[i][1:] for i in range(len(source))])
  np.testing.assert_array_equal(targets, np.arange(1, 21))
  with pytest.raises(ValueError, match='shorter'):
    sources.WindowSource(corpus[:3], 5)


def test_train_iterator_is_deterministic_and_resumable(data_dir):
  data = Data(_digits_config(data_dir))
  a = data.train_iter(32, seed=3)
  first = [next(a)['label'] for _ in range(3)]
  state = a.get_state()
  rest = [next(a)['label'] for _ in range(3)]
  b = data.train_iter(32, seed=3)
  np.testing.assert_array_equal([next(b)['label'] for _ in range(3)], first)
  c = data.train_iter(32, seed=3)
  c.set_state(state)
  np.testing.assert_array_equal([next(c)['label'] for _ in range(3)], rest)
  d = data.train_iter(32, seed=4)
  assert not np.array_equal(next(d)['label'], first[0])


def test_eval_batches_cover_the_split_once(data_dir):
  data = Data(_digits_config(data_dir))
  batches = list(data.eval_batches(100))
  assert all(b['image'].shape == (100, 8, 8, 1) for b in batches)
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == 359 and not mask[359:].any()
  image = batches[0]['image'][0]
  assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0


def test_pad_batch():
  batch = pad_batch({'x': np.ones((3, 2))}, 5)
  assert batch['x'].shape == (5, 2) and batch['x'][3:].sum() == 0
  np.testing.assert_array_equal(batch['mask'], [1, 1, 1, 0, 0])


def _algorithmic_config(data_dir, name='algorithmic', **kw):
  return ml_collections.ConfigDict(
    {
      'name': name,
      'data_dir': data_dir,
      'task': 'reverse',
      'max_length': 6,
      'num_train': 200,
      'num_test': 40,
      'max_len': 8,
      **kw,
    }
  )


@pytest.mark.parametrize('count, global_batch', [(3, 12), (7, 7), (2, 64)])
def test_eval_on_many_processes_scores_every_example_once(
  data_dir, monkeypatch, count, global_batch
):
  """Defect 4: the eval split (40 examples) was trimmed to a multiple of the process count."""
  data = Data(_algorithmic_config(data_dir))
  expected = sorted(tuple(data.eval_source[i]['src']) for i in range(len(data.eval_source)))
  assert len(expected) == len(set(expected)) == 40
  monkeypatch.setattr(jax, 'process_count', lambda: count)
  seen, num_batches = [], set()
  for index in range(count):
    monkeypatch.setattr(jax, 'process_index', lambda index=index: index)
    batches = list(data.eval_batches(global_batch))
    num_batches.add(len(batches))
    for batch in batches:
      assert batch['src'].shape == (global_batch // count, 8) and batch['mask'].dtype == bool
      for src in batch['src'][batch['mask']]:
        seen.append(tuple(int(t) for t in src[: list(src).index(2)]))  # up to EOS
      assert not batch['src'][~batch['mask']].any()  # padding is zeros
  assert sorted(seen) == expected  # every example exactly once, over all processes
  assert len(num_batches) == 1  # every process runs the same number of eval steps
  monkeypatch.setattr(jax, 'process_index', lambda: 0)
  assert len(list(data.eval_batches(global_batch, max_batches=1))) == 1


def test_data_exposes_its_tokenizer(data_dir):
  digits = Data(_digits_config(data_dir))
  assert digits.tokenizer is None
  stdlib = Data(
    ml_collections.ConfigDict({'name': 'pystdlib', 'data_dir': data_dir, 'seq_len': 64})
  )
  assert isinstance(stdlib.tokenizer, ByteTokenizer) and stdlib.tokenizer.byte_level
  window = stdlib.train_source[0]
  assert stdlib.tokenizer.decode(window) == bytes(window).decode('utf-8', errors='replace')
  plain = Data(_algorithmic_config(data_dir))
  assert isinstance(plain.tokenizer, AlgorithmicTokenizer)
  assert not plain.tokenizer.reversed_answer and plain.tokenizer.pad_width == 0
  # The tokenizer encodes as the data set does: its ids plus EOS make the example's source.
  record = plain.eval_source[0]
  text = plain.tokenizer.decode(record['src'])
  example = plain.spec.transforms(plain.config, False)[0].map(record)
  n = len(record['src'])
  np.testing.assert_array_equal(
    example['src'][: n + 1], [*plain.tokenizer.encode(text), plain.tokenizer.eos_id]
  )
  addition = _algorithmic_config(data_dir, 'algorithmic_reversed', task='addition')
  addition.pad_operands = True
  tok = datasets.dataset_spec('algorithmic_reversed').tokenizer(addition)  # nothing prepared
  assert tok.reversed_answer and tok.pad_width == 6  # data.max_length digits


def test_the_table_lists_every_data_set():
  assert datasets.list_datasets() == sorted(
    [
      'algorithmic',
      'algorithmic_reversed',
      'cifar10',
      'cifar100',
      'coco_captions',
      'digits',
      'fashion_mnist',
      *[f'glue/{task}' for task in ('cola', 'mnli', 'mrpc', 'qnli', 'qqp', 'rte', 'sst2')],
      'glue/stsb',
      'glue/wnli',
      'imagenet2012',
      'lm1b',
      'mnist',
      'pystdlib',
      'pystdlib_mlm',
      'pystdlib_syntax',
      'speech_commands',
      'spoken_words',
      'spoken_words_text',
      'wikipedia',
      'wmt14_translate/de-en',
    ]
  )
  listed = {id(spec) for spec in datasets.DATASETS.values()}
  for info in pkgutil.iter_modules(bigjax.data.sets.__path__):
    module = importlib.import_module(f'bigjax.data.sets.{info.name}')
    for name, value in vars(module).items():
      if isinstance(value, DatasetSpec):
        assert id(value) in listed, f'bigjax.data.sets.{info.name}.{name} is not in the table'
  for spec in datasets.DATASETS.values():
    assert spec.task in TASKS
  with pytest.raises(ValueError, match='did you mean digits'):
    datasets.dataset_spec('digit')


def _import_graph() -> dict[str, set[str]]:
  """bigjax module -> the bigjax modules it imports, anywhere in the file (functions too)."""
  root = os.path.dirname(os.path.dirname(bigjax.__file__))
  files = {}
  for folder, _, names in os.walk(os.path.dirname(bigjax.__file__)):
    for name in names:
      if name.endswith('.py'):
        module = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, '.')
        files[module.removesuffix('.__init__')] = os.path.join(folder, name)

  def known(name):
    while name and name not in files:
      name = name.rpartition('.')[0]
    return name

  graph = {}
  for module, path in files.items():
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    deps = set()
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          prefix = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
          base = f'{prefix}.{base}' if base else prefix
        names = [base, *(f'{base}.{a.name}' for a in node.names)]
      else:
        continue
      deps |= {known(n) for n in names if known(n) and known(n) != module}
    graph[module] = deps
  return graph


def test_no_import_cycle_through_the_data_package():
  graph = _import_graph()
  assert 'bigjax.data.datasets' in graph and 'bigjax.data.sets.wmt' in graph

  def reaches(start, goal):
    todo, seen = list(graph[start]), set()
    while todo:
      module = todo.pop()
      if module == goal:
        return True
      if module not in seen:
        seen.add(module)
        todo.extend(graph[module])
    return False

  ours = [m for m in graph if m.startswith('bigjax.data') or m == 'bigjax.generate']
  assert [m for m in ours if reaches(m, m)] == []
