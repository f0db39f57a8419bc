"""Generate text with a trained LM or sequence-to-sequence model.

  python -m bigjax.generate --workdir DIR --prompt 'def main(' [--max_new_tokens 200]
      [--method greedy|sample|beam] [--temperature 0.8] [--top_k 40] [--top_p 0.95]
      [--beam_size 4] [--alpha 0.6] [--seed 0]

The run's config and latest checkpoint come from `bigjax.train.loop.restore_from_workdir`.
The prompt becomes tokens through the run's data set's tokenizer
(`bigjax.data.tokenizers`): a language model continues it; a sequence-to-sequence model
reads it as the source (tokens + EOS, as in training) and its answer is decoded. Reserved
ids (pad, BOS, ...) are never generated. Bad input ends with a one-line message and exit
code 2.
"""

import argparse
import os
import sys

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

  def encode(self, text: str) -> np.ndarray:
    ids = self.tokenizer.encode(text)
    if self.task == 'seq2seq' and self.eos_id is not None:
      ids = np.append(ids[: self.max_len - 1] if self.max_len else ids, self.eos_id)
    if not len(ids):
      raise ValueError('the prompt is empty: give at least one character')
    return ids.astype(np.int32)

  def decode(self, ids) -> str:
    return self.tokenizer.decode(ids)


def codec_for(config: ml_collections.ConfigDict, workdir: str) -> Prompt:
  """The prompt format of the run in `workdir` (its data set's tokenizer and task)."""
  task = config.get('task', {}).get('name', '') or dataset_spec(config.data.name).task
  max_len = config.data.get('max_len', None)
  return Prompt(run_tokenizer(config, workdir), task, int(max_len) if max_len else None)


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
  from bigjax.train.loop import restore_from_workdir  # the trainer, only when generating

  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'workdir {workdir!r} does not exist')
  config, model, variables = restore_from_workdir(workdir)
  codec = codec_for(config, workdir)
  ids = codec.encode(prompt)[None]  # [1, L]
  kw = dict(
    max_new_tokens=max_new_tokens,
    method=method,
    rng=jax.random.key(seed),
    eos_id=codec.eos_id,
    banned_ids=tuple(codec.tokenizer.reserved_ids),
    **options,
  )
  if codec.task == 'lm':  # the prompt is continued
    out = decode.generate_lm(model, variables, ids, **kw)
    return codec.decode(np.concatenate([ids[0], np.asarray(out[0])]))
  if codec.task == 'seq2seq':  # the prompt is the source
    if codec.bos_id is None:
      raise ValueError(f'the {config.data.name!r} tokenizer has no BOS id to start a target')
    out = decode.generate_seq2seq(model, variables, ids, bos_id=codec.bos_id, **kw)
    return codec.decode(np.asarray(out[0]))
  raise ValueError(
    f'{workdir!r} holds a {codec.task!r} model: generation needs an lm or seq2seq run'
  )


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
