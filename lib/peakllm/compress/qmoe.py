"""QMoE: sub-1-bit compression of mixture-of-experts models (Frantar & Alistarh, MLSys 2024).

A trillion-parameter MoE keeps almost all its parameters in experts: 8 or 2,048 copies of
the feed-forward block, of which a token visits one or two. QMoE (section 4) compresses only
the experts, with GPTQ (``peakllm.compress.gptq``) and three changes for that setting:

* **calibration through the router**: each expert matrix gets its Hessian from the tokens the
  router actually sent to it (``peakllm.compress.experts`` for fused experts; an ``nn.Linear`` expert's
  own forward hook sees exactly its tokens), and no expert gets more than
  ``max_tokens_mult`` times the mean number of tokens per expert (a few popular experts would
  otherwise hold most of the calibration work);
* a **ternary grid** per row, {wmin, 0, wmax}, or 2 bits, with 10x GPTQ's dampening
  (``percdamp`` = 0.1): the coarse grid makes H's small eigen-directions unstable;
* the **dense parts** (attention, embeddings, routers) stay untouched.

Most ternary weights come out zero (about 88% for Switch c2048), so section 5 stores them below
one bit each with a dictionary code: ``peakllm.compress.ternary_coding``. ``encode_experts`` applies it
to every expert matrix of a compressed model and checks the decode is bit-exact.
"""
from __future__ import annotations

import torch

from ..core.checks import choice
from .experts import FUSED, ExpertMatrix
from .gptq import GPTQ, QUANT_METHODS
from .quant import check_bits, rtn
from ..models.moe import routing
from .driver import compress_model
from .sequential import all_linear_layers


def is_expert(name: str, layer) -> bool:
    return isinstance(layer, ExpertMatrix) or ".experts." in f".{name}."


def expert_layers(model) -> dict:
    """Every expert matrix of the model by name (fused 3-D slices or ``nn.Linear`` experts)."""
    return {n: m for n, m in all_linear_layers(model).items() if is_expert(n, m)}


def check_moe(model) -> dict:
    layers = expert_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no experts: QMoE compresses mixture-of-experts "
                         "layers. For a dense model use peakllm.compress.gptq.quantize_model.")
    return layers


def experts_share(model) -> dict:
    """Parameters in experts vs the rest (the dense part QMoE leaves alone)."""
    experts = sum(m.weight.numel() for m in check_moe(model).values())
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "experts": experts, "dense": total - experts, "share": experts / total}


def token_cap(config, n_tokens: int, max_tokens_mult: float) -> int | None:
    """At most ``max_tokens_mult`` x the mean tokens per expert (n_tokens k / E); None: no cap."""
    if max_tokens_mult <= 0:
        return None
    E, k = routing(config)
    return max(1, int(max_tokens_mult * n_tokens * k / E))


