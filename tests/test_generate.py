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
