"""BERT text data: pair encoding, dynamic masking (statistics, epochs, resume), NSP pairs,
pystdlib_mlm and pystdlib_syntax, the run tokenizer (workdir, folder, vocab.txt)."""

import copy
import os

import grain
import ml_collections
import numpy as np
import pytest

from bigjax.data import run_tokenizer
from bigjax.data.builders.prepare import open_prepared
from bigjax.data.builders.pystdlib_syntax import PystdlibSyntax
from bigjax.data.pipeline import Data
from bigjax.data.sources import IS_NEXT, IS_RANDOM, SegmentPairs
from bigjax.data.tokenizers import WORDPIECE_SPECIAL_TOKENS, load_tokenizer, train_wordpiece
from bigjax.data.transforms import text as tt
from bigjax.vocab import PAD_ID

CLS, SEP = 2, 3  # our WordPiece: [PAD] [UNK] [CLS] [SEP] [MASK]
CORPUS = [f'word{i} token{i % 7} the cat sat on mat {i}' for i in range(200)]


@pytest.fixture(scope='module')
def wordpiece(tmp_path_factory):
  """A small trained WordPiece saved to disk, as transforms read it."""
  path = tmp_path_factory.mktemp('tok') / 'tokenizer.json'
  train_wordpiece(CORPUS, 200).save(str(path))
  return run_tokenizer.TokenizerFile(str(path))


def _config(name, data_dir, workdir, **kw):
  return ml_collections.ConfigDict(
    {
      'name': name,
      'data_dir': data_dir,
      'max_len': 32,
      'vocab_size': 300,
      'tokenizer_sample': 20,
      'workdir': str(workdir),
      'tokenizer': '',
      **kw,
    }
  )


def _bert_truncate(a: list, b: list, budget: int) -> tuple[int, int]:
  """BERT's `_truncate_seq_pair`, literally: pop from the longer list."""
  a, b = list(a), list(b)
  while len(a) + len(b) > budget:
    (a if len(a) > len(b) or len(a) == len(b) else b).pop()
  return len(a), len(b)


def test_pair_encoding_truncates_the_longer_side_and_sets_segments():
  a, b = np.arange(10, 20), np.arange(30, 34)
  ids, seg = tt.encode_pair(a, b, 10, CLS, SEP)
  np.testing.assert_array_equal(ids, [CLS, 10, 11, 12, SEP, 30, 31, 32, 33, SEP])
  np.testing.assert_array_equal(seg, [0] * 5 + [1] * 5)
  assert ids.dtype == seg.dtype == np.int32
  for la in range(0, 12):
    for lb in range(0, 12):
      for budget in (3, 7, 12):
        assert tt.truncate_pair(la, lb, budget) == _bert_truncate(range(la), range(lb), budget)
  ids, seg = tt.encode_pair([7, 8], [9], 8, CLS, SEP)  # short: padded, pads in segment 0
  np.testing.assert_array_equal(ids, [CLS, 7, 8, SEP, 9, SEP, PAD_ID, PAD_ID])
  np.testing.assert_array_equal(seg, [0, 0, 0, 0, 1, 1, 0, 0])
  ids, seg = tt.encode_pair(np.arange(10, 20), None, 6, CLS, SEP)  # one sentence
  np.testing.assert_array_equal(ids, [CLS, 10, 11, 12, 13, SEP])
  assert not seg.any()
  with pytest.raises(ValueError, match='data.max_len'):
    tt.encode_pair([1], [2], 3, CLS, SEP)


def test_code_as_text_keeps_layout():
  code = 'if x:\n    y = (1,\n       2)\n\n\tz()\n'
  assert tt.code_as_text(code) == 'if x: ¶ » y = (1, ¶ »››› 2) ¶ »» z()'
  tok = train_wordpiece([tt.code_as_text(code)] * 5, 60)
  words = tok.backend.encode(tt.code_as_text(code)).tokens
  assert words.count(tt.INDENT) == 4 and words.count(tt.ALIGN) == 3  # one token each
  assert words.count(tt.NEWLINE) == 3


