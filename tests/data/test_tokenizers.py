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


# Hugging Face decoder tokenizers (HFTokenizer): GPT-2's byte-level BPE in both of its saved
# forms, and a Llama-style tokenizer whose post-processor starts every text with BOS.
EOT = '<|endoftext|>'
HF_TEXTS = ('the cat sat on the mat', ' hello world, the lazy dog!', 'unseen wörds: ✓ zebra')


def _gpt2_backend(vocab_size: int = 300):
  """A GPT-2-style byte-level BPE (no prefix space) with '<|endoftext|>' at id 0."""
  tokenizers = pytest.importorskip('tokenizers')
  from tokenizers import decoders, models, pre_tokenizers, trainers

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=[EOT],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(CORPUS, trainer=trainer)
  return tok


def _write_json(path, value):
  import json

  path.write_text(json.dumps(value))


@pytest.fixture(scope='module')
def gpt2_folders(tmp_path_factory):
  """{'tokenizer.json': folder, 'vocab.json': folder} holding the same GPT-2-style BPE."""
  backend = _gpt2_backend()
  special = {'bos_token': EOT, 'eos_token': EOT, 'unk_token': EOT, 'add_prefix_space': False}
  full = tmp_path_factory.mktemp('gpt2_json')
  backend.save(str(full / 'tokenizer.json'))
  _write_json(full / 'tokenizer_config.json', {'tokenizer_class': 'GPT2Tokenizer', **special})
  split = tmp_path_factory.mktemp('gpt2_vocab')
  backend.model.save(str(split))  # vocab.json + merges.txt
  _write_json(split / 'tokenizer_config.json', {'tokenizer_class': 'GPT2Tokenizer', **special})
  # A model config whose GPT-2 default ids (50256) lie outside this vocabulary: ignored.
  _write_json(split / 'config.json', {'model_type': 'gpt2', 'bos_token_id': 50256})
  return {'tokenizer.json': full, 'vocab.json': split}


@pytest.mark.parametrize('form', ['tokenizer.json', 'vocab.json'])
def test_hf_gpt2_tokenizer_matches_transformers(gpt2_folders, form):
  transformers = pytest.importorskip('transformers')
  folder = gpt2_folders[form]
  tok = tk.load_tokenizer(str(folder))
  assert isinstance(tok, tk.HFTokenizer) and isinstance(tok, tk.Tokenizer)
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 0, None)  # no pad token in GPT-2
  assert tok.reserved_ids == () and not tok.byte_level and not tok.add_bos
  assert tok.vocab_size == 300
  ref = transformers.AutoTokenizer.from_pretrained(str(folder))
  for text in HF_TEXTS:
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert ids.tolist() == ref(text)['input_ids'], text
    assert tok.decode(ids) == text == ref.decode(ids.tolist(), skip_special_tokens=True)
  assert len(tok.encode('the cat sat')) < len('the cat sat')  # merges learned
  cat = tok.encode(' cat').tolist()
  assert tok.decode([*tok.encode('the dog').tolist(), 0, *cat]) == 'the dog'  # stops at EOS


def test_hf_llama_style_tokenizer_adds_bos_and_reads_folder_ids(tmp_path):
  transformers = pytest.importorskip('transformers')
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, processors, trainers

  backend = tokenizers.Tokenizer(models.BPE(unk_token='<unk>'))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=300,
    special_tokens=['<unk>', '<s>', '</s>', '<|eot|>'],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  backend.train_from_iterator(CORPUS, trainer=trainer)
  backend.post_processor = processors.TemplateProcessing(
    single='<s> $A', pair='<s> $A <s> $B', special_tokens=[('<s>', 1)]
  )
  backend.save(str(tmp_path / 'tokenizer.json'))
  _write_json(
    tmp_path / 'tokenizer_config.json',
    {'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': '<s>', 'eos_token': '</s>'},
  )
  _write_json(
    tmp_path / 'config.json', {'model_type': 'llama', 'bos_token_id': 1, 'eos_token_id': 2}
  )
  _write_json(tmp_path / 'generation_config.json', {'bos_token_id': 1, 'eos_token_id': [3, 2]})
  tok = tk.load_tokenizer(str(tmp_path))
  assert isinstance(tok, tk.HFTokenizer) and tok.add_bos
  # generation_config.json wins; both stop ids are kept, neither is reserved
  assert (tok.bos_id, tok.eos_id, tok.eos_ids, tok.pad_id) == (1, 3, (3, 2), None)
  assert tok.reserved_ids == (0, 1)  # <unk> and BOS: never generated
  ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  for text in HF_TEXTS:
    ids = tok.encode(text).tolist()
    assert ids[0] == 1 and ids == ref(text)['input_ids'], text
    assert tok.decode(ids) == text
  assert tok.decode([1, *tok.encode('the dog').tolist()[1:], 2, 5, 6]) == 'the dog'


def test_hf_folder_or_pad_first_picks_the_tokenizer_class(tmp_path):
  """A tokenizer.json with its pad token at id 0 stays a SubwordTokenizer (as bigjax saves
  them), unless its folder is a Hugging Face decoder's; one without is an HFTokenizer."""
  bpe = tk.train_bpe(CORPUS, 290)
  bpe.save(str(tmp_path / 'run' / 'tokenizer.json'))
  assert type(tk.load_tokenizer(str(tmp_path / 'run'))) is tk.SubwordTokenizer
  bpe.save(str(tmp_path / 'hf' / 'tokenizer.json'))
  _write_json(tmp_path / 'hf' / 'config.json', {'model_type': 'gpt2', 'pad_token_id': 0})
  tok = tk.load_tokenizer(str(tmp_path / 'hf'))
  assert type(tok) is tk.HFTokenizer and (tok.pad_id, tok.bos_id, tok.eos_id) == (0, None, None)
  assert tok.reserved_ids == (0, 1, 2)  # every special token: no EOS is named here
  gpt2 = _gpt2_backend(280)
  gpt2.save(str(tmp_path / 'renamed.json'))  # a lone file: no folder to read ids from
  tok = tk.load_tokenizer(str(tmp_path / 'renamed.json'))
  assert type(tok) is tk.HFTokenizer and tok.vocab_size == 280 and tok.eos_id is None
  assert tok.decode(tok.encode(HF_TEXTS[1])) == HF_TEXTS[1]
  with pytest.raises(FileNotFoundError, match='vocab.json \\+ merges.txt'):
    tk.load_tokenizer(str(tmp_path / 'run' / '..' / 'hf' / '..'))