def without_special_tokens(ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Calibration text with special tokens (padding, end of sequence...) taken out: QMoE masks
    them, since they are frequent, carry no content, and the router sends them all one way."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=ids.dtype)
    return ids[~torch.isin(ids, special)]


@torch.no_grad()
def calibrate_expert(model, calib: torch.Tensor, name: str, batch_size: int = 8) -> GPTQ:
    """One expert matrix under the microscope: its GPTQ filled with the tokens the dense
    model's router sends to it (for a fused expert, through ``experts.hook_routed_inputs``)."""
    from collections import defaultdict

    from .driver import _Untouched
    from .experts import hook_routed_inputs
    from .sequential import forward_calibration

    layers = check_moe(model)
    if name not in layers:
        raise ValueError(f"name={name!r} is not an expert matrix of this model; e.g. {list(layers)[:2]}")
    layer = layers[name]
    probe = GPTQ(layer)
    if isinstance(layer, ExpertMatrix):
        module = next(m for m in model.modules() if any(getattr(m, p, None) is layer.param for p in FUSED))
        which = next(p for p in FUSED if getattr(module, p) is layer.param)
        sink = defaultdict(_Untouched, {f".{which}.{layer.e}": probe})
        handle = hook_routed_inputs(module, "", sink)
    else:
        handle = layer.register_forward_hook(lambda m, inp, out: probe.add_batch(inp[0]))
    forward_calibration(model, calib, [handle], batch_size)
    return probe


@torch.no_grad()
def snap_ternary_scales(W: torch.Tensor) -> None:
    """Round each row's wmin / wmax to bf16 in place (QMoE stores them in bf16), so the stored
    code decodes to exactly these weights."""
    lo = W.min(dim=1, keepdim=True).values.bfloat16().float()  # (rows, 1)
    hi = W.max(dim=1, keepdim=True).values.bfloat16().float()
    W.copy_(torch.where(W < 0, lo, torch.where(W > 0, hi, torch.zeros_like(W))))


def compress(model, calib: torch.Tensor | None = None, bits="ternary", method: str = "gptq",
             percdamp: float = 0.1, max_tokens_mult: float = 4.0, blocksize: int = 128,
             batch_size: int = 8, progress: bool = True) -> list[dict]:
    """Quantize every expert matrix in place; one report row per expert matrix.

    ``gptq`` runs the sequential driver over the calibration windows ``calib`` (n, seqlen), each
    expert on its routed tokens (capped); an expert no token reached falls back to RTN. ``rtn``
    needs no data. Everything else in the model is left as it is.
    """
    choice("method", method, QUANT_METHODS)
    check_bits(bits)
    if not 0 <= percdamp < 10:
        raise ValueError(f"percdamp={percdamp!r} must be in [0, 10) (QMoE: 0.1)")
    experts = check_moe(model)

    def finish(W):
        if bits == "ternary":
            snap_ternary_scales(W)

    cap = token_cap(model.config, calib.numel(), max_tokens_mult) if calib is not None else None

    def fallback(layer):
        layer.weight.copy_(rtn(layer.weight, bits))
        finish(layer.weight)

    def quantize(c):
        c.quantize(bits, blocksize, percdamp)
        finish(c.layer.weight)

    rows = compress_model(model, calib, fallback, lambda layer: GPTQ(layer, cap),
                          None if method == "rtn" else quantize, method=method,
                          only=lambda name, layer: name in experts, batch_size=batch_size,
                          progress=progress, desc=f"qmoe {bits}")
    labels = {"data-free": "rtn", "calibrated": "gptq", "fallback (no tokens)": "rtn (no tokens)"}
    return [r | {"method": labels[r["how"]]} for r in rows]


def routing_histogram(rows: list[dict]):
    """From ``compress``'s report: one row per expert (its first matrix only: gate_up / wi),
    the layer it sits in, the tokens the router sent (``routed``) and those kept (``used``)."""
    import pandas as pd

    out = []
    for r in rows:
        if ".down_proj." in r["layer"] or r["layer"].endswith(".wo"):
            continue  # an expert's second matrix sees the same tokens as its first
        head, last = r["layer"].rsplit(".", 1)
        if last.isdigit():  # fused experts: <layer>.gate_up_proj.<e>
            layer, expert = head.rsplit(".", 1)[0], int(last)
        else:               # nn.Linear experts: <layer>.expert_<e>.wi
            layer, expert = head.rsplit(".", 1)
        out.append({"layer": layer, "expert": expert, "routed": r["routed"], "used": r["tokens"]})
    return pd.DataFrame(out, columns=["layer", "expert", "routed", "used"])


def zero_share(model) -> float:
    """Share of exact zeros among the expert weights (the natural sparsity of ternary QMoE)."""
    layers = check_moe(model).values()
    return sum(int((m.weight == 0).sum()) for m in layers) / sum(m.weight.numel() for m in layers)


@torch.no_grad()
def encode_experts(model, size: int = 2 ** 12, max_pairs: int = 14, verify: bool = True) -> dict:
    """Store every ternary expert matrix with one dictionary code fitted to all of them.

    Returns the code, the encoded matrices and the bit counts: codewords alone ("codes"), and
    with per-row metadata and the dictionary ("all"); the entropy bound and lzma on the same
    codes. With ``verify``, every matrix is decoded and compared with the model's weights.
    """
    from . import ternary_coding as tc

    mats = {n: m.weight.float() for n, m in check_moe(model).items()}  # name -> (rows, cols)
    for n, W in mats.items():
        if not torch.equal(W, torch.where(W < 0, W.min(1, keepdim=True).values,
                                          torch.where(W > 0, W.max(1, keepdim=True).values, 0 * W))):
            raise ValueError(f"{n} is not ternary (more than three values in a row): compress with bits='ternary' first")
    codes = {n: torch.sign(W).to(torch.int8) for n, W in mats.items()}
    code = tc.DictionaryCode.fit(list(codes.values()), size=size, max_pairs=max_pairs)
    encoded = {n: code.encode(codes[n], W.min(1).values, W.max(1).values) for n, W in mats.items()}
    params = sum(e.params for e in encoded.values())
    code_bits = sum(e.code_bits for e in encoded.values())
    row_bits = sum(e.row_bits for e in encoded.values())
    dict_bits = next(iter(encoded.values())).dictionary_bits
    allq = torch.cat([c.reshape(-1) for c in codes.values()])[None]  # (1, params)
    out = {"code": code, "encoded": encoded, "params": params, "rows": sum(e.rows for e in encoded.values()),
           "codewords": sum(e.n_codewords for e in encoded.values()), "code_bits": code_bits,
           "row_bits": row_bits, "dictionary_bits": dict_bits,
           "entropy": tc.entropy_bits(allq), "lzma": tc.lzma_bits(allq) / params,
           "codes": code_bits / params, "all": (code_bits + row_bits + dict_bits) / params,
           "stored_bytes": sum(len(e.to_bytes()) for e in encoded.values()) + dict_bits // 8}
    if verify:
        for n, e in encoded.items():
            back = tc.from_codes(code.decode(e.to_bytes()), *e.scales())
            if not torch.equal(back, mats[n]):
                raise AssertionError(f"{n}: the decoded weights differ from the model's")
        out["verified"] = len(encoded)
    return out


def iid_codes(rows: int, cols: int, probs: tuple[float, float, float], seed: int = 0) -> torch.Tensor:
    """Random ternary codes with P(-1), P(0), P(+1) = ``probs``: stand-ins of a given shape."""
    g = torch.Generator().manual_seed(seed)
    return (torch.multinomial(torch.tensor(probs), rows * cols, replacement=True, generator=g) - 1
            ).to(torch.int8).reshape(rows, cols)


def bits_at_scale(probs, cols_list, rows: int = 256, size: int = 2 ** 12, max_pairs: int = 14,
                  seed: int = 0) -> list[dict]:
    """Bits per parameter of the dictionary code for rows of growing width, on i.i.d. codes with
    our model's symbol frequencies: codewords alone, and with the 64 bits of each row (offset,
    bf16 wmin / wmax). The dictionary is shared by the whole model and fades with its size."""
    from . import ternary_coding as tc

    out = []
    for cols in cols_list:
        q = iid_codes(rows, cols, probs, seed)
        e = tc.DictionaryCode.fit(q, size=size, max_pairs=max_pairs).encode(q)
        out.append({"columns": cols, "codes": e.code_bits / e.params,
                    "codes + rows": (e.code_bits + e.row_bits) / e.params, "entropy": tc.entropy_bits(q)})
    return out


def span_corruption(ids: torch.Tensor, first_sentinel: int, noise: float = 0.15, mean_span: int = 3,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """T5's denoising objective for one window (Raffel et al. 2020, section 3.1.4): spans of
    ``mean_span`` tokens, ``noise`` of the window in all, each replaced by a sentinel
    (<extra_id_0> = ``first_sentinel``, <extra_id_1> = one less, ...); the labels list each
    sentinel followed by the span it hides."""
    g = torch.Generator().manual_seed(seed)
    T = ids.numel()
    n_spans = max(1, round(T * noise / mean_span))
    starts = sorted(torch.randperm(T // mean_span, generator=g)[:n_spans].mul(mean_span).tolist())
    inp, lab, pos = [], [], 0
    for i, s in enumerate(starts):
        sentinel = first_sentinel - i
        inp += ids[pos:s].tolist() + [sentinel]
        lab += [sentinel] + ids[s: s + mean_span].tolist()
        pos = s + mean_span
    inp += ids[pos:].tolist()
    return torch.tensor(inp), torch.tensor(lab)


@torch.no_grad()
def first_sentinel(tokenizer) -> int | None:
    """The id of T5's ``<extra_id_0>`` (SwitchTransformers use T5's tokenizer), if it has one."""
    vocab = tokenizer.get_vocab()
    return vocab.get("<extra_id_0>")


def eval_loss(model, ids: torch.Tensor, seqlen: int, batch_size: int = 8, max_windows: int | None = None,
              sentinel: int | None = None) -> float:
    """Mean loss per predicted token (nats): next-token cross-entropy for a causal LM; for an
    encoder-decoder (SwitchTransformers) the span-corruption loss the paper reports, with
    ``sentinel`` the id of <extra_id_0> (default: the last id of the vocabulary)."""
    from ..core.perplexity import mean_nll, windows

    if not getattr(model.config, "is_encoder_decoder", False):
        return mean_nll(model, ids, seqlen, batch_size, max_windows)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i, w in enumerate(windows(ids, seqlen)[:max_windows]):
        x, y = span_corruption(w, sentinel if sentinel is not None else model.config.vocab_size - 1, seed=i)
        out = model(input_ids=x[None].to(device), labels=y[None].to(device))
        total += out.loss.item() * y.numel()
        count += y.numel()
    return total / count
