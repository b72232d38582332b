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


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, tiny_model):
    """A hub cache holding a tiny OPT and a tiny Switch (random weights, the shipped tokenizer)."""
    from peakllm.models import load_tokenizer

    cache = tmp_path_factory.mktemp("hf") / "hub"
    tok = load_tokenizer("tiny-opt")
    cache_model(cache, "peakllm-test/tiny-opt", tiny_model("opt", vocab_size=len(tok)), tok)
    cache_model(cache, "peakllm-test/tiny-switch", tiny_model("switch", vocab_size=len(tok)), tok)
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
    assert got["cls"] == "SwitchTransformersForConditionalGeneration" and got["logits"] == [1, 8, 4096]


def test_a_repo_id_missing_from_the_cache_fails_fast_with_one_message(hub_cache):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache))
    out = subprocess.run([sys.executable, "-c", "from peakllm import models; models.load('peakllm-test/absent')"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "HubUnavailable" in out.stderr and "not in the local cache" in out.stderr
