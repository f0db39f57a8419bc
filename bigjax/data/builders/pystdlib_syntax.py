"""TFDS builder `pystdlib_syntax`: is a snippet of Python valid according to `compile()`?

Snippets are 3-8 consecutive non-blank lines of a standard library file (the files and the
split of `bigjax.data.builders.pystdlib`: no file is in both splits), dedented
(`textwrap.dedent`), that `compile()` accepts and that hold code on at least two lines
(not only docstrings or comments). Label 1 (valid) keeps the snippet; label 0
(invalid) applies one small corruption that `compile()` then rejects: drop a bracket, drop
a colon, swap two adjacent tokens of a line, or break a line's indentation. A corruption
that still compiles is discarded and another is tried; a snippet that no corruption
breaks is not used for either label, so both classes are drawn from the same snippets.
Examples alternate valid / invalid (exactly balanced). Snippets are drawn with a fixed seed
(files weighted by their line count), no snippet twice in a split, and no validation
snippet whose text is also a training snippet. Labels depend on the Python that prepares
the data (its stdlib and its grammar).
"""

import io
import os
import sysconfig
import textwrap
import tokenize
import warnings

import numpy as np
import tensorflow_datasets as tfds

from bigjax.data.builders.pystdlib import is_validation, stdlib_files

NUM_EXAMPLES = {'train': 20_000, 'validation': 2_000}
MIN_LINES, MAX_LINES = 3, 8
CORRUPTIONS = ('drop_bracket', 'drop_colon', 'swap_tokens', 'break_indent')
SEED = 0
WEIGHT_CAP = 500  # lines: files are drawn in proportion to min(lines, WEIGHT_CAP)
_BRACKETS = set('()[]{}')
_SWAPPABLE = {tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING}
_CODE = {tokenize.NAME, tokenize.OP, tokenize.NUMBER}
MIN_CODE_LINES = 2  # snippets of docstrings or comments only are skipped


def compiles(code: str) -> bool:
  """Whether `compile(code, ..., 'exec')` accepts the code (warnings silenced)."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    try:
      compile(code, '<snippet>', 'exec', dont_inherit=True)
    except (SyntaxError, ValueError):  # ValueError: a null byte
      return False
  return True


def _tokens(code: str) -> list[tokenize.TokenInfo]:
  return list(tokenize.generate_tokens(io.StringIO(code).readline))


def _edit(lines: list[str], row: int, start: int, end: int, text: str) -> str:
  """lines with lines[row][start:end] replaced by text, joined."""
  lines = list(lines)
  lines[row] = lines[row][:start] + text + lines[row][end:]
  return '\n'.join(lines) + '\n'


def corrupt(code: str, kind: str, rng: np.random.Generator, tokens=None) -> str | None:
  """One random corruption of `kind` (None when the snippet offers no place for it);
  `tokens`: the code's tokens, if already known."""
  lines = code.splitlines()
  if kind == 'break_indent':
    row = int(rng.integers(len(lines)))
    line = lines[row]
    indent = len(line) - len(line.lstrip())
    if indent and rng.random() < 0.5:
      return _edit(lines, row, 0, indent, '')  # dedented to column 0
    return _edit(lines, row, 0, 0, ' ' * int(rng.integers(1, 5)))  # indented 1-4 columns more
  tokens = _tokens(code) if tokens is None else tokens
  toks = [t for t in tokens if t.start[0] == t.end[0]]  # one-line tokens
  if kind in ('drop_bracket', 'drop_colon'):
    wanted = _BRACKETS if kind == 'drop_bracket' else {':'}
    places = [t for t in toks if t.type == tokenize.OP and t.string in wanted]
    if not places:
      return None
    t = places[int(rng.integers(len(places)))]
    return _edit(lines, t.start[0] - 1, t.start[1], t.end[1], '')
  assert kind == 'swap_tokens', kind
  words = [t for t in toks if t.type in _SWAPPABLE]
  pairs = [
    (a, b) for a, b in zip(words, words[1:]) if a.start[0] == b.start[0] and a.string != b.string
  ]
  if not pairs:
    return None
  a, b = pairs[int(rng.integers(len(pairs)))]
  between = lines[a.start[0] - 1][a.end[1] : b.start[1]]
  return _edit(lines, a.start[0] - 1, a.start[1], b.end[1], b.string + between + a.string)


