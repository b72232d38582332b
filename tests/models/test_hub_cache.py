"""The Hub path proven offline: a Hugging Face hub cache with the real layout
(``models--org--name/refs/main`` and ``snapshots/<commit>/``), holding tiny models saved there under
test repo ids, read through exactly the code path a Hub id takes (``HF_HUB_OFFLINE=1``, a fresh
process so huggingface_hub and transformers read the cache location from the environment)."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_model(cache, repo_id, model, tokenizer):
    """Save ``model`` and ``tokenizer`` as the snapshot of ``repo_id`` in the hub cache ``cache``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    model.save_pretrained(snapshot)  # safetensors
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def run_offline(cache, code: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "home"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def cache_dataset_file(cache, repo_id, revision, filename, texts, field):
    """Write ``texts`` as ``filename`` (parquet, or gzipped JSON lines like C4's shards) into the
    hub cache's snapshot of the dataset repo ``repo_id`` at ``revision``."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    path = repo / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if filename.endswith(".parquet"):
        pq.write_table(pa.table({field: texts}), path)
    else:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps({field: t, "timestamp": "2019-04-25T12:57:54Z", "url": "u"}) + "\n" for t in texts)
    ref = repo / "refs" / revision  # "refs/convert/parquet" nests, as huggingface_hub writes it
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(COMMIT)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, tiny_model):
    """A hub cache holding a tiny OPT and a tiny Switch (random weights, the shipped tokenizer) and
    the evaluation / calibration files of wikitext2, ptb and c4 (shipped plays, in their layout)."""
    from peakllm.data import corpus, evaldata, spans
    from peakllm.models import load_tokenizer

    cache = tmp_path_factory.mktemp("hf") / "hub"
    tok = load_tokenizer("tiny-opt")
    cache_model(cache, "peakllm-test/tiny-opt", tiny_model("opt", vocab_size=len(tok)), tok)
    t5_like = spans.with_sentinels(load_tokenizer("tiny-opt"))  # like switch-base's T5 tokenizer: 100 sentinels
    cache_model(cache, "peakllm-test/tiny-switch", tiny_model("switch", vocab_size=len(t5_like)), t5_like)
    lines = [ln for ln in corpus.load_split("test").splitlines() if ln.strip()]
    docs = [" ".join(lines[i:i + 40]) for i in range(0, 2400, 40)]  # C4-like documents, a few hundred tokens
    for f in evaldata.HUB_FILES.values():
        texts = lines[:3000:3] if f.filename.endswith(".parquet") else docs
        cache_dataset_file(cache, f.repo, f.revision, f.filename, texts, f.field)
    return cache


def test_the_cache_has_the_hub_layout(hub_cache):
    snap = hub_cache / "models--peakllm-test--tiny-opt" / "snapshots" / COMMIT
    assert (snap / "config.json").exists() and (snap / "model.safetensors").exists()
    assert (hub_cache / "models--peakllm-test--tiny-opt" / "refs" / "main").read_text() == COMMIT


def test_a_repo_id_loads_from_the_cache_offline_and_evaluates(hub_cache):
    got = run_offline(hub_cache, """
import json
from peakllm import models
from peakllm.core import perplexity
from peakllm.data import evaldata
m, tok = models.load("peakllm-test/tiny-opt", device="cpu")
ids = evaldata.eval_ids("shakespeare", tok, 32)[:, : 32 * 8]
print(json.dumps({"kind": models.resolve("peakllm-test/tiny-opt")[0], "cls": type(m).__name__,
                  "ppl": perplexity.perplexity(m, ids, 32, progress=False), "vocab": len(tok)}))
""")
    assert got["kind"] == "hub" and got["cls"] == "OPTForCausalLM" and got["vocab"] == 4096 and 1 < got["ppl"] < 1e5


def test_an_encoder_decoder_repo_id_loads_as_seq2seq(hub_cache):
    got = run_offline(hub_cache, """
import json, torch
from peakllm import models
m = models.load_model("peakllm-test/tiny-switch", device="cpu")
x = torch.randint(0, 64, (1, 8))
out = m(input_ids=x, decoder_input_ids=x)
print(json.dumps({"cls": type(m).__name__, "logits": list(out.logits.shape)}))
""")
    assert got["cls"] == "SwitchTransformersForConditionalGeneration" and got["logits"] == [1, 8, 4096 + 100]  # + sentinels


def test_a_repo_id_missing_from_the_cache_fails_fast_with_one_message(hub_cache):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache))
    out = subprocess.run([sys.executable, "-c", "from peakllm import models; models.load('peakllm-test/absent')"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "HubUnavailable" in out.stderr and "not in the local cache" in out.stderr


def test_each_evaluation_and_calibration_loader_reads_the_cache_offline(hub_cache):
    got = run_offline(hub_cache, """
import json
from peakllm.data import evaldata
from peakllm.models import load_tokenizer
tok = load_tokenizer("peakllm-test/tiny-opt")
out = {d: list(evaldata.eval_ids(d, tok, 32).shape) for d in ["wikitext2", "ptb", "c4"]}
out["head"] = {d: evaldata.eval_text(d)[:40] for d in ["wikitext2", "ptb"]}
out["calib"] = list(evaldata.calibration("c4", tok, nsamples=4, seqlen=32, seed=0).shape)
print(json.dumps(out))
""")
    assert got["wikitext2"][1] > 1000 and got["ptb"][1] > 1000 and got["c4"] == [1, 256 * 32]
    assert "\n\n" in got["head"]["wikitext2"] and "\n" not in got["head"]["ptb"]  # the papers' joins
    assert got["calib"] == [4, 32]


@pytest.mark.slow
@pytest.mark.parametrize("stem,params", [
    ("00_orientation", dict(dataset="wikitext2", anatomy_seq_len=32, batch_size=4)),
    ("10_sparsegpt_one_layer", dict(calib_dataset="c4", calib_samples=8)),
    ("10_sparsegpt_one_shot_pruning", dict(eval_datasets=["wikitext2", "ptb", "c4"], calib_dataset="c4",
                                          calib_samples=8, sparsities=[0.5, 0.9])),
    ("20_qmoe_moe_compression", dict(model_name="peakllm-test/tiny-switch", calib_dataset="c4", eval_dataset="c4",
                                     seeds=[0], grid_bits=["ternary"], calib_samples=8, calib_seqlen=64,
                                     eval_seqlen=64, eval_windows=4)),
])
def test_notebook_runs_on_a_hub_id_from_the_cache_offline(hub_cache, monkeypatch, tmp_path, stem, params):
    """The notebook executed exactly as a practitioner would run it with a Hub id (papermill, the
    kernel inheriting HF_HUB_OFFLINE / HF_HUB_CACHE): it loads the model and the texts from the cache."""
    import papermill as pm

    from peakllm.cli.run import NOTEBOOKS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HOME", str(hub_cache.parent / "home"))
    results = tmp_path / "results.json"
    pm.execute_notebook(str(NOTEBOOKS / f"{stem}.ipynb"), str(tmp_path / f"{stem}.ipynb"), cwd=str(NOTEBOOKS),
                        kernel_name="python3", progress_bar=False,
                        parameters={"model_name": "peakllm-test/tiny-opt", **params, "device": "cpu",
                                    "results_path": str(results)})
    records = json.loads(results.read_text())
    scored = [r for r in records if r["metric"] in ("perplexity", "loss", "layer_error")]
    assert set(params.get("eval_datasets", [params.get("dataset", params.get("eval_dataset"))])) <= {r.get("dataset") for r in scored}
    assert scored and all(r["value"] == r["value"] for r in scored)  # no NaN
