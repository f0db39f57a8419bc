"""Causal-LM data with document boundaries: pystdlib windows with each byte's file, greedy
packing of documents into rows, GPT-2's packed format, and lm1b under
tfds.testing.mock_data (learned BPE, cached token counts, random access)."""

import os
import types

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigjax.data import sources
from bigjax.data.datasets import dataset_spec
from bigjax.data.pipeline import Data
from bigjax.data.sets import lm1b
from bigjax.data.transforms.text import PackDocuments, ShiftTokens, renumber_segments

# --- pystdlib: windows that know each byte's file -------------------------------------------


def test_windows_with_documents_give_segment_ids_and_every_byte_once():
  corpus = np.arange(23, dtype=np.uint8)
  starts = [0, 4, 4, 11]  # files of 4, 0 (empty), 7 and 12 bytes
  plain, marked = sources.WindowSource(corpus, 5), sources.WindowSource(corpus, 5, starts)
  assert len(plain) == len(marked) == 4
  for i in range(len(marked)):
    a, b = ShiftTokens().map(plain[i]), ShiftTokens().map(marked[i])
    assert set(a) == {'inputs', 'targets'}
    assert set(b) == {'inputs', 'targets', 'segment_ids'}
    np.testing.assert_array_equal(a['inputs'], b['inputs'])  # the same bytes, the same
    np.testing.assert_array_equal(a['targets'], b['targets'])  # targets: bits/byte compare
  # Window 0: inputs 0..4, bytes 0-3 in file 0, byte 4 in file 2 (file 1 is empty).
  np.testing.assert_array_equal(ShiftTokens().map(marked[0])['segment_ids'], [1, 1, 1, 1, 2])
  # Window 2: inputs 10..14: byte 10 in file 2, 11.. in file 3; renumbered from 1.
  np.testing.assert_array_equal(ShiftTokens().map(marked[2])['segment_ids'], [1, 2, 2, 2, 2])
  targets = np.concatenate([ShiftTokens().map(marked[i])['targets'] for i in range(4)])
  np.testing.assert_array_equal(targets, np.arange(1, 21))
  np.testing.assert_array_equal(renumber_segments([7, 7, 9, 9, 9, 12]), [1, 1, 2, 2, 2, 3])


def test_pystdlib_doc_boundaries_follow_the_files(data_dir):
  spec = dataset_spec('pystdlib')
  config = ml_collections.ConfigDict({'seq_len': 256})
  plain = spec.open_split('validation', data_dir, config)
  config.doc_boundaries = True
  marked = spec.open_split('validation', data_dir, config)
  assert len(marked) == len(plain) and marked.doc_starts is not None
  starts = set(marked.doc_starts.tolist())
  (transform,) = spec.transforms(config, False)
  crossings = 0
  for i in range(0, len(marked), 7):
    example = transform.map(marked[i])
    np.testing.assert_array_equal(example['inputs'], transform.map(plain[i])['inputs'])
    seg = example['segment_ids']
    assert seg.dtype == np.int32 and seg[0] == 1 and set(np.diff(seg)) <= {0, 1}
    # A new segment starts exactly where a file starts in the corpus.
    changes = np.flatnonzero(np.diff(seg)) + 1 + i * 256
    assert all(int(c) in starts for c in changes)
    crossings += len(changes)
  assert crossings > 0  # some windows hold two files


# --- packing documents into rows --------------------------------------------------------


def test_pack_rows_is_greedy_and_covers_every_document_once():
  costs = [3, 4, 2, 5, 1, 1, 6]
  starts = sources.pack_rows(costs, 6)
  np.testing.assert_array_equal(starts, [0, 1, 3, 5, 6, 7])  # [3] [4, 2] [5, 1] [1] [6]
  rng = np.random.default_rng(0)
  costs = rng.integers(1, 9, 500)
  starts = sources.pack_rows(costs, 16)
  assert starts[0] == 0 and starts[-1] == 500 and (np.diff(starts) > 0).all()
  sums = np.add.reduceat(costs, starts[:-1])
  assert sums.max() <= 16
  assert (sums[:-1] + costs[starts[1:-1]] > 16).all()  # the next document did not fit
  with pytest.raises(ValueError, match=r'\[1, 6\]'):
    sources.pack_rows([3, 7], 6)


class _Chars:
  """A tokenizer of letters: 'a' -> 10, 'b' -> 11, ...; EOS 3 and no pad token (GPT-2)."""

  eos_id, pad_id = 3, None

  def encode(self, text):
    return np.array([10 + ord(c) - ord('a') for c in text], np.int32)


def _file(tok):
  return types.SimpleNamespace(tokenizer=tok, path='chars')


