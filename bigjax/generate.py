"""Generate text with a trained LM or sequence-to-sequence model, or a pretrained LM; or
a spoken word with a trained WaveNet.

  python -m bigjax.generate --workdir DIR --prompt 'def main(' [--max_new_tokens 200]
  python -m bigjax.generate --pretrained HF_FOLDER --prompt 'Once upon' [--prompt 'The']
      [--method greedy|sample|beam] [--temperature 0.8] [--top_k 40] [--top_p 0.95]
      [--repetition_penalty 1.2] [--stop TEXT ...] [--beam_size 4] [--alpha 0.6]
      [--seed 0] [--no_stream] [--ema]
  python -m bigjax.generate --workdir DIR --word yes --out yes.wav [--seconds 1.0]
      [--temperature 1.0] [--seed 0]

--word: the run must be a WaveNet trained with task audio_lm and conditioned on the word
(model.num_labels > 0, task.label_key 'label'); the word is looked up in its data set's
word list (`bigjax.data.sets.speech.label_names`). `generate_audio` samples --seconds of
audio at the run's data.sample_rate, one mu-law code at a time after a silent first sample,
through `bigjax.decode` (the model's per-layer queues, one jitted scan), at --temperature
(0 = greedy); the codes are decoded (`mu_law_decode`) and written as a 16-bit wav
(`bigjax.data.wav.write_wav`).

--workdir: the run's config and latest checkpoint come from
`bigjax.train.loop.restore_from_workdir` and the prompt becomes tokens through the run's
data set's tokenizer (`bigjax.data.tokenizers`): a language model continues it; a
sequence-to-sequence model reads it as the source (tokens + EOS, as in training) and its
answer is decoded. --pretrained: a Hugging Face folder (config.json + safetensors + its
tokenizer) read by `bigjax.from_pretrained` and `load_tokenizer`; the LM continues the prompt.

Several --prompt values are generated in one batched call (ragged prompts are left-padded)
and printed one after the other, each followed by a blank line. The first one is streamed
to stdout as its tokens come (the new suffix of its decoded text, so a multi-byte
character comes out whole); --no_stream prints everything at the end. Generation stops at
the tokenizer's EOS ids and at every --stop text (each must be one token); the stop token
is not printed. Reserved ids (pad, BOS, ...) are never generated. Bad input ends with a
one-line message on stderr and exit code 2.
"""

import argparse
import os
import sys
from typing import Sequence, TextIO

import jax
import ml_collections
import numpy as np

from bigjax import decode
from bigjax.data.datasets import dataset_spec
from bigjax.data.tokenizers import Tokenizer


