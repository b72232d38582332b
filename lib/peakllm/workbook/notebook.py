"""The notebook scaffold: one call sets a notebook up, one records it, one shows library code.

Every notebook starts with a cell tagged ``parameters`` of plain literals, each annotated with
its type and followed by a ``# help`` comment (what ``papermill --help-notebook`` prints). Then

    rec, dev = peakllm.setup("10_sparsegpt_one_shot_pruning", globals())

reads those names and types from the notebook's own parameters cell (papermill's inspection),
checks every value (a papermill string becomes a list; a wrong type, an unknown model, device
or dataset fails here, naming the parameter, before anything heavy loads), writes the checked
values back, seeds every generator, resolves the device (cuda -> mps -> cpu) and returns the
recorder holding every parameter. The notebook's last cell is

    peakllm.finish(rec, results_path)

and ``show_source(obj)`` prints a piece of the library, highlighted, where the text teaches it.
"""
from __future__ import annotations

import ast
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
    from .run import NOTEBOOKS

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


def finish(rec, results_path: str = ""):
    """The last cell: write the records (when ``results_path`` is set), report the kernel's
    peak memory, and show the records as a table."""
    from ..core.memory import peak_rss
    from ..core.units import human

    print(rec.save(results_path))
    print(f"peak RSS of this kernel: {human(peak_rss())}")
    return rec.table()


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
