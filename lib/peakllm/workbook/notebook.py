"""The notebook scaffold: one call sets a notebook up, one records it, one shows library code.

Every notebook starts with a cell tagged ``parameters`` of plain literals, each annotated with
its type and followed by a ``# help`` comment (what ``papermill --help-notebook`` prints). Then

    rec, dev = peakllm.setup("10_sparsegpt_one_shot_pruning", globals())

reads those names and types from the notebook's own parameters cell (papermill's inspection),
refuses a name papermill injected that the cell does not declare (``-p sparsity 1.5`` where the
notebook has ``sparsities``: "unknown parameter 'sparsity'; did you mean 'sparsities'?"), checks every value (a papermill string becomes a list; a wrong type, an unknown model, device
or dataset fails here, naming the parameter, before anything heavy loads), writes the checked
values back, seeds every generator, resolves the device (cuda -> mps -> cpu) and returns the
recorder holding every parameter. The notebook's last cell is

    peakllm.finish(rec, results_path)

(it writes the records and counts them), and ``show_source(obj)`` prints a piece of the library, highlighted, where the text teaches it.
"""
from __future__ import annotations

import ast
import difflib
import functools
from pathlib import Path

from ..core.checks import as_list, choice

TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list, tuple, str)}


@functools.lru_cache(maxsize=32)
def _inspect(path: str, mtime: float) -> dict:
    import papermill

    return papermill.inspect_notebook(path)


def notebook_path(notebook: str) -> Path:
    """The notebook file: beside the kernel (a copy being run) or among the shipped notebooks."""
    from ..core.paths import NOTEBOOKS

    name = Path(notebook).stem + ".ipynb"
    for path in (Path.cwd() / name, NOTEBOOKS / name):
        if path.exists():
            return path
    raise FileNotFoundError(f"notebook={notebook!r}: no {name} here or in notebooks/")


def parameters(notebook: str) -> dict[str, dict]:
    """``{name: {"type": "int", "default": ..., "help": ...}}`` from the cell tagged ``parameters``."""
    path = notebook_path(notebook)
    found = _inspect(str(path), path.stat().st_mtime)
    if not found:
        raise ValueError(f"{path.name} has no cell tagged 'parameters'")
    out = {}
    for name, p in found.items():
        if p["inferred_type_name"] not in TYPES:
            raise ValueError(f"{path.name}: parameter {name} needs a type annotation, one of {list(TYPES)}")
        out[name] = {"type": p["inferred_type_name"], "default": ast.literal_eval(p["default"]), "help": p["help"]}
    return out


def check_known(given, declared, where: str) -> None:
    """ValueError naming the first of ``given`` that ``declared`` lacks, and the closest declared name.

    The one check behind the notebooks (``setup``), the sweep files and ``python -m peakllm run -p``."""
    known = [n for n in declared if n != "results_path"] + ["results_path"]
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown parameter {name!r} for {where}{hint} "
                             f"(declared: {', '.join(sorted(known))})")


def injected(ns: dict) -> list[str]:
    """The names papermill injected into this kernel: its cell starts with ``# Parameters`` and is
    found in IPython's input history (``_ih``); [] when the notebook was not run by papermill."""
    for src in reversed(list(ns.get("_ih") or [])):
        if isinstance(src, str) and src.lstrip().startswith("# Parameters"):
            try:
                body = ast.parse(src).body
            except SyntaxError:
                return []
            return [t.id for node in body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
    return []


def coerce(name: str, value, declared: str):
    """``value`` as the parameters cell declares it, or ValueError naming the parameter.

    papermill's ``-p`` gives lists as strings ('["a","b"]' or 'a,b') and numbers where a string
    was declared (``-p bits 2``); both are accepted. An int is a valid float; a bool is not an int.
    """
    if declared == "list":
        return as_list(name, value)
    if declared == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if declared == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, TYPES[declared]) or (declared in ("int", "float") and isinstance(value, bool)):
        raise ValueError(f"{name}={value!r} must be of type {declared}")
    return value


def _check_common(ns: dict) -> None:
    """Checks of the parameters every notebook shares, by name."""
    from ..data import evaldata
    from ..models import resolve

    if "model_name" in ns:
        resolve(ns["model_name"])
    for key in ("dataset", "eval_datasets"):
        for d in ([ns[key]] if isinstance(ns.get(key), str) else ns.get(key) or []):
            evaldata.check_dataset(d)
    if "calib_dataset" in ns:
        choice("calib_dataset", ns["calib_dataset"], evaldata.CALIBRATION_DATASETS)
    if "seed" in ns and ns["seed"] < 0:
        raise ValueError(f"seed={ns['seed']!r} must be >= 0")


