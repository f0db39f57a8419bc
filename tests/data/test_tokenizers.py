"""bigjax.data.tokenizers: round trips, save / load, reserved ids, the trainers."""

import numpy as np
import pytest

from bigjax.data import tokenizers as tk
from bigjax.data.builders import algorithmic as alg
from bigjax.vocab import PAD_ID

CORPUS = [
  'the cat sat on the mat',
  'a dog sat on the log',
  'the quick brown fox jumps over the lazy dog',
  'hello world, hello there',
] * 10


@pytest.fixture(scope='module')
def bpe():
  return tk.train_bpe(CORPUS, 300)


@pytest.fixture(scope='module')
def wordpiece():
  return tk.train_wordpiece(CORPUS, 80)


def ids(text):
  return [alg.DIGIT0 + int(c) if c.isdigit() else alg.PLUS for c in text]


def test_bytes_round_trip_and_attributes():
  tok = tk.ByteTokenizer()
  assert isinstance(tok, tk.Tokenizer)
  text = 'héllo, wörld\n\tdef f(): ✓'
  encoded = tok.encode(text)
  assert encoded.dtype == np.int32 and len(encoded) == len(text.encode('utf-8'))
  assert tok.decode(encoded) == text
  assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id) == (256, PAD_ID, None, None)
  assert tok.byte_level and tok.reserved_ids == (PAD_ID,)
  assert tok.decode([104, 105, 0, 0]) == 'hi'  # pads dropped


def test_algorithmic_round_trip_and_reserved_ids():
  tok = tk.AlgorithmicTokenizer()
  assert isinstance(tok, tk.Tokenizer) and not tok.byte_level
  np.testing.assert_array_equal(tok.encode(' 12 + 345 '), ids('12+345'))
  assert tok.decode(tok.encode('12+345')) == '12+345'
  assert tok.decode([*ids('15'), alg.EOS, *ids('9')]) == '15'  # stops at EOS
  assert tok.decode([alg.BOS, *ids('7'), PAD_ID]) == '7'
  assert tok.vocab_size == alg.VOCAB_SIZE == 14
  assert set(tok.reserved_ids) == {PAD_ID, alg.BOS, alg.EOS} == {tok.pad_id, tok.bos_id, tok.eos_id}
  with pytest.raises(ValueError, match='digits and "\\+"'):
    tok.encode('12*3')


def test_algorithmic_reversed_formats_prompts_and_answers():
  tok = tk.AlgorithmicTokenizer(reversed_answer=True, pad_width=8)
  np.testing.assert_array_equal(tok.encode('12+345'), ids('00000012+00000345'))
  assert tok.decode([*ids('753'), alg.EOS, 0]) == '357'  # answers come out backwards
  with pytest.raises(ValueError, match='one "\\+"'):
    tok.encode('1+2+3')
  np.testing.assert_array_equal(tk.pad_operands(ids('1234+5'), 4), ids('1234+0005'))


def test_bpe_round_trip_and_specials(bpe):
  assert isinstance(bpe, tk.Tokenizer) and not bpe.byte_level
  assert (bpe.pad_id, bpe.bos_id, bpe.eos_id, bpe.reserved_ids) == (0, 1, 2, (0, 1, 2))
  assert bpe.vocab_size <= 300
  for text in ('the cat sat on the mat', 'unseen wörds: ✓ zebra!'):  # bytes: nothing unknown
    encoded = bpe.encode(text)
    assert encoded.dtype == np.int32 and not set(encoded.tolist()) & set(bpe.reserved_ids)
    assert bpe.decode(encoded) == text
  assert len(bpe.encode('the cat sat')) < len('the cat sat')  # merges learned
  assert bpe.decode([*bpe.encode('the dog'), bpe.eos_id, *bpe.encode('cat')]) == 'the dog'


def test_wordpiece_round_trip_and_specials(wordpiece):
  assert isinstance(wordpiece, tk.Tokenizer)
  assert wordpiece.pad_id == 0 and wordpiece.reserved_ids == (0, 1, 2, 3, 4)
  assert (wordpiece.bos_id, wordpiece.eos_id) == (2, 3)  # [CLS], [SEP]
  text = 'the quick brown fox sat on the mat'
  assert wordpiece.decode(wordpiece.encode(text)) == text
  assert wordpiece.decode(wordpiece.encode('The Cat')) == 'the cat'  # lower-cased
  unk = wordpiece.backend.token_to_id('[UNK]')
  assert unk in wordpiece.encode('the 😀 cat').tolist()


@pytest.mark.parametrize(
  'make',
  [
    tk.ByteTokenizer,
    tk.AlgorithmicTokenizer,
    lambda: tk.AlgorithmicTokenizer(reversed_answer=True, pad_width=4),
    lambda: tk.train_bpe(CORPUS, 290),
    lambda: tk.train_wordpiece(CORPUS, 60),
  ],
)
def test_save_and_load(make, tmp_path):
  tok = make()
  path = tmp_path / 'sub' / 'tokenizer.json'
  tok.save(str(path))
  assert [p.name for p in path.parent.iterdir()] == ['tokenizer.json']  # no temporary left
  loaded = tk.load_tokenizer(str(path))
  assert type(loaded) is type(tok)
  for attr in ('vocab_size', 'pad_id', 'bos_id', 'eos_id', 'byte_level', 'reserved_ids'):
    assert getattr(loaded, attr) == getattr(tok, attr), attr
  text = '12+34' if isinstance(tok, tk.AlgorithmicTokenizer) else 'the cat sat on the log'
  np.testing.assert_array_equal(loaded.encode(text), tok.encode(text))
  assert loaded.decode(tok.encode(text)) == tok.decode(tok.encode(text))


def test_errors_say_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match='no tokenizer at'):
    tk.load_tokenizer(str(tmp_path / 'missing.json'))
  with pytest.raises(ValueError, match='vocab_size must exceed 259'):
    tk.train_bpe(CORPUS, 259)
  with pytest.raises(ValueError, match='pad token at id 0'):
    tk.train_bpe(CORPUS, 300, special_tokens=['<s>', '</s>'])
