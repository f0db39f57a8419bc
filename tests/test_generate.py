"""bigjax.generate: prompts go through the data set's tokenizer; reserved ids never come out."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import bigjax
from bigjax import decode, generate
from bigjax.data.builders.algorithmic import DIGIT0, EOS, PLUS
from bigjax.data.tokenizers import AlgorithmicTokenizer, ByteTokenizer, train_bpe
from bigjax.train import loop


def _config(**data):
  return ml_collections.ConfigDict({'data': data, 'model': {'name': 'lstm_lm_test'}})


def _ids(text):
  return [DIGIT0 + int(c) if c.isdigit() else PLUS for c in text]


def test_prompts_use_the_data_sets_tokenizer(tmp_path):
  text = generate.codec_for(_config(name='pystdlib', seq_len=16), str(tmp_path))
  assert isinstance(text.tokenizer, ByteTokenizer) and text.eos_id is None
  assert text.decode(text.encode('héllo')) == 'héllo'  # an LM prompt has no EOS
  adder = generate.codec_for(
    _config(name='algorithmic_reversed', task='addition', pad_operands=True, max_len=20), ''
  )
  np.testing.assert_array_equal(adder.encode('12 + 345'), _ids('00000012+00000345') + [EOS])
  assert adder.decode(_ids('753') + [EOS, 0]) == '357'
  # A translation run's tokenizer is read from the workdir given, wherever it was trained.
  train_bpe(['ein kleiner hund', 'a small dog'] * 20, 290).save(str(tmp_path / 'tokenizer.json'))
  wmt = _config(name='wmt14_translate/de-en', max_len=4, workdir='/elsewhere', tokenizer='')
  codec = generate.codec_for(wmt, str(tmp_path))
  src = codec.encode('a small dog a small dog a small dog')
  assert len(src) == 4 and src[-1] == codec.eos_id == 2  # cut to max_len, EOS kept
  with pytest.raises(ValueError, match='no tokenizer'):
    generate.codec_for(_config(name='digits'), '')
  with pytest.raises(FileNotFoundError, match='first opens its data'):
    generate.codec_for(wmt, str(tmp_path / 'other'))


def test_seq2seq_generation_passes_source_bos_and_banned_ids(monkeypatch, tmp_path):
  config = _config(name='algorithmic_reversed', task='addition', pad_operands=True, max_len=20)
  monkeypatch.setattr(loop, 'restore_from_workdir', lambda workdir: (config, 'model', 'vars'))
  calls = []

  def fake(model, variables, src, **kw):
    calls.append((np.asarray(src), kw))
    return np.array([_ids('753') + [EOS, 0, 0]])

  monkeypatch.setattr(decode, 'generate_seq2seq', fake)
  assert generate.generate(str(tmp_path), '12+345', max_new_tokens=6) == '357'
  ((src, kw),) = calls
  np.testing.assert_array_equal(src, [_ids('00000012+00000345') + [EOS]])
  assert kw['bos_id'] == 1 and kw['eos_id'] == EOS
  assert kw['banned_ids'] == AlgorithmicTokenizer.reserved_ids == (0, 1, 2)
  assert generate.main(['--workdir', str(tmp_path), '--prompt', '12*3']) == 2


def test_language_model_never_generates_the_pad_id(monkeypatch, tmp_path):
  """The LM's head is biased towards id 0 (pad, the NUL byte): banned, it never comes out.

  Needs `banned_ids` in bigjax.decode (a pad id that is generated drops out of the text)."""
  model = bigjax.create_model('lstm_lm_test')
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  head = variables['params']['head']
  variables['params']['head'] = {**head, 'bias': head['bias'].at[0].set(1e4)}
  config = _config(name='pystdlib', seq_len=16)
  monkeypatch.setattr(loop, 'restore_from_workdir', lambda workdir: (config, model, variables))
  real, outputs = decode.generate_lm, []
  monkeypatch.setattr(
    decode, 'generate_lm', lambda *a, **kw: outputs.append(real(*a, **kw)) or outputs[-1]
  )
  monkeypatch.setattr(ByteTokenizer, 'decode', lambda self, ids: 'text')
  assert generate.generate(str(tmp_path), 'def ', max_new_tokens=5) == 'text'
  ((out,),) = [np.asarray(o) for o in outputs]
  assert out.shape == (5,) and 0 not in out.tolist()


# ------------------------------------------------------------ streaming and pretrained folders
class _Recorder:
  def __init__(self):
    self.writes = []

  def write(self, text):
    self.writes.append(text)

  def flush(self):
    pass


def test_streamer_writes_whole_characters_and_stops():
  # Byte-level: 'é' is two tokens; nothing is written until both have come.
  codec = generate.Prompt(ByteTokenizer(), 'lm')
  out = _Recorder()
  streamer = generate.Streamer(codec, codec.encode('a'), stops=(10,), out=out, row=1)
  for byte in 'é!'.encode() + b'\nz':
    streamer(np.array([0, byte]))
  streamer.close()
  assert out.writes == ['a', 'é', '!']  # the stop (newline) ends the row; z is not written


GPT2_TEXT = ['héllo wörld, the quick brown fox', 'jumps over the lazy dog'] * 30


def _bpe(vocab_size: int):
  """A byte-level BPE of `vocab_size` ids learned from GPT2_TEXT, eos '<|endoftext|>'."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=['<|endoftext|>'],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  words = [f'{w}{i}' for i in range(400) for w in ('word', 'token')] if vocab_size > 300 else []
  tok.train_from_iterator(GPT2_TEXT + words, trainer)
  return tok


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A workdir-free Hugging Face GPT-2 folder: a random gpt2_test model over a 300-token
  byte-level BPE (eos '<|endoftext|>' from generation_config.json)."""
  import json

  folder = tmp_path_factory.mktemp('hf_gpt2')
  model = bigjax.create_model('gpt2_test', vocab_size=300)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  # Sharper logits, so greedy continuations are not ties between near-equal tokens.
  embed = variables['params']['embed']['embedding']
  variables['params']['embed']['embedding'] = embed * 20.0
  bigjax.save_pretrained(model, variables, str(folder), overwrite=True)
  tok = _bpe(300)
  tok.save(str(folder / 'tokenizer.json'))
  eos = tok.token_to_id('<|endoftext|>')
  (folder / 'generation_config.json').write_text(json.dumps({'eos_token_id': eos}))
  return str(folder)


def _cli(capsys, *argv):
  code = generate.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_cli_on_a_pretrained_folder(pretrained, capsys):
  from bigjax.data.tokenizers import load_tokenizer

  tokenizer = load_tokenizer(pretrained)
  assert tokenizer.pad_id is None and tokenizer.eos_id is not None
  prompts = ['héllo wörld', 'the lazy']
  args = ['--pretrained', pretrained, '--max_new_tokens', '10', '--prompt', prompts[0]]
  args += ['--prompt', prompts[1]]
  # Streamed and printed at the end: the same text; each text continues its prompt.
  sampled = ['--method', 'sample', '--temperature', '2.0', '--seed', '4']
  code, streamed, _ = _cli(capsys, *args, *sampled)
  assert code == 0
  code, at_end, _ = _cli(capsys, *args, *sampled, '--no_stream')
  assert code == 0 and streamed == at_end
  texts = at_end.split('\n\n')
  assert len(texts) == 3 and texts[2] == ''
  for text, prompt in zip(texts, prompts):
    assert text.startswith(prompt) and len(text) > len(prompt)
  # The stream comes in pieces, as the tokens come.
  out = _Recorder()
  first = generate.generate(
    None,
    prompts,
    pretrained=pretrained,
    max_new_tokens=10,
    method='sample',
    temperature=2.0,
    seed=4,
    stream=out,
  )[0]
  assert ''.join(out.writes) == first == texts[0] and len(out.writes) > 3
  # Greedy: the batched ragged prompts give what each prompt alone gives.
  batch = generate.generate(None, prompts, pretrained=pretrained, max_new_tokens=10)
  for prompt, text in zip(prompts, batch):
    assert generate.generate(None, prompt, pretrained=pretrained, max_new_tokens=10) == text
  # The text is the prompt and its greedy continuation up to a stop id, decoded.
  model, variables = bigjax.from_pretrained(pretrained)
  ids = tokenizer.encode(prompts[1])
  kw = dict(max_new_tokens=10, pad_id=None, eos_id=tokenizer.eos_ids)
  cont = np.asarray(decode.generate_lm(model, variables, [ids], **kw))[0]
  assert tokenizer.eos_id not in cont[:-1]
  assert batch[1] == tokenizer.decode(np.concatenate([ids, cont]))
  # --stop: a one-token text that greedy produces ends the text just before it.
  stops = [t for t in cont[1:] if list(tokenizer.encode(tokenizer.decode([t]))) == [t]]
  assert stops, cont
  at = list(cont).index(stops[0])
  one = ['--pretrained', pretrained, '--max_new_tokens', '10', '--prompt', prompts[1]]
  stop_text = tokenizer.decode([stops[0]])
  code, out, _ = _cli(capsys, *one, '--stop', stop_text, '--no_stream')
  assert code == 0 and out == tokenizer.decode(np.concatenate([ids, cont[:at]])) + '\n\n'
  # --repetition_penalty changes the repetitive greedy text.
  code, out, _ = _cli(capsys, *one, '--repetition_penalty', '5', '--no_stream')
  assert code == 0 and out.startswith(prompts[1]) and out != batch[1] + '\n\n'


def test_cli_bad_input_exits_2(pretrained, tmp_path, capsys):
  import shutil

  bare = tmp_path / 'no_tokenizer'
  shutil.copytree(pretrained, bare)
  (bare / 'tokenizer.json').unlink()
  bad_json = tmp_path / 'bad_json'
  shutil.copytree(pretrained, bad_json)
  (bad_json / 'config.json').write_text('{"model_type": "gpt2"')
  truncated = tmp_path / 'truncated'
  shutil.copytree(pretrained, truncated)
  weights = truncated / 'model.safetensors'
  weights.write_bytes(weights.read_bytes()[:1000])
  other_tokenizer = tmp_path / 'other_tokenizer'
  shutil.copytree(pretrained, other_tokenizer)
  _bpe(2000).save(str(other_tokenizer / 'tokenizer.json'))
  sampled = ['--pretrained', pretrained, '--prompt', 'a', '--max_new_tokens', '5']
  sampled += ['--method', 'sample']
  cases = [
    (['--pretrained', str(tmp_path / 'missing'), '--prompt', 'a'], 'does not exist'),
    (['--pretrained', str(bare), '--prompt', 'a'], 'tokenizer'),
    (['--pretrained', pretrained, '--prompt', ''], 'empty'),
    (['--pretrained', pretrained, '--prompt', 'a', '--stop', 'xyzzy plugh'], 'one token'),
    (['--pretrained', pretrained, '--prompt', 'a', '--max_new_tokens', '64'], "model's context"),
    (['--pretrained', str(bad_json), '--prompt', 'a'], 'config.json is not valid JSON'),
    (['--pretrained', str(truncated), '--prompt', 'a'], 'not a readable safetensors file'),
    (['--pretrained', str(other_tokenizer), '--prompt', 'a'], 'does not match the model'),
    (['--pretrained', pretrained, '--prompt', 'the ' * 400], 'learned positions cover'),
    (['--pretrained', pretrained, '--prompt', 'a', '--max_new_tokens', '0'], 'at least 1'),
    ([*sampled, '--temperature', '-1'], 'temperature'),
    ([*sampled, '--top_p', '1.5'], 'top_p'),
  ]
  for argv, message in cases:
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == '', argv
    assert err.startswith('error: ') and message in err and err.count('\n') == 1, err


@pytest.mark.parametrize('argv', [['--prompt', 'a'], ['--word', 'yes', '--out', 'x.wav']])
def test_ema_selects_the_moving_average_of_a_run(monkeypatch, tmp_path, argv):
  from bigjax.train import loop

  seen = {}

  def restore(workdir, step=None, **kw):
    seen.update(kw)
    raise RuntimeError('restored')

  monkeypatch.setattr(loop, 'restore_from_workdir', restore)
  with pytest.raises(RuntimeError, match='restored'):
    generate.main(['--workdir', str(tmp_path), *argv, '--ema'])
  assert seen == {'ema': True}
  seen.clear()
  with pytest.raises(RuntimeError, match='restored'):
    generate.main(['--workdir', str(tmp_path), *argv])
  assert seen == {}  # the raw parameters
