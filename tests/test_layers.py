"""The house's shape, checked: imports point one way (no cycle, counting imports inside functions), the config
package is a leaf (nothing of EdgeRLHF above it, no torch), the leaves import nothing of EdgeRLHF, and no source
file outgrows 500 lines (the online engine's step loop 350)."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "edgerlhf"


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Every edgerlhf module -> the edgerlhf modules it imports anywhere (top level or inside a function)."""
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in mods and t != name and t != "edgerlhf":
                    deps.add(t)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_counting_imports_inside_functions():
    assert _cycles(_graph()) == []


def test_the_config_package_is_a_leaf_and_the_leaves_import_nothing_of_edgerlhf():
    graph = _graph()
    leaves = {"edgerlhf.presets", "edgerlhf.runfolder", "edgerlhf.distributed"}
    for leaf in leaves:
        assert graph[leaf] == set(), (leaf, graph[leaf])
    for mod, deps in graph.items():
        if mod.startswith("edgerlhf.config"):
            outside = {d for d in deps if not d.startswith("edgerlhf.config")}
            assert outside <= {"edgerlhf.presets", "edgerlhf.runfolder"}, (mod, outside)
    # and no torch: a config check stays cheap
    code = "import sys, edgerlhf.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_source_file_over_500_lines_and_the_step_loop_under_350():
    sizes = {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 500} == {}
    assert sizes["edgerlhf/stages/online/engine.py"] < 350
