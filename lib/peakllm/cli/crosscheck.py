"""Our SparseGPT and GPTQ beside the production library, llm-compressor: the protocol (``make crosscheck``).

llm-compressor (``SparseGPTModifier``, ``GPTQModifier``; the path to vLLM) pins a transformers
older than the workbook's, so it runs in a second environment, ``.venv-crosscheck``
(``requirements/crosscheck.txt``): ``tools/crosscheck_llmcompressor.py`` compresses ``tiny-opt``
there on *our* calibration windows and saves the compressed weights; ``tools/crosscheck.py``
runs ours here on the same windows and measures both with the same code. This module holds
what both sides and the notebooks share:

* the protocol (``PROTOCOL``, ``METHODS``): notebook 10.2's calibration windows (128 random windows
  of the model's context from the shipped train split, one set per calibration seed) and its
  evaluation windows (the first 64 of the test split);
* the measures: mask agreement (share of weights both call zero, or both keep), grid agreement
  (GPTQ: share of weights on the same level of the row's 4-bit grid), per-layer relative
  output error ||(W - Ŵ) X|| / ||W X|| on the dense model's calibration inputs X (SparseGPT
  section 3's objective, through ``obs.layer_error``) and relative weight change
  ||W - Ŵ||_F / ||W||_F;
* the gap rule (``gap_check``): on the same windows, each seed's perplexity gap between the
  libraries against two standard deviations of ours over the seeds; and the noise floor any
  two exact implementations share -- the same windows in another order (``reorder``) change
  every Hessian's summation order, and the discrete mask and grid choices amplify it block by
  block;
* the results file, ``data/results/crosscheck/results.json`` (committed), which
  ``peakllm.workbook.crosscheck`` reads into the notebooks' "production library" rows.

``make crosscheck-minilm`` does the same for notebook 13's all-MiniLM-L6-v2 (``MINILM``): its padded
calibration lines, its scores (1 - cos, recall@1: ``embedding_scores``), and the one difference padded
lines add: our driver folds only real tokens into each Hessian, llm-compressor's hooks every position
(``unpad``: the same lines without padding, for the run that measures it).
"""
from __future__ import annotations

import hashlib

import torch

from ..workbook.crosscheck import METHODS, MINILM_METHODS

PROTOCOL = dict(model="tiny-opt", calib_dataset="shakespeare", calib_samples=128, eval_dataset="shakespeare",
                eval_windows=64, seeds=[0, 1, 2], blocksize=128, percdamp=0.01)
DIGITS = 4  # perplexities kept to 4 decimals: the two libraries differ by hundredths on tiny-opt
REORDERED = "same settings, windows in another shuffled order"  # the variant measuring summation-order noise
HEAD = "lm_head"  # the key of the output embedding in saved weights, where a run compressed it too

# notebook 13's defaults: calibration lines per seed, seeds, held-out lines (the test split's first
# 512 of at least five words), each line truncated to 128 tokens, as the notebook's own calls do
MINILM = dict(model="minilm", calib_samples=128, seeds=[0, 1, 2], eval_lines=512, max_length=128, batch_size=8,
              blocksize=128, percdamp=0.01)
UNPADDED = "unpadded lines, batch 1 (its hooks see no padding)"  # the MiniLM run that isolates padding


def check_method(name: str) -> dict:
    every = METHODS | MINILM_METHODS
    if name not in every:
        raise ValueError(f"method={name!r} is not cross-checked; choose one of {list(every)}")
    return every[name]


def solver(spec: dict) -> str:
    """``"sparsegpt"`` or ``"gptq"``: which algorithm a method of ``METHODS`` / ``MINILM_METHODS`` runs."""
    return "sparsegpt" if "pattern" in spec else "gptq"


# ---- the shared protocol ---------------------------------------------------------------------

def calibration_sets(tokenizer, ctx: int, seeds=None, samples: int | None = None) -> dict:
    """{seed: (samples, ctx) token windows}: notebook 10.2's calibration sets, drawn the same way."""
    from ..data import evaldata

    seeds = PROTOCOL["seeds"] if seeds is None else seeds
    samples = samples or PROTOCOL["calib_samples"]
    return {s: evaldata.calibration(PROTOCOL["calib_dataset"], tokenizer, samples, ctx, seed=s) for s in seeds}


