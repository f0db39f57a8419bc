"""No pickle, nowhere: the shipped code never unpickles, evaluates strings or runs remote
code, so loading a weights file or a checkpoint cannot execute anything.

Scans every Python file of the package, the entry points, configs, benches and examples
(comments and docstrings included only where they are code: a line is matched after
stripping its comment). `ast.literal_eval` is allowed: it parses literals only.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ('bigjax', 'bench', 'configs', 'examples', 'train.py')

FORBIDDEN = {
  'pickle': re.compile(
    r'^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib)\b|\bc?pickle\.(loads?|Unpickler)\b'
  ),
  'torch.load': re.compile(r'\btorch\.load\('),
  'allow_pickle=True': re.compile(r'allow_pickle\s*=\s*True'),
  'eval(': re.compile(r'(?<![\w.])eval\('),
  'exec(': re.compile(r'(?<![\w.])exec\('),
  'trust_remote_code': re.compile(r'trust_remote_code'),
}  # fmt: skip


def _code(line: str) -> str:
  """The line without its trailing comment (a '#' inside a string is rare enough here)."""
  return line.split('#', 1)[0]


def findings(text: str, name: str = '<text>') -> list[str]:
  """'name:line: what' for every forbidden construct in the source `text`."""
  found = []
  for number, line in enumerate(text.splitlines(), 1):
    code = _code(line)
    for what, pattern in FORBIDDEN.items():
      if pattern.search(code):
        found.append(f'{name}:{number}: {what}')
  return found


def _files():
  for entry in SCANNED:
    path = os.path.join(ROOT, entry)
    if os.path.isfile(path):
      yield path
      continue
    for folder, _, names in os.walk(path):
      yield from (os.path.join(folder, n) for n in sorted(names) if n.endswith('.py'))


@pytest.mark.parametrize(
  'source',
  [
    'import pickle',
    'from pickle import loads',
    'x = pickle.loads(b)',
    'state = torch.load(path)',
    'np.load(f, allow_pickle=True)',
    'y = eval(text)',
    'exec(code)',
    'AutoModel.from_pretrained(p, trust_remote_code=True)',
  ],
)
def test_the_scanner_finds_each_forbidden_construct(source):
  assert findings(source), source


@pytest.mark.parametrize(
  'source',
  [
    'value = ast.literal_eval(text)',
    'model.eval()',
    'spec.loader.exec_module(module)',
    'np.load(f, allow_pickle=False)',
    '# bigjax never loads pickled weights',
  ],
)
def test_the_scanner_passes_safe_code(source):
  assert not findings(source), source


def test_no_pickle_eval_exec_or_remote_code_anywhere():
  files = list(_files())
  assert len(files) > 50, files  # the scan really saw the package
  found = []
  for path in files:
    with open(path, encoding='utf-8') as f:
      found += findings(f.read(), os.path.relpath(path, ROOT))
  assert not found, '\n'.join(found)


def test_weight_readers_refuse_pickled_files(tmp_path):
  import bigjax

  (tmp_path / 'config.json').write_text('{"model_type": "gpt2"}')
  (tmp_path / 'pytorch_model.bin').write_bytes(b'\x80\x04not really')
  with pytest.raises(FileNotFoundError, match='never loads pickled weights'):
    bigjax.from_pretrained(str(tmp_path))