def _examples(n: int, rng) -> list[dict]:
  """Pairs of random non-special ids of random lengths, padded to 40."""
  out = []
  for _ in range(n):
    a = rng.integers(5, 200, rng.integers(1, 20))
    b = rng.integers(5, 200, rng.integers(1, 20))
    ids, seg = tt.encode_pair(a, b, 40, CLS, SEP)
    out.append({'input_ids': ids, 'segment_ids': seg, 'nsp_label': np.int32(0)})
  return out


def test_masking_statistics(wordpiece):
  masker = tt.MaskTokens(wordpiece)
  tok = wordpiece.tokenizer
  mask_id = tok.backend.token_to_id('[MASK]')
  special = set(tok.reserved_ids)
  rng = np.random.default_rng(0)
  counts = dict(candidates=0, selected=0, masked=0, random=0, kept=0)
  for example in _examples(3000, rng):
    out = masker.random_map(example, rng)
    ids, new, labels = example['input_ids'], out['input_ids'], out['mlm_labels']
    assert labels.dtype == new.dtype == np.int32 and labels.shape == new.shape == (40,)
    np.testing.assert_array_equal(out['segment_ids'], example['segment_ids'])
    is_special = np.isin(ids, list(special))
    selected = labels != -1
    assert selected.sum() >= 1
    assert not (selected & is_special).any()  # [CLS], [SEP], [PAD] never selected
    np.testing.assert_array_equal(labels[selected], ids[selected])  # labels = original ids
    np.testing.assert_array_equal(new[~selected], ids[~selected])  # nothing else changes
    counts['candidates'] += (~is_special).sum()
    counts['selected'] += selected.sum()
    counts['masked'] += (new[selected] == mask_id).sum()
    swapped = new[selected & (new != mask_id) & (new != ids)]
    assert not np.isin(swapped, list(special)).any()  # random tokens are never special
    counts['random'] += len(swapped)
    counts['kept'] += (new[selected] == ids[selected]).sum()
  assert abs(counts['selected'] / counts['candidates'] - 0.15) < 0.005
  selected = counts['selected']
  assert abs(counts['masked'] / selected - 0.8) < 0.015
  # A random replacement equals the original 1 time in ~195: it counts as kept.
  assert abs(counts['random'] / selected - 0.1) < 0.012
  assert abs(counts['kept'] / selected - 0.1) < 0.012


def test_max_predictions_gives_the_dense_selection_as_positions(wordpiece):
  """MaskTokens(max_predictions=P) with the generator of a dense masker selects and
  replaces the same tokens: 'mlm_positions' [P] are the dense selection, sorted, then 0;
  'mlm_labels' [P] the original ids there, then -1."""
  dense, p = tt.MaskTokens(wordpiece), 8  # 40 tokens: at most round(0.15 * 38) = 6 selected
  sparse = tt.MaskTokens(wordpiece, max_predictions=p)
  counts = set()
  for seed, example in enumerate(_examples(300, np.random.default_rng(2))):
    want = dense.random_map(example, np.random.default_rng(seed))
    got = sparse.random_map(example, np.random.default_rng(seed))
    assert set(got) == set(example) | {'mlm_positions', 'mlm_labels'}
    np.testing.assert_array_equal(got['input_ids'], want['input_ids'])  # same replacements
    np.testing.assert_array_equal(got['segment_ids'], example['segment_ids'])
    positions, labels = got['mlm_positions'], got['mlm_labels']
    assert positions.shape == labels.shape == (p,)
    assert positions.dtype == labels.dtype == np.int32
    (selected,) = np.nonzero(want['mlm_labels'] != -1)  # ascending
    n = len(selected)
    counts.add(n)
    np.testing.assert_array_equal(positions[:n], selected)
    np.testing.assert_array_equal(labels[:n], example['input_ids'][selected])
    np.testing.assert_array_equal(positions[n:], 0)
    np.testing.assert_array_equal(labels[n:], -1)
  assert min(counts) == 1 and max(counts) == 6  # short and long examples, padding of 2 to 7
  ids = np.array([CLS, *[7] * 38, SEP], np.int32)  # 38 words: round(5.7) = 6 selected
  example = {'input_ids': ids, 'segment_ids': np.zeros_like(ids)}
  assert len(sparse.random_map(example, np.random.default_rng(0))['mlm_positions']) == p
  with pytest.raises(ValueError, match='6 tokens were selected .* data.max_predictions is 5'):
    tt.MaskTokens(wordpiece, max_predictions=5).random_map(example, np.random.default_rng(0))
  with pytest.raises(ValueError, match='max_predictions must be >= 0'):
    tt.MaskTokens(wordpiece, max_predictions=-1)