def run_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> Tokenizer:
  """The tokenizer of the run's data set; files the run saved are looked up in `workdir`."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.workdir = workdir  # where the run was trained, it may have moved since
  spec = dataset_spec(data.name)
  if spec.tokenizer is None:
    raise ValueError(f'the {data.name!r} data set has no tokenizer: generation needs text data')
  return spec.tokenizer(data)


class Prompt:
  """A tokenizer plus the task's prompt format: an LM continues the prompt's tokens; a
  seq2seq model reads tokens + EOS (cut to `max_len` with the EOS kept), as in training."""

  def __init__(self, tokenizer: Tokenizer, task: str, max_len: int | None = None):
    self.tokenizer, self.task, self.max_len = tokenizer, task, max_len
    self.bos_id, self.eos_id = tokenizer.bos_id, tokenizer.eos_id
    eos_ids = getattr(tokenizer, 'eos_ids', None)  # HFTokenizer: every id that ends a text
    self.eos_ids = decode.stop_ids(eos_ids if eos_ids else self.eos_id)

  def encode(self, text: str) -> np.ndarray:
    if not text:
      raise ValueError('the prompt is empty: give at least one character')
    ids = self.tokenizer.encode(text)
    if self.task == 'seq2seq' and self.eos_id is not None:
      ids = np.append(ids[: self.max_len - 1] if self.max_len else ids, self.eos_id)
    if not len(ids):
      raise ValueError('the prompt is empty: give at least one character')
    return ids.astype(np.int32)

  def decode(self, ids) -> str:
    return self.tokenizer.decode(ids)

  def stop_id(self, text: str) -> int:
    """The id of a text that is one token (a BOS the tokenizer prepends is not counted)."""
    ids = [int(i) for i in self.tokenizer.encode(text)] if text else []
    if len(ids) > 1 and self.bos_id is not None and ids[0] == self.bos_id:
      ids = ids[1:]
    if len(ids) != 1:
      raise ValueError(
        f'--stop {text!r} is {len(ids)} tokens for this tokenizer: give texts of one token'
      )
    return ids[0]


def codec_for(config: ml_collections.ConfigDict, workdir: str) -> Prompt:
  """The prompt format of the run in `workdir` (its data set's tokenizer and task)."""
  task = config.get('task', {}).get('name', '') or dataset_spec(config.data.name).task
  max_len = config.data.get('max_len', None)
  return Prompt(run_tokenizer(config, workdir), task, int(max_len) if max_len else None)


def load(workdir: str | None = None, pretrained: str | None = None, *, ema: bool = False):
  """(model, variables, Prompt) of a training run or a Hugging Face folder (one of them);
  `ema`: a run's moving average of its parameters (train.ema_decay > 0)."""
  if (workdir is None) == (pretrained is None):
    raise ValueError('give one of --workdir (a training run) or --pretrained (a HF folder)')
  folder = workdir if pretrained is None else pretrained
  if not os.path.isdir(folder):
    what = 'workdir' if pretrained is None else 'pretrained folder'
    raise FileNotFoundError(f'{what} {folder!r} does not exist')
  if pretrained is not None:
    import bigjax
    from bigjax.data.tokenizers import load_tokenizer

    codec = Prompt(load_tokenizer(pretrained), 'lm')  # first: it fails faster than weights
    model, variables = bigjax.from_pretrained(pretrained)
    return model, variables, codec
  from bigjax.train.loop import restore_from_workdir  # the trainer, only when generating

  config, model, variables = restore_from_workdir(workdir, **({'ema': True} if ema else {}))
  return model, variables, codec_for(config, workdir)


class Streamer:
  """on_token for `bigjax.decode`: writes row `row`'s text to `out` as its tokens come.

  The text is decoded again at each token and only the new suffix is written, held back
  while it ends in an incomplete character (U+FFFD), so multi-byte characters come out
  whole. A stop id ends the row; it is not written."""

  def __init__(self, codec: Prompt, prefix, stops: Sequence[int], out: TextIO, row: int = 0):
    self.codec, self.stops, self.out, self.row = codec, set(stops), out, row
    self.ids = [int(i) for i in prefix]
    self.written = codec.decode(self.ids) if self.ids else ''
    self.done = False
    self._write(self.written)

  def _write(self, text: str) -> None:
    if text:
      self.out.write(text)
      self.out.flush()

  def __call__(self, tokens: np.ndarray) -> None:
    token = int(tokens[self.row])
    if self.done or token in self.stops:
      self.done = True
      return
    self.ids.append(token)
    self._advance(final=False)

  def _advance(self, final: bool) -> None:
    text = self.codec.decode(self.ids)
    if (final or not text.endswith('\ufffd')) and text.startswith(self.written):
      self._write(text[len(self.written) :])
      self.written = text

  def close(self) -> None:
    """Writes what was held back (an incomplete character at the very end)."""
    self._advance(final=True)


def _until_stop(ids, stops: Sequence[int]) -> np.ndarray:
  ids = np.asarray(ids).reshape(-1)
  hits = np.flatnonzero(np.isin(ids, list(stops))) if stops else []
  return ids[: hits[0]] if len(hits) else ids


def check_options(max_new_tokens: int, **options) -> None:
  """One-line errors for out-of-range decoding options, before anything is loaded or
  printed."""
  limits = {
    'max_new_tokens': (max_new_tokens, lambda v: v >= 1, 'at least 1'),
    'temperature': (options.get('temperature', 1.0), lambda v: v >= 0, '>= 0 (0 = greedy)'),
    'top_k': (options.get('top_k', 0), lambda v: v >= 0, '>= 0 (0 = no cut)'),
    'top_p': (options.get('top_p', 1.0), lambda v: 0 < v <= 1, 'in (0, 1] (1 = no cut)'),
    'beam_size': (options.get('beam_size', 4), lambda v: v >= 1, 'at least 1'),
  }
  for name, (value, ok, allowed) in limits.items():
    if not ok(value):
      raise ValueError(f'--{name} must be {allowed}, got {value}')


def generate(
  workdir: str | None,
  prompt: str | Sequence[str],
  *,
  pretrained: str | None = None,
  max_new_tokens: int = 100,
  method: str = 'greedy',
  seed: int = 0,
  stop: Sequence[str] = (),
  repetition_penalty: float = 1.0,
  stream: TextIO | None = None,
  ema: bool = False,
  **options,
) -> str | list[str]:
  """Loads the run in `workdir` (or the HF folder `pretrained`) and returns the generated
  text: a string for one prompt, a list for a list of prompts (one batched call).

  An LM's text is the prompt and its continuation; a seq2seq model's is its answer. With
  `stream` (a text file, e.g. sys.stdout) the first prompt's text is written there as it
  comes. `ema`: the run's moving average of its parameters. options: temperature, top_k,
  top_p, beam_size, alpha."""
  texts = [prompt] if isinstance(prompt, str) else list(prompt)
  if not texts:
    raise ValueError('no prompt: give at least one --prompt')
  check_options(max_new_tokens, **options)
  if ema and pretrained is not None:
    raise ValueError('--ema needs --workdir (a run trained with train.ema_decay > 0)')
  model, variables, codec = load(workdir, pretrained, ema=ema)
  size, ids_count = getattr(model, 'vocab_size', None), codec.tokenizer.vocab_size
  if isinstance(size, int) and ids_count > size:
    raise ValueError(
      f'the tokenizer of {workdir or pretrained!r} has {ids_count} ids but the model has '
      f'vocab_size={size}: it does not match the model; use the tokenizer saved with it'
    )
  ids = [codec.encode(t) for t in texts]
  stops = decode.stop_ids((*codec.eos_ids, *(codec.stop_id(s) for s in stop)))
  context = getattr(model, 'max_len', None) if getattr(model, 'position', '') == 'learned' else None
  longest = max(len(i) for i in ids)
  if isinstance(context, int) and longest + max_new_tokens > context:
    raise ValueError(
      f'a prompt of {longest} tokens plus --max_new_tokens {max_new_tokens} is longer than the '
      f"model's context: the learned positions cover max_len={context}; shorten the prompt "
      'or ask for fewer tokens'
    )
  kw = dict(
    max_new_tokens=max_new_tokens,
    method=method,
    rng=jax.random.key(seed),
    eos_id=stops or None,
    pad_id=codec.tokenizer.pad_id,
    banned_ids=tuple(codec.tokenizer.reserved_ids),
    repetition_penalty=repetition_penalty,
    **options,
  )
  if codec.task == 'lm':  # the prompt is continued
    streamer = Streamer(codec, ids[0], stops, stream) if stream is not None else None
    if len(ids) > 1 and len({len(i) for i in ids}) > 1 and not decode._takes_segment_ids(model):
      # A model without segment_ids cannot read left-padded prompts: one call per prompt.
      outs = [
        np.asarray(decode.generate_lm(model, variables, i[None], **kw, on_token=on))[0]
        for i, on in zip(ids, [streamer] + [None] * (len(ids) - 1))
      ]
    else:
      prompts = ids if len(ids) > 1 else ids[0][None]
      outs = list(
        np.asarray(decode.generate_lm(model, variables, prompts, **kw, on_token=streamer))
      )
    if streamer is not None:
      streamer.close()
    results = [codec.decode(np.concatenate([i, _until_stop(o, stops)])) for i, o in zip(ids, outs)]
  elif codec.task == 'seq2seq':  # the prompt is the source
    if codec.bos_id is None:
      raise ValueError(f'the {type(codec.tokenizer).__name__} has no BOS id to start a target')
    kw['eos_id'] = stops[0] if len(stops) == 1 else kw['eos_id']
    src = np.full((len(ids), max(len(i) for i in ids)), codec.tokenizer.pad_id or 0, np.int32)
    for b, i in enumerate(ids):  # right-padded, as in training
      src[b, : len(i)] = i
    streamer = Streamer(codec, [], stops, stream) if stream is not None else None
    out = decode.generate_seq2seq(
      model, variables, src, bos_id=codec.bos_id, **kw, on_token=streamer
    )
    if streamer is not None:
      streamer.close()
    results = [codec.decode(_until_stop(o, stops)) for o in np.asarray(out)]
  else:
    raise ValueError(
      f'{workdir!r} holds a {codec.task!r} model: generation needs an lm or seq2seq run'
    )
  return results[0] if isinstance(prompt, str) else results


def generate_audio(
  workdir: str,
  word: str | Sequence[str],
  *,
  seconds: float = 1.0,
  temperature: float = 1.0,
  seed: int = 0,
  ema: bool = False,
) -> tuple[np.ndarray, int]:
  """Loads the WaveNet run in `workdir` and says `word`: (audio float32 [N] in [-1, 1],
  sample rate); N = seconds x the run's data.sample_rate. A list of words is said in one
  batched call, each row with its own random key: audio [len(words), N]. See the module
  docstring."""
  words_asked = [word] if isinstance(word, str) else list(word)
  if not words_asked:
    raise ValueError('no word: give at least one')
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'workdir {workdir!r} does not exist')
  if not seconds > 0:
    raise ValueError(f'--seconds must be positive, got {seconds}')
  if temperature < 0:
    raise ValueError(f'--temperature must be >= 0 (0 = greedy), got {temperature}')
  from bigjax.data.sets.speech import label_names
  from bigjax.layers.audio import mu_law_decode, mu_law_encode
  from bigjax.train.loop import restore_from_workdir  # the trainer, only when generating

  config, model, variables = restore_from_workdir(workdir, **({'ema': True} if ema else {}))
  task = config.get('task', {}).get('name', '')
  if task != 'audio_lm':
    raise ValueError(
      f'{workdir!r} holds a {task or "non-audio"} run: --word needs a WaveNet run (task audio_lm)'
    )
  key = config.task.get('label_key', 'label') or 'label'
  if not getattr(model, 'num_labels', 0) or key != 'label':
    raise ValueError(
      f'the WaveNet in {workdir!r} is not conditioned on the word (model.num_labels='
      f'{getattr(model, "num_labels", 0)}, task.label_key={key!r}): train one with '
      "model.num_labels > 0 and task.label_key='label' to ask it for a word"
    )
  if getattr(model, 'mel_bands', 0):
    raise ValueError(
      f'the WaveNet in {workdir!r} is locally conditioned on a log-mel (model.mel_bands > 0): '
      'it needs conditioning audio, not only a word'
    )
  words = label_names(config.data.name)
  for w in words_asked:
    if w not in words:
      raise ValueError(f'unknown word {w!r}: the {config.data.name} words are {", ".join(words)}')
  labels = np.array([words.index(w) for w in words_asked], np.int32)  # [B]
  rate = int(config.data.get('sample_rate', 16000))
  n = max(1, round(seconds * rate))
  silence = np.zeros((len(labels), 1), np.float32)
  silence = np.asarray(mu_law_encode(silence, model.vocab_size))  # [B, 1]: the first sample
  codes = decode.generate_lm(
    model,
    variables,
    silence,
    max_new_tokens=n,
    method='sample' if temperature > 0 else 'greedy',
    rng=jax.random.key(seed),
    pad_id=None,  # every code is a sample value
    temperature=temperature,
    conditioning={'label': labels},
  )
  audio = mu_law_decode(np.asarray(codes), model.vocab_size)  # [B, N]
  return (audio[0] if isinstance(word, str) else audio), rate


