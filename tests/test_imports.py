"""The house's rules, read from the source of ``maxsq_lib/``, ``maxsq_prep/`` and ``benchmarks/``:
the core never imports the course's tooling, the data generators stand below the course, the
benchmarks use public names only, and imports run in one direction (no cycles), lazy imports
inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "maxsq_lib"
SCANNED = ("maxsq_lib", "maxsq_prep", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for folder in SCANNED for p in (PACKAGE.parent / folder).rglob("*.py")}


def _private_names(source_text: str, package: str) -> list[str]:
    """``module.name`` of each underscore name a module's source imports."""
    hidden = []
    for node in ast.walk(ast.parse(source_text)):
        if isinstance(node, ast.ImportFrom):
            source = (".".join(package.split(".")[: len(package.split(".")) - (node.level - 1)]
                               + ([node.module] if node.module else [])) if node.level else node.module)
            hidden += [f"{source}.{a.name}" for a in node.names
                       if a.name.startswith("_") and not a.name.startswith("__")]
    return hidden


def private_imports() -> dict[str, list[str]]:
    """Module -> the underscore names it imports from other modules."""
    out = {}
    for name, path in _modules().items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        hidden = _private_names(path.read_text(), package)
        if hidden:
            out[name] = hidden
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (top level and inside functions)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.add(sub if sub in modules else source)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


FRONT_DOOR = {"maxsq_lib.cli", "maxsq_lib.__main__"}
"""The command line dispatches to both rooms (``maxsq course``, ``maxsq figures``); it is the one
core module that may import the course, lazily, and nothing in the course imports it."""


def test_the_graph_is_read():
    graph = import_graph()
    assert "maxsq_lib.engine.build" in graph["maxsq_lib.engine.trainer"]
    assert "maxsq_prep.minicity" in graph["maxsq_prep.calibrate_shift"]
    assert "maxsq_lib.engine.trainer" in graph["benchmarks.bench_train_step"]
    assert _private_names("from maxsq_lib.engine.trainer import _train_step, plan_for\n"
                          "def f():\n    from .x import _y\n", "benchmarks") == [
        "maxsq_lib.engine.trainer._train_step", "benchmarks.x._y"]
    assert "maxsq_lib.course.notebook" in graph["maxsq_lib.course"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_the_core_never_imports_the_course():
    graph = import_graph()
    offenders = {m: sorted(t for t in targets if t.startswith("maxsq_lib.course"))
                 for m, targets in graph.items()
                 if not m.startswith("maxsq_lib.course") and m not in FRONT_DOOR}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_data_generators_stand_below_the_course():
    graph = import_graph()
    assert {m: sorted(t) for m, t in graph.items() if m.startswith("maxsq_prep")
            and any(x.startswith(("maxsq_lib.course", "maxsq_lib.cli")) for x in t)} == {}
    # only the command line and the course's runner call the generators
    assert {m for m, t in graph.items() if m.startswith("maxsq_lib") and any(x.startswith("maxsq_prep") for x in t)
            } <= {"maxsq_lib.cli", "maxsq_lib.course.runner"}


def test_benchmarks_use_public_names_and_nothing_imports_them():
    private = private_imports()
    assert {m: names for m, names in private.items() if m.startswith("benchmarks")} == {}
    graph = import_graph()
    assert {m for m, t in graph.items() if not m.startswith("benchmarks")
            and any(x.startswith("benchmarks") for x in t)} == set()


def test_no_import_cycles_anywhere():
    assert _cycles(import_graph()) == []


def test_the_course_never_imports_the_command_line():
    graph = import_graph()
    assert {m for m, t in graph.items() if m.startswith("maxsq_lib.course") and t & FRONT_DOOR} == set()


def test_importing_changes_nothing_in_the_process():
    """No environment variable, matplotlib backend or working folder is set by an import: that is
    the entry points' business (Makefile, .ci/run, the CLI's main, the notebooks' first cell)."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import importlib, json, os, pkgutil, sys\n"
        "before = (dict(os.environ), os.getcwd())\n"
        "import maxsq_lib\n"
        "for m in pkgutil.walk_packages(maxsq_lib.__path__, 'maxsq_lib.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "import matplotlib\n"
        "print(json.dumps({'env': dict(os.environ) == before[0], 'cwd': os.getcwd() == before[1],\n"
        "                  'backend_forced': matplotlib.rcParams._get_backend_or_none() is not None}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MPLBACKEND")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=PACKAGE.parent, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"env": True, "cwd": True, "backend_forced": False}