def corrupted(code: str, rng: np.random.Generator, tries: int = 3, tokens=None):
  """(corrupted code, kind) that `compile()` rejects, or None: the kinds in a random order,
  up to `tries` places each."""
  tokens = _tokens(code) if tokens is None else tokens
  for k in rng.permutation(len(CORRUPTIONS)):
    kind = CORRUPTIONS[int(k)]
    for _ in range(tries):
      bad = corrupt(code, kind, rng, tokens)
      if bad is None:
        break
      if bad != code and not compiles(bad):
        return bad, kind
  return None


def code_lines(tokens: list[tokenize.TokenInfo]) -> int:
  """How many lines hold code (a name, number or operator), not only strings or comments."""
  return len({t.start[0] for t in tokens if t.type in _CODE})


def _read_lines(root: str, rel: str) -> list[str]:
  with open(os.path.join(root, rel), 'rb') as f:
    text = f.read().decode('utf-8', errors='replace')
  return [line for line in text.splitlines() if line.strip()]


def snippets(root: str, files: list[str], count: int, seed: int, exclude=frozenset()):
  """`count` examples (path, code, label, corruption), alternating valid (1) / invalid (0)."""
  docs = [(rel, _read_lines(root, rel)) for rel in files]
  docs = [(rel, lines) for rel, lines in docs if len(lines) >= MIN_LINES]
  # Weighted by line count, capped so that a few huge files (pydoc_data/topics.py is one
  # string table) do not dominate.
  cumulative = np.cumsum([min(len(lines), WEIGHT_CAP) for _, lines in docs])
  rng = np.random.default_rng(seed)
  seen, out = set(exclude), []
  while len(out) < count:
    rel, lines = docs[int(np.searchsorted(cumulative, rng.integers(cumulative[-1]), 'right'))]
    n = int(rng.integers(MIN_LINES, MAX_LINES + 1))
    start = int(rng.integers(max(len(lines) - n, 0) + 1))
    code = textwrap.dedent('\n'.join(lines[start : start + n])) + '\n'
    if code in seen or not compiles(code):
      continue
    tokens = _tokens(code)
    if code_lines(tokens) < MIN_CODE_LINES:
      continue
    bad = corrupted(code, rng, tokens=tokens)
    if bad is None:
      continue
    seen.add(code)
    valid = len(out) % 2 == 0
    if not valid and bad[0] in seen:
      continue
    text, kind = (code, '') if valid else bad
    seen.add(text)
    out.append({'path': rel, 'code': text, 'label': int(valid), 'corruption': kind})
  return out


class PystdlibSyntax(tfds.core.GeneratorBasedBuilder):
  """Snippets of the Python standard library labelled valid (1) or invalid (0) by compile()."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': '20k train / 2k validation snippets of 3-8 lines, split by file.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description='Python snippets labelled by compile(): valid, or one small corruption.',
      features=tfds.features.FeaturesDict(
        {
          'path': tfds.features.Text(),
          'code': tfds.features.Text(),
          'label': tfds.features.ClassLabel(names=['invalid', 'valid']),
          'corruption': tfds.features.Text(),
        }
      ),
      supervised_keys=('code', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    root = sysconfig.get_paths()['stdlib']
    files = stdlib_files(root)
    train_files = [f for f in files if not is_validation(f)]
    train = snippets(root, train_files, NUM_EXAMPLES['train'], SEED)
    validation = snippets(
      root,
      [f for f in files if is_validation(f)],
      NUM_EXAMPLES['validation'],
      SEED + 1,
      exclude=frozenset(e['code'] for e in train),
    )
    return {
      'train': self._generate_examples(train),
      'validation': self._generate_examples(validation),
    }

  def _generate_examples(self, examples):
    for i, example in enumerate(examples):
      yield i, example