def _say(args) -> int:
  """The --word path of `main`."""
  from bigjax.data.wav import write_wav

  if args.pretrained is not None or args.out is None or args.word is None:
    raise ValueError('--word needs --workdir (a WaveNet run) and --out FILE.wav')
  audio, rate = generate_audio(
    args.workdir,
    args.word,
    seconds=args.seconds,
    temperature=args.temperature,
    seed=args.seed,
    ema=args.ema,
  )
  write_wav(args.out, audio, rate)
  print(f'wrote {args.out}: {args.word!r}, {len(audio) / rate:.2f} s at {rate} Hz')
  return 0


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m bigjax.generate', description=__doc__.split('\n')[0])
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument('--workdir', help='a training run folder with checkpoints')
  source.add_argument('--pretrained', help='a Hugging Face model folder (weights + tokenizer)')
  p.add_argument('--prompt', action='append', help='text to continue (LM) or translate; repeatable')
  p.add_argument('--word', help='a word for a WaveNet run to say (with --out)')
  p.add_argument('--out', help='the .wav file --word writes')
  p.add_argument('--seconds', type=float, default=1.0, help='length of the generated audio')
  p.add_argument('--max_new_tokens', type=int, default=100)
  p.add_argument('--method', choices=('greedy', 'sample', 'beam'), default='greedy')
  p.add_argument('--temperature', type=float, default=1.0)
  p.add_argument('--top_k', type=int, default=0, help='0 = no top-k cut')
  p.add_argument('--top_p', type=float, default=1.0, help='1 = no nucleus cut')
  p.add_argument('--repetition_penalty', type=float, default=1.0, help='1 = off (CTRL)')
  p.add_argument('--stop', action='append', default=[], help='a one-token stop text; repeatable')
  p.add_argument('--beam_size', type=int, default=4)
  p.add_argument('--alpha', type=float, default=0.6, help='beam length penalty exponent')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--no_stream', action='store_true', help='print the texts at the end')
  p.add_argument('--ema', action='store_true', help="the run's moving average of its parameters")
  p.add_argument('--verbose', action='store_true', help='show tracebacks')
  return p