def setup(notebook: str, ns: dict):
    """Check the notebook's parameters in ``ns`` (its ``globals()``), seed, pick the device.

    Returns ``(rec, dev)``: a ``Recorder`` named after the notebook holding every parameter
    (except ``results_path``), and the resolved ``torch.device``.
    """
    import pandas as pd

    from .. import seed_everything
    from ..core.hardware import configure, resolve_device
    from ..core.records import Recorder

    declared = parameters(notebook)
    check_known(injected(ns), declared, Path(notebook).stem)
    missing = [n for n in declared if n not in ns]
    if missing:
        raise NameError(f"parameters {missing} are not defined: run the parameters cell first")
    for name, p in declared.items():
        ns[name] = coerce(name, ns[name], p["type"])
    _check_common(ns)
    dev = resolve_device(ns.get("device", "auto"))
    configure(dev)
    seed_everything(ns.get("seed", 0))
    pd.set_option("display.width", 140)
    params = {n: ns[n] for n in declared if n != "results_path"}
    return Recorder(Path(notebook).stem, params, device=dev.type), dev


def on_defaults(notebook: str, params: dict) -> bool:
    """True when ``params`` (a run's recorded parameters) are the notebook's declared defaults;
    False for a notebook that cannot be found (nothing to compare with)."""
    try:
        declared = parameters(notebook)
    except FileNotFoundError:
        return False
    return all(params.get(n) == coerce(n, p["default"], p["type"])
               for n, p in declared.items() if n != "results_path")


def finish(rec, results_path: str = "") -> None:
    """The last cell: write the records (when ``results_path`` is set), say what they hold (a
    count per metric; ``rec.table()`` shows them all) and the kernel's peak memory.

    Under the tests (``$PEAKLLM_CHECK_LESSONS`` set) a run on the default parameters must still
    show its lesson (``peakllm.workbook.lessons``): a failure raises here, naming the figure.
    ``$PEAKLLM_RESULTS_DIR``, when set, receives a copy of the records (``<notebook>.results.json``).
    """
    import os
    from collections import Counter

    from ..core.memory import peak_rss
    from ..core.units import human

    print(rec.save(results_path))
    counts = Counter(r["metric"] for r in rec.records)
    print("  " + ", ".join(f"{m} ({n})" for m, n in counts.items()))
    if os.environ.get("PEAKLLM_RESULTS_DIR"):
        rec.save(str(Path(os.environ["PEAKLLM_RESULTS_DIR"]) / f"{rec.notebook}.results.json"))
    if os.environ.get("PEAKLLM_CHECK_LESSONS") and on_defaults(rec.notebook, rec.params):
        from .lessons import assert_lessons

        assert_lessons(rec.notebook, rec.records)
    print(f"peak RSS of this kernel: {human(peak_rss())}")


def say(text: str):
    """Display ``text`` as Markdown: the sentences of a notebook that quote this run's figures.

    A Markdown cell cannot hold a measured number (a rerun with other parameters, another model
    or another machine would leave it stale), so such sentences are built in a code cell from the
    run's records and variables, e.g. ``say(f"SparseGPT: {rec.value('perplexity', ...):.2f}")``.
    """
    from IPython.display import Markdown, display

    display(Markdown(text))


def show_doc(obj, start: str | None = None, stop: str | None = None):
    """Display ``obj``'s docstring as Markdown (the part from ``start`` up to ``stop`` when given):
    reStructuredText's ``code`` becomes Markdown's `code`, indented blocks stay code blocks."""
    import inspect
    import re

    text = inspect.getdoc(obj) or ""
    if start:
        text = text.split(start, 1)[1]
    if stop:
        text = text.split(stop, 1)[0]
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    say(text.replace("::\n", ":\n"))


def source(obj, until: str | None = None) -> str:
    """The source of a library function, class or module, cut before the first line that
    starts with ``until`` (e.g. "    def check") when given."""
    import inspect

    src = inspect.getsource(obj)
    if until is not None and until in src:
        src = src[: src.index(until)].rstrip() + "\n"
    return src


def show_source(obj, until: str | None = None):
    """Display library source, highlighted (a Markdown code block: rendered by Jupyter, plain
    text in a terminal)."""
    from IPython.display import Markdown, display

    display(Markdown(f"```python\n{source(obj, until)}```"))
