"""The layering of the packages (import-linter contracts in pyproject.toml) and no import cycles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simulator", "policies", "hllm", "analysis")


def test_import_linter_contracts_hold():
    pytest.importorskip("importlinter")
    from importlinter.cli import lint_imports

    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    assert code == 0, "an import breaks the layering: run `lint-imports` for the offending chain"


def _cycles(adj: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in adj:
        if root in index:
            continue
        work = [(root, iter(sorted(adj[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(adj.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles_between_modules():
    """No file-level circle, lazy imports included (a cycle hides an upward dependency)."""
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(ROOT))
    g = grimp.build_graph(*PACKAGES, cache_dir=None)
    adj = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    assert _cycles(adj) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_probe_import_across_a_layer_breaks_the_contract(tmp_path):
    """The layers contract is no deny-list with holes: policies importing the engine fails it."""
    pytest.importorskip("importlinter")
    import shutil
    import subprocess

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "policies" / "base.py"
    base.write_text(base.read_text() + "\nfrom simulator.engine.assignment import assign  # noqa\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports; "
                          "raise SystemExit(lint_imports(no_cache=True))"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode != 0, res.stdout[-2000:]
    assert "policies.base -> simulator.engine.assignment" in res.stdout