def eval_texts(tokenizer, ctx: int, windows: int | None = None) -> tuple[dict, str]:
    """({dataset: (1, windows * ctx) ids}, scope): notebook 10.2's evaluation windows."""
    from ..data import evaldata

    d = PROTOCOL["eval_dataset"]
    ids = evaldata.eval_ids(d, tokenizer, ctx)
    total = ids.numel() // ctx
    n = min(windows or PROTOCOL["eval_windows"], total)
    return {d: ids[:, : n * ctx]}, f"{d}: first {n} of {total} test windows"


def digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's values (int64 / fp32, row-major): proves both sides read the same windows."""
    t = t.detach().cpu().contiguous()
    t = t.long() if not t.is_floating_point() else t.float()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def linear_weights(model) -> dict[str, torch.Tensor]:
    """{name: weight (out, in), fp32 copy} of every linear layer the compressors touch: the blocks', not the head."""
    from ..models.structure import all_linear_layers

    return {n: m.weight.detach().float().cpu().clone() for n, m in all_linear_layers(model).items()}


@torch.no_grad()
def input_hessians(model, calib, batch_size: int = 8, padding: bool = False) -> dict:
    """{layer: H = 2 X Xᵀ / n} of each linear layer's inputs X when the *dense* model reads ``calib``:
    token windows (n, seqlen), or padded lines (a dict with ``attention_mask``), of which X holds
    the real tokens as our driver takes them -- or, ``padding=True``, every position, as
    llm-compressor's hooks take them."""
    from ..compress.obs import Hessian
    from ..compress.sequential import ValidTokens, forward_calibration
    from ..models.structure import all_linear_layers

    layers = all_linear_layers(model)
    acc = {n: Hessian(m.weight.shape[1], device=m.weight.device) for n, m in layers.items()}
    valid = None if padding or torch.is_tensor(calib) else ValidTokens()
    keep = (lambda x: x) if valid is None else valid.tokens  # (b, t, d) -> (real tokens, d)
    hooks = [m.register_forward_hook(lambda mod, inp, out, h=acc[n]: h.add_batch(keep(inp[0])))
             for n, m in layers.items()]
    forward_calibration(model, calib, hooks, batch_size, valid=valid)
    return {n: h.H for n, h in acc.items()}


@torch.no_grad()
def solve(W: torch.Tensor, H: torch.Tensor, spec: dict, blocksize: int, percdamp: float) -> torch.Tensor:
    """Our solver alone (SparseGPT or GPTQ, as ``spec`` asks) on ``W`` (out, in) with the given ``H`` (in, in)."""
    from ..compress.gptq import GPTQ
    from ..compress.pruning import parse_pattern
    from ..compress.sparsegpt import SparseGPT

    layer = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    layer.weight.copy_(W)
    c = (SparseGPT if solver(spec) == "sparsegpt" else GPTQ)(layer)
    c.H = H.clone()
    if solver(spec) == "sparsegpt":
        c.prune(spec["sparsity"], *parse_pattern(spec["pattern"]), blocksize, percdamp)
    else:  # the returned mask of a quantizing sweep is all False
        c.quantize(spec["bits"], blocksize, percdamp)
    return layer.weight.detach().clone()


# ---- MiniLM (notebook 13): padded lines and embedding scores ---------------------------------

def minilm_calibration(tokenizer, seeds=None, samples: int | None = None) -> dict:
    """{seed: {"input_ids": (samples, T), "attention_mask": (samples, T)}}: notebook 13's calibration
    lines (``evaldata.calibration_lines``: random train lines, padded to the longest, truncated to
    128 tokens), the two tensors its driver passes to the model (BERT's token types stay 0)."""
    from ..data import evaldata

    seeds = MINILM["seeds"] if seeds is None else seeds
    samples = samples or MINILM["calib_samples"]
    out = {}
    for s in seeds:
        enc = evaldata.calibration_lines(tokenizer, samples, seed=s, max_length=MINILM["max_length"])
        out[s] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    return out


def minilm_eval_lines(n: int | None = None) -> list[str]:
    """Notebook 13's held-out lines: the first ``n`` (512) lines of the test split with five words or more."""
    from ..data import evaldata

    return evaldata.lines("test", n=n or MINILM["eval_lines"])


def lines_digest(calib: dict) -> str:
    """sha256 of padded lines: their ids and attention mask together, (2, n, T) int64."""
    return digest(torch.stack([calib["input_ids"].long(), calib["attention_mask"].long()]))