def _first_line(e: Exception) -> str:
  return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  if (args.word is None and args.out is None) == (args.prompt is None):
    parser.error('give --prompt (text), or --word and --out (audio from a WaveNet run)')
  if args.prompt is None:
    try:
      return _say(args)
    except (ValueError, OSError) as e:
      if args.verbose:
        raise
      print(f'error: {_first_line(e)}', file=sys.stderr)
      return 2
  options = dict(
    temperature=args.temperature,
    top_k=args.top_k,
    top_p=args.top_p,
    beam_size=args.beam_size,
    alpha=args.alpha,
  )
  stream = None if args.no_stream else sys.stdout
  try:
    texts = generate(
      args.workdir,
      args.prompt,
      pretrained=args.pretrained,
      max_new_tokens=args.max_new_tokens,
      method=args.method,
      seed=args.seed,
      stop=args.stop,
      repetition_penalty=args.repetition_penalty,
      stream=stream,
      ema=args.ema,
      **options,
    )
  except (ValueError, OSError) as e:
    if args.verbose:
      raise
    print(f'error: {_first_line(e)}', file=sys.stderr)
    return 2
  for i, text in enumerate(texts):
    if stream is None or i > 0:  # the first was streamed
      print(text, end='')
    print('\n')  # a blank line after each text
  return 0


if __name__ == '__main__':
  sys.exit(main())
