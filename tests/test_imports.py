"""The import graph inside ``danqing/`` has no cycle.

A cycle means some module can only be imported once another, which imports it back, is already half
initialised: it works or fails by import order, and it hides which layer sits on which.

The graph is built from the source with ``ast``, not by importing anything, so optional extras do not hide
an edge. Every ``import``/``from ... import`` counts wherever it stands: at module level, inside a function
(a deferred import still ties the two modules together; deferring hides a cycle, it does not remove it),
and under ``if TYPE_CHECKING:`` alike. The rules:

* ``pkg/__init__.py`` is the module ``pkg``.
* ``import danqing.a.b`` and ``from danqing.a.b import f`` are edges to ``danqing.a.b``; a dotted name that
  is not a module (``import danqing.a.b.attr``) falls back to its longest prefix that is one.
* ``from X import n`` is an edge to ``X.n`` when that is a module (``from . import sub``,
  ``from ..pkg import sub``) and otherwise to ``X`` itself: a name taken from a package's ``__init__`` runs
  that ``__init__`` and everything it imports.
* Relative imports resolve against the importing module's package, so ``from .sub import name`` in
  ``pkg/other.py`` or in ``pkg/__init__.py`` is an edge to ``pkg.sub``, never to ``pkg``.
* A submodule taking a name defined in its own package's ``__init__`` (``from . import NAME`` in
  ``pkg/sub.py``) is an edge to ``pkg`` and does count: when ``pkg/__init__`` imports ``pkg.sub``, as it
  usually does, that is a real cycle (``pkg.sub`` runs while ``pkg`` is half built).
* Not edges: a package's ``__init__`` importing its own submodules and those submodules importing their
  siblings directly (that is the normal shape of a package; the implicit "importing ``pkg.sub`` first runs
  ``pkg/__init__``" step is not drawn), and a module importing itself.
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "danqing"


def module_names(root: Path) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (``root.name`` is the top package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is a module; None outside the tree."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the tree that ``module`` (its source at ``path``) imports, by the rules above."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(_known(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 > len(parts) - 1:
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond the top package")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                if node.module:
                    base = f"{base}.{node.module}"
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else _known(base, modules))
    found.discard(None)
    found.discard(module)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted (iterative, so deep
    graphs cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def shortest_cycle_through(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest cycle ``start -> ... -> start`` that stays inside ``within`` (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & within):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each module that is on any, without repeats (a rotation is a repeat)."""
    found: dict[frozenset, list[str]] = {}
    for component in strongly_connected(graph):
        within = set(component)
        for module in component:
            cycle = shortest_cycle_through(graph, module, within)
            found.setdefault(frozenset(zip(cycle, cycle[1:])), cycle)
    return sorted(found.values())


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return import_graph(tmp_path / "pkg")


def test_graph_rules(tmp_path):
    """The rules in the module docstring, on a small made-up tree."""
    graph = _tree(tmp_path, {
        "pkg/__init__.py": "from .a import f\nfrom . import b\n",
        "pkg/a.py": "def g():\n    from .b import h\n",
        "pkg/b.py": "from . import NAME\n",
        "pkg/sub/__init__.py": "from .c import x\n",
        "pkg/sub/c.py": "from ..a import f\nimport os\n",
        "pkg/sub/d.py": "from pkg import sub\nfrom pkg.sub import x\nimport pkg.sub.c.attr\nfrom .. import a\n",
        "pkg/sub/e.py": "from . import *\n",
    })
    assert graph == {
        "pkg": {"pkg.a", "pkg.b"},
        "pkg.a": {"pkg.b"},                          # a function-level import counts
        "pkg.b": {"pkg"},                            # a name from its own package's __init__ counts
        "pkg.sub": {"pkg.sub.c"},                    # `from .c import x` in an __init__ is pkg.sub.c
        "pkg.sub.c": {"pkg.a"},                      # standard-library imports are not drawn
        "pkg.sub.d": {"pkg.sub", "pkg.sub.c", "pkg.a"},
        "pkg.sub.e": {"pkg.sub"},
    }
    assert strongly_connected(graph) == [["pkg", "pkg.a", "pkg.b"]]
    assert cycles(graph) == [["pkg", "pkg.b", "pkg"], ["pkg.a", "pkg.b", "pkg", "pkg.a"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles inside danqing/:\n" + "\n".join(" -> ".join(c) for c in found)


if __name__ == "__main__":
    graph = import_graph()
    for component in strongly_connected(graph):
        print("component:", ", ".join(component))
    for cycle in cycles(graph):
        print("  " + " -> ".join(cycle))


def test_the_registry_loads_no_family_until_asked():
    """Importing the registry imports no family module, and so not the scorer, style transfer or the studio;
    asking for one family imports that family only."""
    import subprocess
    import sys
    code = ("import sys, danqing.families as f\n"
            "heavy = ('danqing.metrics', 'danqing.style', 'danqing.studio', 'danqing.families.')\n"
            "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
            "f.spec('dcgan')\n"
            "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["[]", "['danqing.families.dcgan']"]