def test_pack_documents_is_gpt2_format_with_segments():
  pack = PackDocuments(_file(_Chars()), 8)
  out = pack.map({'texts': ['ab', b'c']})  # TFDS text features may be bytes
  np.testing.assert_array_equal(out['inputs'], [3, 10, 11, 3, 12, 0, 0, 0])
  np.testing.assert_array_equal(out['targets'], [10, 11, 3, 12, 3, 0, 0, 0])
  np.testing.assert_array_equal(out['segment_ids'], [1, 1, 1, 2, 2, 0, 0, 0])
  assert all(v.dtype == np.int32 and v.shape == (8,) for v in out.values())
  # A document longer than T - 1 tokens is cut to T - 1 plus its EOS.
  out = pack.map({'texts': ['abcdefghij']})
  np.testing.assert_array_equal(out['inputs'], [3, 10, 11, 12, 13, 14, 15, 16])
  np.testing.assert_array_equal(out['targets'], [10, 11, 12, 13, 14, 15, 16, 3])
  assert (out['segment_ids'] == 1).all()
  # With a pad token, padding uses it.
  padded = types.SimpleNamespace(eos_id=3, pad_id=1, encode=_Chars().encode)
  assert PackDocuments(_file(padded), 8).map({'texts': ['a']})['inputs'][-1] == 1
  no_eos = types.SimpleNamespace(eos_id=None, pad_id=0, encode=_Chars().encode)
  with pytest.raises(ValueError, match='no EOS token'):
    PackDocuments(_file(no_eos), 8).map({'texts': ['a']})


# --- lm1b under mock_data ---------------------------------------------------------------

T = 32


def _lm1b(workdir, **kw):
  return ml_collections.ConfigDict(
    {
      'name': 'lm1b',
      'data_dir': '',
      'max_len': T,
      'vocab_size': 300,
      'tokenizer_sample': 50,
      'workdir': str(workdir),
      'tokenizer': '',
      **kw,
    }
  )


def _check_row(row, texts, tok):
  """One packed row holds `texts`, each as EOS + tokens -> tokens + EOS in its segment."""
  inputs, targets, seg = row['inputs'], row['targets'], row['segment_ids']
  assert seg.max() == len(texts) and (seg[seg > 0] == np.sort(seg[seg > 0])).all()
  for k, text in enumerate(texts, start=1):
    (where,) = np.nonzero(seg == k)
    ids = tok.encode(text.decode() if isinstance(text, bytes) else text)[: T - 1]
    np.testing.assert_array_equal(inputs[where], [tok.eos_id, *ids])
    np.testing.assert_array_equal(targets[where], [*ids, tok.eos_id])


def test_lm1b_packs_sentences_and_caches_its_index(tmp_path, monkeypatch):
  spec = dataset_spec('lm1b')
  assert spec.task == 'lm' and spec.eval_split == 'test'
  with tfds.testing.mock_data(num_examples=60):
    data = Data(_lm1b(tmp_path))
    batch = next(data.train_iter(4, seed=0))
    again = next(data.train_iter(4, seed=0))
    evals = list(data.eval_batches(8))
    rows = data.train_source
    records = [rows[i] for i in range(len(rows))]
    transform = spec.transforms(data.config, True)[0]
    packed = [transform.map(r) for r in records]
  tok = data.tokenizer
  assert os.path.exists(tmp_path / 'tokenizer.json')  # a BPE learned from the mock split
  assert tok.eos_id is not None and tok.vocab_size <= 300
  assert set(batch) == {'inputs', 'targets', 'segment_ids'}
  assert all(v.shape == (4, T) and v.dtype == np.int32 for v in batch.values())
  for key in batch:  # the same seed, the same batch
    np.testing.assert_array_equal(batch[key], again[key])
  # Every sentence is in exactly one row, in order; the rows are full up to the next one.
  assert rows.starts[0] == 0 and rows.starts[-1] == 60 and len(rows) < 60
  for record, row in zip(records, packed):
    _check_row(row, record['texts'], tok)
  used = np.array([(p['segment_ids'] > 0).sum() for p in packed])
  assert used.max() <= T and used.mean() > T / 2
  assert set(evals[0]) == {'inputs', 'targets', 'segment_ids', 'mask'}
  assert sum(int(b['mask'].sum()) for b in evals) == len(data.eval_source)

  # The token counts are cached per split and tokenizer: a second run does not count again.
  index = sorted(n for n in os.listdir(tmp_path) if n.startswith(lm1b.INDEX_PREFIX))
  assert len(index) == 2 and '-test-' in index[0] and '-train-' in index[1]
  monkeypatch.setattr(lm1b, 'token_counts', lambda *a: pytest.fail('counted again'))
  with tfds.testing.mock_data(num_examples=60):
    np.testing.assert_array_equal(Data(_lm1b(tmp_path)).train_source.starts, rows.starts)
  # Another workdir reading that tokenizer (data.tokenizer) learns none and counts its own.
  monkeypatch.undo()
  other = tmp_path / 'other'
  with tfds.testing.mock_data(num_examples=60):
    reread = Data(_lm1b(other, tokenizer=str(tmp_path / 'tokenizer.json')))
  assert sorted(os.listdir(other)) == index  # the same tokenizer hash, no tokenizer.json
  np.testing.assert_array_equal(reread.train_source.starts, rows.starts)


def test_lm1b_needs_max_len(tmp_path):
  with pytest.raises(ValueError, match='data.max_len'):
    lm1b.transforms(_lm1b(tmp_path, max_len=0), True)