def text_digest(texts: list[str]) -> str:
    """sha256 of a list of lines (joined by newlines, UTF-8)."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def unpad(calib: dict) -> list[list[int]]:
    """Each padded line's real tokens (attention mask 1), as a list of ids: the same lines with
    no padding left to enter a Hessian. Raises if a line's mask is not ones then zeros (right padding)."""
    out = []
    for ids, m in zip(calib["input_ids"], calib["attention_mask"]):
        k = int(m.sum())
        if not bool(m[:k].all()) or bool(m[k:].any()):
            raise ValueError("unpad: a line's attention mask is not ones followed by zeros (right padding only)")
        out.append(ids[:k].tolist())
    return out


def padding_share(calib: dict) -> float:
    """Share of the positions of padded lines that are padding (attention mask 0)."""
    return 1 - calib["attention_mask"].float().mean().item()


def embedding_scores(dense_emb: torch.Tensor, emb: torch.Tensor) -> dict:
    """Notebook 13's two scores of a compressed encoder's embeddings ``emb`` (N, D) against the dense
    model's ``dense_emb`` (N, D), the same lines: ``1 - cos`` (mean over lines; 0 = unchanged) and
    ``recall@1`` (share of lines whose nearest other line is the dense model's; 1 = unchanged)."""
    from ..core import embeddings

    return {"1 - cos": 1 - embeddings.cosine_to(dense_emb, emb)[1],
            "recall@1": embeddings.neighbour_agreement(dense_emb, emb)}


# ---- measures --------------------------------------------------------------------------------

def layer_errors(dense: dict, compressed: dict, hessians: dict) -> dict:
    """{layer: {"output": ||(W-Ŵ)X|| / ||WX||, "weight": ||W-Ŵ||_F / ||W||_F}} (X: dense calibration inputs)."""
    from ..compress.obs import layer_error

    out = {}
    for n, W in dense.items():
        W_hat, H = compressed[n], hessians[n]
        signal = layer_error(W, torch.zeros_like(W), H)
        out[n] = {"output": (layer_error(W, W_hat, H) / signal) ** 0.5,
                  "weight": (torch.linalg.norm(W - W_hat) / torch.linalg.norm(W)).item()}
    return out


def _agreement(same: dict, sizes: dict) -> dict:
    total = sum(sizes.values())
    return {"per_layer": same, "overall": sum(same[n] * sizes[n] for n in same) / total}


def mask_agreement(a: dict, b: dict) -> dict:
    """Share of weights that both weight sets zero, or both keep: per layer and over all layers."""
    same = {n: ((a[n] == 0) == (b[n] == 0)).float().mean().item() for n in a}
    return _agreement(same, {n: a[n].numel() for n in a})


def grid_levels(dense: torch.Tensor, W: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """The level index (0 .. 2^bits - 1) of each weight of ``W`` on the per-row min-max grid of ``dense``."""
    from ..compress.quant import Quantizer

    q = Quantizer(bits).fit(dense)
    return torch.clamp(torch.round(W.float() / q.scale) + q.zero, 0, q.maxq)


def grid_agreement(dense: dict, a: dict, b: dict, bits: int = 4) -> dict:
    """Share of weights that two quantizations put on the same level of the dense row's grid."""
    same = {n: (grid_levels(dense[n], a[n], bits) == grid_levels(dense[n], b[n], bits)).float().mean().item()
            for n in dense}
    return _agreement(same, {n: dense[n].numel() for n in dense})


def reorder(n: int, seed: int) -> torch.Tensor:
    """A fixed permutation of n calibration windows (seeded by 1000 + the calibration seed): the same
    set in another order changes only the summation order of every Hessian."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(1000 + seed))


def mean_abs_change(a: list, b: list) -> float:
    if len(a) != len(b) or not a:
        raise ValueError(f"a={a!r}, b={b!r}: need two non-empty lists of the same length")
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def sparsity(weights: dict) -> float:
    return sum(int((W == 0).sum()) for W in weights.values()) / sum(W.numel() for W in weights.values())


def gap_check(ours: list, theirs: list) -> dict:
    """Per-seed perplexity gaps |theirs - ours| on the same windows against two standard
    deviations of ours over the seeds; ``within``: every gap is inside it."""
    from ..core.spread import summarize

    if len(ours) != len(theirs) or len(ours) < 2:
        raise ValueError(f"ours={ours!r}, theirs={theirs!r}: need the same seeds on both sides, at least two")
    s = summarize(ours)
    gaps = [abs(t - o) for o, t in zip(ours, theirs)]
    return {"gaps": gaps, "max_gap": max(gaps), "mean_gap": summarize(theirs)["mean"] - s["mean"],
            "two_sd": 2 * s["sd"], "within": max(gaps) <= 2 * s["sd"]}
