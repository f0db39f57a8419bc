"""The `algorithmic` TFDS builder and dataset: correct, deterministic, held-out test split."""

import pathlib

import ml_collections
import numpy as np
import pytest

from bigjax.data.builders import algorithmic as alg
from bigjax.data.datasets import dataset_spec


def _text_number(ids) -> int:
  return int(alg.ids_to_text(ids))


def _small(task, **kw):
  return alg.custom_config(
    task,
    kw.pop('min_length', 1),
    kw.pop('max_length', 6),
    kw.pop('num_train', 200),
    kw.pop('num_test', 40),
    **kw,
  )


@pytest.fixture(scope='module')
def reverse_source(data_dir):
  data = ml_collections.ConfigDict(
    {'task': 'reverse', 'max_length': 6, 'num_train': 200, 'num_test': 40, 'max_len': 8}
  )
  spec = dataset_spec('algorithmic')
  return spec, data, {s: spec.open_split(s, data_dir, data) for s in ('train', 'test')}


def test_builder_prepares_into_data_dir_and_reverses(reverse_source, data_dir):
  spec, data, sources = reverse_source
  assert spec.task == 'seq2seq'
  assert (len(sources['train']), len(sources['test'])) == (200, 40)
  name = alg.custom_config('reverse', 1, 6, 200, 40).name  # lengths/sizes from data config
  assert (pathlib.Path(data_dir) / 'algorithmic' / name / '1.0.0' / 'dataset_info.json').is_file()
  for i in range(len(sources['train'])):
    record = sources['train'][i]
    np.testing.assert_array_equal(record['tgt'], record['src'][::-1])
    assert 1 <= len(record['src']) <= 6
    assert np.all((record['src'] >= alg.DIGIT0) & (record['src'] < alg.DIGIT0 + 10))


def test_transform_adds_bos_eos_and_padding(reverse_source):
  spec, data, sources = reverse_source
  (transform,) = spec.transforms(data, True)
  record = sources['test'][0]
  example = transform.map(record)
  n = len(record['src'])
  assert {k: v.shape for k, v in example.items()} == {k: (8,) for k in ('src', 'tgt_in', 'tgt_out')}
  np.testing.assert_array_equal(example['src'][: n + 1], [*record['src'], alg.EOS])
  np.testing.assert_array_equal(example['tgt_in'][: n + 1], [alg.BOS, *record['tgt']])
  assert example['tgt_in'].dtype == np.int32
  np.testing.assert_array_equal(example['tgt_out'][: n + 1], [*record['tgt'], alg.EOS])
  assert np.all(example['src'][n + 1 :] == alg.PAD)
  np.testing.assert_array_equal(example['tgt_in'][1:], example['tgt_out'][:-1])
  too_short = spec.transforms(ml_collections.ConfigDict({'max_len': 3}), True)[0]
  with pytest.raises(ValueError, match='max_len'):
    too_short.map({'src': np.full(5, 3, np.int32), 'tgt': np.full(5, 3, np.int32)})


def test_train_and_test_are_disjoint(reverse_source):
  _, _, sources = reverse_source
  seqs = {s: {tuple(src[i]['src']) for i in range(len(src))} for s, src in sources.items()}
  assert len(seqs['train']) == 200 and len(seqs['test']) == 40  # distinct within a split
  assert not seqs['train'] & seqs['test']


def test_addition_sums_and_held_out_eight_digit_pairs():
  config = _small('addition', max_length=8, num_train=300, num_test=30)
  splits = {s: alg.generate_split(config, s) for s in ('train', 'test')}
  for split, problems in splits.items():
    for src, tgt in problems:
      a, b = alg.ids_to_text(src).split('+')
      assert int(a) + int(b) == _text_number(tgt)
      if split == 'test':
        assert len(a) == len(b) == 8 and a[0] != '0' and b[0] != '0'
  assert not {tuple(s) for s, _ in splits['train']} & {tuple(s) for s, _ in splits['test']}
  lengths = {len(alg.ids_to_text(s).split('+')[0]) for s, _ in splits['train']}
  assert lengths == set(range(1, 9))  # train mixes operand lengths


@pytest.mark.parametrize('task', ['copy', 'sort'])
def test_copy_and_sort(task):
  for src, tgt in alg.generate_split(_small(task), 'train'):
    assert tgt == (src if task == 'copy' else sorted(src))


def test_generation_is_deterministic_and_seeded():
  config = _small('sort')
  assert alg.generate_split(config, 'test') == alg.generate_split(config, 'test')
  other = _small('sort', seed=1)
  assert alg.generate_split(other, 'test') != alg.generate_split(config, 'test')


def test_bad_configs_say_what_to_do():
  with pytest.raises(ValueError, match='raise max_length'):
    alg.generate_split(_small('copy', max_length=1, num_train=50), 'train')
  with pytest.raises(ValueError, match='choose one of'):
    data = ml_collections.ConfigDict({'task': 'add'})
    dataset_spec('algorithmic').open_split('train', None, data)
