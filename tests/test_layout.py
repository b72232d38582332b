"""The house: subpackages by role, no import cycle, modules readable in one sitting, one API."""
import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

import peakllm

LIB = Path(peakllm.__file__).parent


def imports_of(path: Path, module: str) -> set[str]:
    """Modules of peakllm that ``module`` imports (top level and inside functions)."""
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if (LIB.parent / (sub.replace(".", "/") + ".py")).exists()
                        or (LIB.parent / sub.replace(".", "/")).is_dir() else target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("peakllm"):
            out.add(node.module)
    return out - {module}


def modules() -> dict[str, Path]:
    found = {}
    for path in LIB.rglob("*.py"):
        parts = path.relative_to(LIB.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def test_no_import_cycle():
    mods = modules()
    graph = {m: {d for d in imports_of(p, m) if d in mods} for m, p in mods.items()}
    state, path, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for d in graph[m]:
            if state.get(d) == "open":
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d)
        path.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# The order imports follow: a subpackage imports only from those of a lower rank (or its own).
# compat (version shims) and core (measuring) sit at the bottom; the data, then what a model is;
# the algorithms (compress, train, infer) side by side, none importing another; the notebooks'
# helpers (workbook) above them, and the command-line tooling (cli) on top.
RANK = {"compat": 0, "core": 0, "data": 1, "models": 2, "compress": 3, "train": 3, "infer": 3,
        "workbook": 4,  # what notebooks import at run time
        "cli": 5,       # the tooling behind python -m peakllm
        "__main__": 6}


def against_the_grain(mods: dict) -> list[str]:
    """Imports from one subpackage of peakllm into another of the same or a higher rank."""
    bad = []
    for m, p in mods.items():
        sub = m.split(".")[1] if m.count(".") else None
        for d in imports_of(p, m):
            dsub = d.split(".")[1] if d.count(".") and d.startswith("peakllm.") else None
            if sub is None or dsub is None or dsub == sub:
                continue
            if RANK[dsub] >= RANK[sub]:
                bad.append(f"{m} -> {d}")
    return sorted(bad)


def test_imports_point_one_way():
    mods = modules()
    assert {m.split(".")[1] for m in mods if m.count(".")} <= set(RANK), "a new subpackage needs a rank"
    assert against_the_grain(mods) == []


def test_the_order_check_catches_an_import_against_the_grain(tmp_path):
    data = tmp_path / "evaldata.py"
    data.write_text("from ..models.loading import hub_reachable\nfrom ..core.checks import choice\n")
    train = tmp_path / "distributed.py"
    train.write_text("from ..compress.sequential import find_stacks\n")
    assert against_the_grain({"peakllm.data.evaldata": data, "peakllm.train.distributed": train}) == [
        "peakllm.data.evaldata -> peakllm.models.loading", "peakllm.train.distributed -> peakllm.compress.sequential"]


def test_the_core_depends_on_no_other_subpackage():
    mods = modules()
    for m, p in mods.items():
        if m.startswith("peakllm.core"):
            others = {d for d in imports_of(p, m) if d.startswith("peakllm.") and not d.startswith("peakllm.core")}
            assert not others, f"{m} imports {others}: the measuring core must not depend on the rest"


def test_no_module_over_400_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_subpackages_by_role():
    assert {p.name for p in LIB.iterdir() if (p / "__init__.py").exists()} == {
        "core", "data", "models", "compress", "train", "infer", "workbook", "cli"}


def test_every_module_imports_and_the_api_resolves():
    for m in pkgutil.walk_packages(peakllm.__path__, "peakllm."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    assert callable(peakllm.prune) and callable(peakllm.quantize) and callable(peakllm.qmoe_compress)
    assert callable(peakllm.setup) and callable(peakllm.finish) and callable(peakllm.load)
    assert peakllm.compress.__name__ == "peakllm.compress"
    with pytest.raises(AttributeError):
        peakllm.no_such_name  # noqa: B018  (the attribute access is the test)


def test_peakllm_imports_without_the_unix_only_resource_module(monkeypatch):
    """Windows has no ``resource``: importing peakllm (and measuring peak memory) still works."""
    import psutil  # noqa: F401  (psutil itself imports resource on Linux: load it first)

    monkeypatch.setitem(sys.modules, "resource", None)  # import resource -> ImportError
    for name in [m for m in sys.modules if m.startswith("peakllm")]:
        monkeypatch.delitem(sys.modules, name)
    memory = importlib.import_module("peakllm.core.memory")
    assert memory.peak_rss() > 0


def test_the_tracked_tree_travels_to_a_gpu_machine():
    """A device check carries the tracked tree plus its wheels (about 13 MB) within 64 MiB, so the
    tree itself stays at most 48 MiB (checkpoints in half precision, the corpus compact)."""
    import shutil
    import subprocess

    repo = LIB.parents[1]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout: the tracked tree is git's list")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout
    size = sum((repo / f).stat().st_size for f in files.decode().split("\0") if f and (repo / f).is_file())
    assert size <= 48 * 2 ** 20, f"the tracked tree is {size / 2 ** 20:.1f} MiB, over 48 MiB"


def test_a_learner_opens_a_folder_of_notebooks_without_a_news_prompt():
    import json

    root = Path(peakllm.__file__).resolve().parents[2]
    shipped = sorted(p.name for p in (root / "notebooks").iterdir() if p.is_file() and not p.name.startswith("."))
    assert shipped and all(n.endswith(".ipynb") for n in shipped), f"notebooks/ holds more than notebooks: {shipped}"
    overrides = json.loads((root / "binder" / "overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    for installer in ("binder/postBuild", "Makefile"):  # Binder and make interactive both install it
        assert "binder/overrides.json" in (root / installer).read_text(), installer


def test_no_private_name_crosses_a_module():
    """What one module of peakllm imports from another is public: no leading underscore."""
    crossing = []
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("peakllm")):
                crossing += [f"{path.relative_to(LIB)}: {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
    assert not crossing, crossing


def test_notebooks_import_no_tooling():
    """What a notebook imports at run time is the notebooks' helpers (``peakllm.workbook``) and the
    algorithm subpackages, never the command-line tooling (``peakllm.cli``)."""
    import re

    root = LIB.parents[1]
    tooling = {p.name: re.findall(r"^\s*(?:from|import) (peakllm\.cli\b[\w.]*)", p.read_text(), re.M)
               for p in sorted((root / "paired").glob("*.py"))}
    assert tooling and not {k: v for k, v in tooling.items() if v}, tooling
