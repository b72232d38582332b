"""The notebook scaffold (peakllm.workbook.notebook): one call sets a notebook up, one records."""
import json

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from peakllm.cli.run import notebooks
from peakllm.workbook import notebook


def write_notebook(path, parameters: str, extra_cells=()):
    cell = new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[cell, *[new_code_cell(c) for c in extra_cells]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


PARAMS = '''model_name: str = "tiny-opt"  # the model
sparsity: float = 0.5  # share removed
methods: list = ["a", "b"]  # methods
steps: int = 3  # steps
flag: bool = False  # a switch
device: str = "cpu"  # where
seed: int = 0  # seed
results_path: str = ""  # records file
'''


@pytest.fixture
def nb_dir(tmp_path, monkeypatch):
    write_notebook(tmp_path / "99_demo.ipynb", PARAMS)
    monkeypatch.chdir(tmp_path)  # the scaffold looks beside the kernel first
    return tmp_path


def values(**overrides):
    ns = dict(model_name="tiny-opt", sparsity=0.5, methods=["a", "b"], steps=3, flag=False, device="cpu",
              seed=0, results_path="")
    return ns | overrides


def test_parameters_are_read_from_the_notebooks_own_cell(nb_dir):
    p = notebook.parameters("99_demo")
    assert list(p) == ["model_name", "sparsity", "methods", "steps", "flag", "device", "seed", "results_path"]
    assert p["methods"] == {"type": "list", "default": ["a", "b"], "help": "methods"}
    assert p["sparsity"]["type"] == "float" and p["steps"]["default"] == 3


def test_setup_records_every_parameter_and_normalizes_papermill_strings(nb_dir):
    ns = values(methods='["x", "y"]', sparsity=1, steps=4)
    rec, dev = notebook.setup("99_demo", ns)
    assert dev == torch.device("cpu")
    assert ns["methods"] == ["x", "y"] and isinstance(ns["sparsity"], float)
    # every declared parameter but results_path lands in the records: adding one cannot be forgotten
    assert rec.params == {k: ns[k] for k in ns if k != "results_path"}
    assert rec.notebook == "99_demo" and rec.device == "cpu"


def test_setup_seeds_every_generator(nb_dir):
    notebook.setup("99_demo", values(seed=7))
    a = torch.rand(3)
    notebook.setup("99_demo", values(seed=7))
    assert torch.equal(a, torch.rand(3))


@pytest.mark.parametrize("bad, message", [
    (dict(steps="3"), "steps='3' must be of type int"),
    (dict(steps=True), "steps=True must be of type int"),
    (dict(flag=1), "flag=1 must be of type bool"),
    (dict(sparsity="high"), "sparsity='high' must be of type float"),
    (dict(device="tpu"), "device='tpu' is not allowed"),
    (dict(model_name="no such model"), "model_name='no such model'"),
    (dict(seed=-1), "seed=-1 must be >= 0"),
])
def test_bad_values_fail_naming_the_parameter(nb_dir, bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        notebook.setup("99_demo", values(**bad))


def test_an_unknown_injected_parameter_fails_naming_the_closest_declared_one(nb_dir):
    ns = values(_ih=["", "model_name: str = 'tiny-opt'", "# Parameters\nsparsities = 1.5\n", "import peakllm"])
    with pytest.raises(ValueError, match=r"unknown parameter 'sparsities' for 99_demo; did you mean 'sparsity'\?"):
        notebook.setup("99_demo", ns)
    ns = values(_ih=["# Parameters\nzzz = 1\n"])
    with pytest.raises(ValueError, match=r"unknown parameter 'zzz' for 99_demo \(declared: device, flag,"):
        notebook.setup("99_demo", ns)
    notebook.setup("99_demo", values(_ih=["# Parameters\nsparsity = 0.7\nresults_path = 'x.json'\n"]))


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_every_notebook_refuses_a_misspelt_parameter(path):
    declared = notebook.parameters(path.stem)
    name = next(n for n in declared if n not in ("device", "seed", "results_path"))
    wrong = name[:-1] if name.endswith("s") else name + "s"  # the plural/singular slip
    with pytest.raises(ValueError, match=rf"unknown parameter '{wrong}' for {path.stem}; did you mean '{name}'"):
        notebook.check_known([wrong], declared, path.stem)


@pytest.mark.slow
def test_papermill_with_an_unknown_parameter_stops_at_the_setup_cell(tmp_path):
    """The issue's command: notebook 10 with ``-p sparsity 1.5`` (its parameter is ``sparsities``)
    fails in the scaffold's cell, before anything heavy runs."""
    import papermill

    from peakllm.cli.run import NOTEBOOKS

    out = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter 'sparsity'.*did you mean 'sparsities'"):
        papermill.execute_notebook(str(NOTEBOOKS / "10_sparsegpt_one_shot_pruning.ipynb"), str(out),
                                   parameters={"sparsity": 1.5}, cwd=str(NOTEBOOKS), kernel_name="python3",
                                   progress_bar=False)
    code = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    failed = next(i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.outputs))
    assert "peakllm.setup(" in code[failed].source
    assert all(c.execution_count is None for c in code[failed + 1:])


def test_an_undefined_parameter_says_run_the_parameters_cell(nb_dir):
    ns = values()
    del ns["steps"]
    with pytest.raises(NameError, match=r"\['steps'\].*run the parameters cell"):
        notebook.setup("99_demo", ns)


def test_dataset_parameters_are_checked_by_name(tmp_path, monkeypatch):
    write_notebook(tmp_path / "98_data.ipynb", 'eval_datasets: list = ["shakespeare"]  # texts\n'
                                               'calib_dataset: str = "shakespeare"  # calibration\n')
    monkeypatch.chdir(tmp_path)
    notebook.setup("98_data", {"eval_datasets": "shakespeare,ptb", "calib_dataset": "c4"})
    with pytest.raises(ValueError, match="not allowed"):
        notebook.setup("98_data", {"eval_datasets": ["wikitext3"], "calib_dataset": "shakespeare"})
    with pytest.raises(ValueError, match="calib_dataset='ptb' is not allowed"):
        notebook.setup("98_data", {"eval_datasets": [], "calib_dataset": "ptb"})


def test_an_unannotated_parameter_is_refused(tmp_path, monkeypatch):
    write_notebook(tmp_path / "97_bad.ipynb", "steps = 3  # no type\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="steps needs a type annotation"):
        notebook.parameters("97_bad")


def test_every_shipped_notebook_declares_typed_parameters_with_help():
    for path in notebooks():
        for name, p in notebook.parameters(path.stem).items():
            assert p["help"], f"{path.name}: parameter {name} has no # help comment"
            assert notebook.coerce(name, p["default"], p["type"]) == p["default"]


def test_finish_writes_records_and_shows_them(tmp_path, capsys):
    from peakllm.core.records import Recorder

    rec = Recorder("99_demo", {"seed": 0}, device="cpu")
    rec.add("loss", 1.5, "nats", method="dense")
    rec.add("loss", 1.7, "nats", method="rtn")
    rec.add("bytes", 8, "B", part="weights")
    assert notebook.finish(rec, str(tmp_path / "r.json")) is None
    out = capsys.readouterr().out
    assert "3 records written" in out and "loss (2), bytes (1)" in out and "peak RSS of this kernel" in out
    assert json.loads((tmp_path / "r.json").read_text())[0]["value"] == 1.5


def test_source_cuts_before_the_marker():
    from peakllm.models.pretraining import PretrainConfig

    full = notebook.source(PretrainConfig)
    cut = notebook.source(PretrainConfig, until="    def check")
    assert cut.startswith("@dataclass") and "def check" in full and "def check" not in cut