def test_fixed_eval_mask_depends_on_the_example_only(wordpiece):
  fixed = tt.FixedMaskTokens(tt.MaskTokens(wordpiece))
  a, b = _examples(2, np.random.default_rng(1))
  np.testing.assert_array_equal(fixed.map(a)['mlm_labels'], fixed.map(dict(a))['mlm_labels'])
  assert (fixed.map(a)['mlm_labels'] != -1).any()
  assert not np.array_equal(fixed.map(a)['input_ids'], fixed.map(b)['input_ids'])


@pytest.fixture(scope='module')
def mlm_data(data_dir, tmp_path_factory):
  """A pystdlib_mlm `Data`, its tokenizer learned from 20 training files."""
  workdir = tmp_path_factory.mktemp('mlm_run')
  return Data(_config('pystdlib_mlm', data_dir, workdir))


def test_pystdlib_mlm_examples_and_tokenizer_in_workdir(mlm_data):
  data = mlm_data
  assert data.task == 'mlm' and data.eval_split == 'validation'
  path = os.path.join(data.config.workdir, 'tokenizer.json')
  assert os.path.exists(path)
  stamp = os.stat(path).st_mtime_ns
  Data(data.config)  # opening again reuses the saved tokenizer
  assert os.stat(path).st_mtime_ns == stamp
  tok = data.tokenizer
  assert tok.vocab_size <= 300
  assert [tok.backend.token_to_id(t) for t in WORDPIECE_SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
  batch = next(data.train_iter(8, seed=0))
  assert set(batch) == {'input_ids', 'segment_ids', 'nsp_label', 'mlm_labels'}
  for key in ('input_ids', 'segment_ids', 'mlm_labels'):
    assert batch[key].shape == (8, 32) and batch[key].dtype == np.int32, key
  assert batch['nsp_label'].shape == (8,) and batch['nsp_label'].dtype == np.int32
  assert (batch['input_ids'][:, 0] == CLS).all() and (batch['segment_ids'] == 1).any()
  assert ((batch['mlm_labels'] != -1).sum(1) >= 1).all()
  evals = next(data.eval_batches(8))
  assert evals['mask'].all() and set(evals) == set(batch) | {'mask'}
  again = next(Data(data.config).eval_batches(8))  # the eval mask is fixed
  np.testing.assert_array_equal(evals['input_ids'], again['input_ids'])
  single = data.config.copy_and_resolve_references()
  single.nsp = False  # masked LM alone: one sentence, no NSP label
  batch = next(Data(single).eval_batches(8))
  assert set(batch) == {'input_ids', 'segment_ids', 'mlm_labels', 'mask'}
  assert not batch['segment_ids'].any() and ((batch['input_ids'] == SEP).sum(1) == 1).all()


def _dense_labels(batch) -> np.ndarray:
  """[B, T] mlm_labels of a batch, from the P positions and labels of max_predictions."""
  if 'mlm_positions' not in batch:
    return batch['mlm_labels']
  labels = np.full(batch['input_ids'].shape, -1, np.int32)
  for row, (positions, values) in enumerate(zip(batch['mlm_positions'], batch['mlm_labels'])):
    labels[row, positions[values != -1]] = values[values != -1]
  return labels


@pytest.mark.parametrize('max_predictions', [0, 5], ids=['dense', 'positions'])
def test_masks_are_redrawn_every_epoch_and_identical_after_resume(mlm_data, max_predictions):
  config = mlm_data.config.copy_and_resolve_references()
  config.max_predictions = max_predictions
  records = [mlm_data.train_source[i] for i in range(8)]  # an epoch: 2 batches of 4

  def fresh():
    """Another Data of the same config over the same 8 pairs (as a restarted run opens),
    read through the real train iterator."""
    data = copy.copy(mlm_data)
    data.config, data.train_source = config, list(records)
    return data

  it = fresh().train_iter(4, seed=0)
  batches = [next(it) for _ in range(4)]
  assert ('mlm_positions' in batches[0]) == bool(max_predictions)

  def by_record(batch_list):
    out = {}
    for batch in batch_list:
      labels = _dense_labels(batch)
      original = np.where(labels != -1, labels, batch['input_ids'])
      for row in range(len(original)):
        out[original[row].tobytes()] = labels[row]
    return out

  first, second = by_record(batches[:2]), by_record(batches[2:])
  assert first.keys() == second.keys() and len(first) == 8  # the same records, reshuffled
  changed = [not np.array_equal(first[k], second[k]) for k in first]
  assert all(changed)  # a new mask for every record in epoch 2
  # Another seed draws other masks for the same records.
  other = fresh().train_iter(4, seed=1)
  reseeded = by_record([next(other) for _ in range(2)])
  assert reseeded.keys() == first.keys()
  assert any(not np.array_equal(first[k], reseeded[k]) for k in first)
  # Resume as the checkpointer does: the state after 3 batches, restored in the iterator of
  # a new Data (a restarted run) gives the 4th batch of the uninterrupted run, bit for bit.
  it = fresh().train_iter(4, seed=0)
  for _ in range(3):
    next(it)
  state = it.get_state()
  resumed = fresh().train_iter(4, seed=0)
  resumed.set_state(state)
  got = next(resumed)
  assert set(got) == set(batches[3])
  for key in got:
    np.testing.assert_array_equal(got[key], batches[3][key], err_msg=key)


def test_nsp_pairs_are_balanced_and_follow_their_segment(mlm_data):
  pairs = mlm_data.train_source
  if not isinstance(pairs, SegmentPairs):  # the resume test swaps in a list
    pairs = Data(mlm_data.config).train_source
  segments, docs = pairs.segments, pairs.doc_ids
  where = {}  # segment text -> the documents holding it (some segments repeat)
  for i, segment in enumerate(segments):
    where.setdefault(segment, set()).add(int(docs[i]))
  labels = []
  for i in range(0, len(pairs), max(1, len(pairs) // 3000)):
    r = pairs[i]
    a = int(pairs.starts[i])
    assert r['text_a'] == segments[a]
    if r['nsp_label'] == IS_NEXT:
      assert r['text_b'] == segments[a + 1] and docs[a + 1] == docs[a]
    else:
      assert r['nsp_label'] == IS_RANDOM and where[r['text_b']] - {int(docs[a])}
    labels.append(int(r['nsp_label']))
  assert len(labels) > 2500 and abs(np.mean(labels) - 0.5) < 0.03
  assert pairs[5]['text_b'] == pairs[5]['text_b']  # deterministic
  reseeded = SegmentPairs(segments, docs, seed=1)
  assert [reseeded[i]['nsp_label'] for i in range(40)] != [pairs[i]['nsp_label'] for i in range(40)]


def test_pystdlib_syntax_labels_agree_with_compile(data_dir):
  splits = {s: open_prepared(PystdlibSyntax, s, data_dir) for s in ('train', 'validation')}
  assert (len(splits['train']), len(splits['validation'])) == (20_000, 2_000)
  paths = {}
  for name, source in splits.items():
    n = len(source)
    records = [source[i] for i in range(n)]
    paths[name] = {r['path'] for r in records}
    labels = np.array([int(r['label']) for r in records])
    assert labels.sum() == n // 2  # balanced
    kinds = {tt.as_text(r['corruption']) for r in records if r['label'] == 0}
    assert kinds == {'drop_bracket', 'drop_colon', 'swap_tokens', 'break_indent'}
    codes = [tt.as_text(r['code']) for r in records]
    assert len(set(codes)) == n  # no snippet twice
    for r, code in list(zip(records, codes))[:: max(1, n // 500)]:
      lines = code.splitlines()
      assert 3 <= len(lines) <= 8
      try:
        compile(code, '<test>', 'exec', dont_inherit=True)
        valid = True
      except SyntaxError:
        valid = False
      assert valid == (r['label'] == 1), code
  assert not paths['train'] & paths['validation']  # split by file


def test_pystdlib_syntax_reads_the_pretraining_runs_tokenizer(mlm_data, data_dir, tmp_path):
  # data.tokenizer = the MLM run's workdir (a folder holding tokenizer.json).
  config = _config('pystdlib_syntax', data_dir, tmp_path, tokenizer=mlm_data.config.workdir)
  data = Data(config)
  assert data.task == 'text_classification'
  assert not os.path.exists(tmp_path / 'tokenizer.json')  # nothing learned or written
  assert data.tokenizer.backend.get_vocab() == mlm_data.tokenizer.backend.get_vocab()
  batch = next(data.eval_batches(16))
  assert batch['input_ids'].shape == (16, 32) and batch['input_ids'].dtype == np.int32
  assert batch['label'].shape == (16,) and batch['label'].dtype == np.int32
  assert not batch['segment_ids'].any()  # one sentence
  assert set(batch['label'].tolist()) == {0, 1}
  # Without data.tokenizer, the run learns one from its own training split.
  own = Data(_config('pystdlib_syntax', data_dir, tmp_path / 'own'))
  assert os.path.exists(tmp_path / 'own' / 'tokenizer.json') and own.tokenizer.vocab_size <= 300
  missing = _config('pystdlib_syntax', data_dir, tmp_path, tokenizer=str(tmp_path / 'nope'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    Data(missing)


def _bert_vocab(folder, words=('the', 'cat', '##s', 'sat', 'dog', ',', '.')) -> str:
  """A vocab.txt laid out as BERT's: [PAD] 0, [unused*], [UNK] 100, [CLS] 101, ..."""
  tokens = ['[PAD]', *[f'[unused{i}]' for i in range(99)], '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'vocab.txt'), 'w') as f:
    f.write('\n'.join([*tokens, *words]) + '\n')
  return str(folder)


def test_tokenizer_from_a_folder_with_vocab_txt(tmp_path):
  folder = _bert_vocab(tmp_path / 'bert')
  tok = load_tokenizer(folder)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 101, 102)
  assert tok.reserved_ids == (0, 100, 101, 102, 103) and tok.vocab_size == 111
  np.testing.assert_array_equal(
    tok.encode('The Cats sat, dog!'), [104, 105, 106, 107, 109, 108, 100]
  )
  assert tok.decode(tok.encode('the cats sat')) == 'the cats sat'
  cased = load_tokenizer(os.path.join(folder, 'vocab.txt'), lowercase=False)
  assert cased.encode('The cat')[0] == 100  # 'The' is not in the (lower-case) vocabulary
  # Through a data set's config: data.tokenizer = the folder, masking draws [MASK] = 103.
  config = ml_collections.ConfigDict({'tokenizer': folder, 'lowercase': True, 'max_len': 12})
  ref = run_tokenizer.TokenizerFile.of(config, 'glue/mrpc')
  enc = tt.EncodeText(ref, 12, ('a', 'b'), {'label': np.int32})
  out = enc.map({'a': 'the cat', 'b': b'dogs', 'label': np.int64(1)})
  np.testing.assert_array_equal(out['input_ids'], [101, 104, 105, 102, 108, 106, 102] + [0] * 5)
  np.testing.assert_array_equal(out['segment_ids'], [0, 0, 0, 0, 1, 1, 1] + [0] * 5)
  assert out['label'].dtype == np.int32 and out['label'] == 1
  masker = tt.MaskTokens(ref)
  for seed in range(20):
    masked = masker.random_map(out, np.random.default_rng(seed))
    (where,) = np.flatnonzero(masked['mlm_labels'] != -1)  # round(0.15 * 4) = 1 of 4 words
    assert where in (1, 2, 4, 5) and masked['mlm_labels'][where] == out['input_ids'][where]
    assert masked['input_ids'][where] not in (0, 100, 101, 102)  # [MASK] is 103


def test_random_map_seed_comes_from_the_pipeline_seed():
  """grain's RandomMap after seed/shuffle/repeat draws from (seed, index in the stream)."""
  ds = grain.MapDataset.range(4).seed(3).shuffle().repeat(None)
  draws = ds.random_map(lambda x, rng: (x, rng.integers(1 << 30)))
  epoch1, epoch2 = [draws[i] for i in range(4)], [draws[i] for i in range(4, 8)]
  assert sorted(x for x, _ in epoch1) == sorted(x for x, _ in epoch2) == [0, 1, 2, 3]
  assert {d for _, d in epoch1}.isdisjoint({d for _, d in epoch2})
  assert [draws[i] for i in range(8)] == epoch1 + epoch2  # random access: same draws
