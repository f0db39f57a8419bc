"""Generate text with a trained LM or sequence-to-sequence model.

  python -m bigjax.generate --workdir DIR --prompt 'def main(' [--max_new_tokens 200]
      [--method greedy|sample|beam] [--temperature 0.8] [--top_k 40] [--top_p 0.95]
      [--beam_size 4] [--alpha 0.6] [--seed 0]

The run's config and latest checkpoint come from `bigjax.train.loop.restore_from_workdir`.
How the prompt becomes tokens depends on the run's dataset: UTF-8 bytes for byte-level
LMs (the prompt is continued), the digit vocabulary of the `algorithmic` tasks ('12+345'),
and the subword tokenizer saved in the workdir for WMT (the prompt is translated).
Bad input ends with a one-line message and exit code 2.
"""

import argparse
import os
import sys

import jax
import numpy as np

from bigjax import decode


class _Codec:
  """Prompt text <-> token ids for one dataset: `encode(text)`, `decode(ids)`."""

  bos_id: int | None = None
  eos_id: int | None = None


class _Bytes(_Codec):
  """Byte-level LMs: the prompt's UTF-8 bytes; no EOS, so N tokens are always produced."""

  def encode(self, text):
    ids = np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32)
    if not len(ids):
      raise ValueError('the prompt is empty: a language model needs at least one byte')
    return ids

  def decode(self, ids):
    return bytes(int(i) for i in ids).decode('utf-8', errors='replace')


class _Algorithmic(_Codec):
  """Digits and '+', one token each; the source ends with EOS. For `algorithmic_reversed`
  (`reversed_target`) answers come out backwards and are turned round, and operands are
  zero-padded to `pad_width` digits as in training."""

  def __init__(self, reversed_target: bool = False, pad_width: int = 0):
    from bigjax.data.builders import algorithmic as alg

    self.alg, self.reversed_target, self.pad_width = alg, reversed_target, pad_width
    self.bos_id, self.eos_id = alg.BOS, alg.EOS
    self.ids = {str(d): alg.DIGIT0 + d for d in range(10)}
    self.ids['+'] = alg.PLUS

  def encode(self, text):
    text = ''.join(text.split())
    bad = sorted({c for c in text if c not in self.ids})
    if bad or not text:
      raise ValueError(f'an algorithmic prompt is digits and "+", like 12+345; got {text!r}')
    ids = np.array([self.ids[c] for c in text], np.int32)
    if self.pad_width:
      from bigjax.data.algorithmic_reversed import pad_operands

      if text.count('+') != 1:
        raise ValueError(f'an addition prompt has one "+", like 12+345; got {text!r}')
      ids = pad_operands(ids, self.pad_width)
    return np.append(ids, self.eos_id).astype(np.int32)

  def decode(self, ids):
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[: ids.index(self.eos_id)]
    return self.alg.ids_to_text(ids[::-1] if self.reversed_target else ids)


class _Subwords(_Codec):
  """WMT: the BPE tokenizer saved in the workdir when the run first opened its data."""

  def __init__(self, path: str, max_len: int):
    from bigjax.data import wmt

    self.wmt, self.max_len = wmt, max_len
    self.tok = wmt.load_tokenizer(path)
    self.bos_id, self.eos_id = wmt.BOS_ID, wmt.EOS_ID

  def encode(self, text):
    ids = self.wmt.encode_source(self.tok, text, self.max_len)
    return ids[: max(int((ids != self.wmt.PAD_ID).sum()), 1)]

  def decode(self, ids):
    return self.wmt.decode_target(self.tok, ids)


def codec_for(config, workdir: str) -> _Codec:
  """The prompt codec of the run's dataset."""
  name = config.data.name
  if name == 'algorithmic':
    return _Algorithmic()
  if name == 'algorithmic_reversed':
    from bigjax.data.algorithmic_reversed import operand_width

    return _Algorithmic(reversed_target=True, pad_width=operand_width(config.data))
  if name.startswith('wmt'):
    path = config.data.get('tokenizer', '') or os.path.join(workdir, 'tokenizer.json')
    return _Subwords(path, int(config.data.get('max_len', 256)))
  if config.model.get('vocab_size', 256) == 256:
    return _Bytes()
  raise ValueError(f'bigjax.generate does not know how to encode prompts for {name!r}')


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m bigjax.generate', description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True, help='a training run folder with checkpoints')
  p.add_argument('--prompt', required=True, help='text to continue (LM) or translate')
  p.add_argument('--max_new_tokens', type=int, default=100)
  p.add_argument('--method', choices=('greedy', 'sample', 'beam'), default='greedy')
  p.add_argument('--temperature', type=float, default=1.0)
  p.add_argument('--top_k', type=int, default=0, help='0 = no top-k cut')
  p.add_argument('--top_p', type=float, default=1.0, help='1 = no nucleus cut')
  p.add_argument('--beam_size', type=int, default=4)
  p.add_argument('--alpha', type=float, default=0.6, help='beam length penalty exponent')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--verbose', action='store_true', help='show tracebacks')
  return p


def generate(
  workdir: str,
  prompt: str,
  *,
  max_new_tokens: int = 100,
  method: str = 'greedy',
  seed: int = 0,
  **options,
) -> str:
  """Loads the run in `workdir` and returns the generated text."""
  from bigjax.data.datasets import dataset_spec
  from bigjax.train.loop import restore_from_workdir

  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'workdir {workdir!r} does not exist')
  config, model, variables = restore_from_workdir(workdir)
  task = dataset_spec(config.data.name).task
  codec = codec_for(config, workdir)
  ids = codec.encode(prompt)[None]  # [1, L]
  kw = dict(
    max_new_tokens=max_new_tokens,
    method=method,
    rng=jax.random.key(seed),
    eos_id=codec.eos_id,
    **options,
  )
  if task == 'lm':  # the prompt is continued
    out = decode.generate_lm(model, variables, ids, **kw)
    return codec.decode(np.concatenate([ids[0], np.asarray(out[0])]))
  if task == 'seq2seq':  # the prompt is the source
    out = decode.generate_seq2seq(model, variables, ids, bos_id=codec.bos_id, **kw)
    return codec.decode(np.asarray(out[0]))
  raise ValueError(f'{workdir!r} holds a {task!r} model: generation needs an lm or seq2seq run')


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
  options = dict(
    temperature=args.temperature,
    top_k=args.top_k,
    top_p=args.top_p,
    beam_size=args.beam_size,
    alpha=args.alpha,
  )
  try:
    text = generate(
      args.workdir,
      args.prompt,
      max_new_tokens=args.max_new_tokens,
      method=args.method,
      seed=args.seed,
      **options,
    )
  except (ValueError, OSError) as e:
    if args.verbose:
      raise
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f'error: {message}', file=sys.stderr)
    return 2
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
