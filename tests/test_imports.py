"""No import cycle inside `bigjax/`, counting every import (those inside functions too)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'bigjax'


def _module_name(path: pathlib.Path, package: pathlib.Path) -> str:
  parts = path.relative_to(package.parent).with_suffix('').parts
  return '.'.join(parts).removesuffix('.__init__')


def _resolve(module: str | None, level: int, importer: str, is_package: bool) -> str | None:
  """The absolute name of `from {'.' * level}{module} import ...` inside `importer`."""
  if level == 0:
    return module
  base = importer.split('.')
  base = base if is_package else base[:-1]
  base = base[: len(base) - (level - 1)]
  return '.'.join(base + ([module] if module else []))


def import_graph(package: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
  """module -> the modules of `package` it imports anywhere in its source."""
  imports: dict[str, set[str]] = {}
  for path in sorted(package.rglob('*.py')):
    name = _module_name(path, package)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        found |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom):
        base = _resolve(node.module, node.level, name, path.name == '__init__.py')
        if base:
          found.add(base)
          found |= {f'{base}.{alias.name}' for alias in node.names}
    imports[name] = found
  return {m: {d for d in deps if d in imports and d != m} for m, deps in imports.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle per strongly connected component that has one (Tarjan's algorithm)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  components: list[list[str]] = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        components.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return [_cycle_in(graph, set(c)) for c in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
  """A concrete cycle through the first module of a strongly connected component."""
  start = min(component)
  paths = {start: [start]}
  frontier = [start]
  while frontier:  # breadth first: the shortest way back to `start`
    nxt = []
    for v in frontier:
      for w in sorted(graph[v] & component):
        if w == start:
          return paths[v] + [start]
        if w not in paths:
          paths[w] = paths[v] + [w]
          nxt.append(w)
    frontier = nxt
  raise AssertionError('a strongly connected component always holds a cycle')


def test_the_checker_finds_a_cycle():
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
  assert find_cycles(graph) == [['a', 'b', 'c', 'a']]
  assert find_cycles({'a': {'b'}, 'b': set()}) == []


def test_relative_imports_resolve():
  assert _resolve('mlp', 1, 'bigjax.models.lenet', False) == 'bigjax.models.mlp'
  assert _resolve(None, 1, 'bigjax.models', True) == 'bigjax.models'
  assert _resolve('typing', 2, 'bigjax.models.lenet', False) == 'bigjax.typing'


def test_no_import_cycle_in_bigjax():
  graph = import_graph()
  assert 'bigjax.registry' in graph and 'bigjax.models.mlp' in graph
  cycles = find_cycles(graph)
  assert not cycles, 'import cycles in bigjax/:\n' + '\n'.join(' -> '.join(c) for c in cycles)


def test_family_modules_do_not_import_the_registry():
  graph = import_graph()
  families = [m for m in graph if m.startswith('bigjax.models.')]
  assert families
  for module in families:
    assert 'bigjax.registry' not in graph[module], f'{module} imports bigjax.registry'
