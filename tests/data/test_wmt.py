"""WMT'14 en-de data under tfds.testing.mock_data: tokenizer on first use, examples."""

import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigjax.data import run_tokenizer
from bigjax.data.datasets import dataset_spec
from bigjax.data.sets import wmt
from bigjax.data.tokenizers import SubwordTokenizer


def _data(workdir, **kw):
  return ml_collections.ConfigDict(
    {
      'name': wmt.NAME,
      'source_lang': 'en',
      'target_lang': 'de',
      'max_len': 48,
      'vocab_size': 300,
      'tokenizer_sample': 40,
      'workdir': str(workdir),
      'tokenizer': '',
      **kw,
    }
  )


def test_tokenizer_is_trained_once_and_examples_are_well_formed(tmp_path):
  spec = dataset_spec(wmt.NAME)
  assert spec.task == 'seq2seq' and spec.eval_split == 'validation'
  data = _data(tmp_path)
  with tfds.testing.mock_data(num_examples=30):
    source = spec.open_split('validation', None, data)
    path = tmp_path / 'tokenizer.json'
    assert path.exists()
    stamp = os.stat(path).st_mtime_ns
    spec.open_split('train', None, data)
    assert os.stat(path).st_mtime_ns == stamp  # reused, not retrained
    (transform,) = spec.transforms(data, False)
    record = source[0]
    example = transform.map(record)
  tok = spec.tokenizer(data)  # the data set's tokenizer, read from the run's workdir
  assert isinstance(tok, SubwordTokenizer)
  assert [tok.backend.token_to_id(t) for t in ('<pad>', '<s>', '</s>')] == [0, 1, 2]
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.reserved_ids) == (0, 1, 2, (0, 1, 2))
  assert tok.vocab_size <= 300 and not tok.byte_level
  for key in ('src', 'tgt_in', 'tgt_out'):
    assert example[key].shape == (48,) and example[key].dtype == np.int32
  src, tgt_in, tgt_out = example['src'], example['tgt_in'], example['tgt_out']
  assert tgt_in[0] == tok.bos_id
  np.testing.assert_array_equal(tgt_in[1:], tgt_out[:-1])  # shifted by one
  # Round trip: the ids decode to the sentences (mock text is short ASCII), EOS then pads.
  n = len(tok.encode(record['de']))
  assert n + 1 < 48
  assert tok.decode(tgt_out) == record['de']
  assert tgt_out[n] == tok.eos_id and (tgt_out[n + 1 :] == 0).all()
  assert tok.decode(src) == record['en']
  np.testing.assert_array_equal(src[: n_en(tok, record) + 1], [*tok.encode(record['en']), 2])
  # The other direction swaps the languages.
  de_en = wmt.transforms(_data(tmp_path, source_lang='de', target_lang='en'), False)[0]
  swapped = de_en.map(record)
  assert tok.decode(swapped['src']) == record['de']
  assert tok.decode(swapped['tgt_out']) == record['en']
  # Truncation keeps the source's EOS.
  short = wmt.transforms(_data(tmp_path, max_len=4), False)[0].map(record)
  assert short['src'][-1] == tok.eos_id and short['tgt_in'][0] == tok.bos_id


def n_en(tok, record):
  return len(tok.encode(record['en']))


def test_config_errors(tmp_path):
  with pytest.raises(ValueError, match='data.workdir'):
    run_tokenizer.tokenizer_path(_data(''), 'wmt14')
  with pytest.raises(ValueError, match='source_lang'):
    wmt.transforms(_data(tmp_path, source_lang='fr'), True)
  with pytest.raises(FileNotFoundError, match='first opens its data'):
    wmt.tokenizer(_data(tmp_path / 'empty'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    wmt.tokenizer(_data(tmp_path, tokenizer=str(tmp_path / 'missing.json')))
  with tfds.testing.mock_data(num_examples=4):  # an explicit tokenizer is never trained
    with pytest.raises(FileNotFoundError, match='does not exist'):
      wmt.open_split('train', None, _data(tmp_path, tokenizer=str(tmp_path / 'missing.json')))
  assert not os.path.exists(tmp_path / 'missing.json')
