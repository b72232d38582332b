"""QMoE: sub-1-bit compression of mixture-of-experts models (Frantar & Alistarh, MLSys 2024).

A trillion-parameter MoE keeps almost all its parameters in experts: 8 or 2,048 copies of
the feed-forward block, of which a token visits one or two. QMoE (section 4) compresses only
the experts, with GPTQ (``peakllm.compress.gptq``) and three changes for that setting:

* **calibration through the router**: each expert matrix gets its Hessian from the tokens the
  router actually sent to it (``peakllm.compress.experts`` for fused experts; an ``nn.Linear`` expert's
  own forward hook sees exactly its tokens), special tokens left out (``calibration_pairs``), and
  no expert takes more than its first ``max_tokens_mult`` times the mean number of tokens per
  expert (``token_cap``), which bounds memory in the rare case that very many tokens go to one
  expert;
* a **ternary grid** per row, {wmin, 0, wmax}, or 2 bits, with 10x GPTQ's dampening
  (``percdamp`` = 0.1): the coarse grid makes H's small eigen-directions unstable;
* the **dense parts** (attention, embeddings, routers) stay untouched.

Every expert runs in QMoE mode (``obs.prepare``, ``keep_dead``): dead inputs keep their weights,
and an expert whose H has no Cholesky factor is rounded (RTN) instead of stopping the run;
``compress`` counts those.

Most ternary weights come out zero (about 88% for Switch c2048), so section 5 stores them below
one bit each with a dictionary code: ``peakllm.compress.ternary_coding``. ``encode_experts`` applies it
to every expert matrix of a compressed model and checks the decode is bit-exact.
"""
from __future__ import annotations

import torch

from ...core.checks import choice
from ...models.moe import routing
from ...models.structure import FUSED, ExpertMatrix, all_linear_layers, capacity_routers, find_stacks
from ..driver import compress_model
from ..experts import zeroed
from ..gptq import GPTQ, QUANT_METHODS, round_layer
from ..quant import check_bits


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


def checkpoint_bits(share: dict, expert_bits: float, dense_bits: int = 16) -> float:
    """Bits per parameter of the whole checkpoint: experts at ``expert_bits`` each, the dense part
    (``experts_share``) kept in bf16 -- the scope of QMoE's 0.8 bit for switch-c-2048."""
    return (dense_bits * share["dense"] + expert_bits * share["experts"]) / share["total"]


def token_cap(config, n_tokens: int, max_tokens_mult: float) -> int | None:
    """At most ``max_tokens_mult`` x the mean tokens per expert, int(mult n_tokens k / E), None: no
    cap. As QMoE's reference code (switch.py) counts it, ``max_tokens = int(max_tokens_mul *
    traintokens / len(experts))``: ``n_tokens`` is every calibration token of the stack, special
    ones included (``stack_tokens``), and an expert takes its *first* ``cap`` routed tokens before
    special ones are masked out (``obs.Calibration.take``). The reference's motivation: "avoid
    OOM in rare edge cases when massive token counts are sent to a single expert". Its Switch
    routes top-1; the k here (top-k routing) keeps the cap at a multiple of the mean otherwise."""
    if max_tokens_mult <= 0:
        return None
    E, k = routing(config)
    return max(1, int(max_tokens_mult * n_tokens * k / E))


def special_mask(ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """True where ``ids`` holds a special token (padding, end of sequence, T5's sentinels)."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=ids.dtype)
    return torch.isin(ids, special)


def decoder_token_mask(dec: torch.Tensor, tokenizer) -> torch.Tensor:
    """(n, T) decoder inputs -> (n, T) bool, the positions whose activations feed the statistics:
    QMoE skips "the token directly before such a special token as this is the one used to
    predict the latter" -- position j is kept iff ``dec[:, j + 1]`` is not special, and the last
    position (it predicts the target's EOS) is not kept, as ``skip_mask`` in the reference's
    ``switch_forward``. With ``dec`` the target shifted right, that is: keep j iff target j is
    not special."""
    special = special_mask(dec, tokenizer)                                           # (n, T)
    predicts = torch.cat([special[:, 1:], torch.ones_like(special[:, :1])], dim=1)  # (n, T): dec[j + 1] special
    return ~predicts


def calibration_pairs(windows: torch.Tensor, tokenizer, model, seed: int = 0) -> dict:
    """QMoE's calibration data from token windows (n, T), for ``sequential.calibration_batches``.

    Special tokens stay in the forward pass (the model reads them), and the statistics leave out
    positions as QMoE section 3.3 and its reference code (``switch_forward`` in switch.py) do:

    * the encoder (and a decoder-only model) skips the positions that *hold* a special token
      (``token_mask``: sentinels, EOS, padding; the reference tests ``id < 32000``, so it skips
      the sentinels only and keeps the encoder's closing EOS);
    * the decoder skips "the token directly before such a special token as this is the one used
      to predict the latter" (``decoder_token_mask``): the start token and each span's last
      token (they predict a sentinel), and the last position (it predicts EOS); the sentinels
      themselves are kept (they predict a hidden token).

    An encoder-decoder (Switch) is calibrated as it is trained and evaluated, on T5 span
    corruption (``peakllm.data.spans``, EOS the config's ``eos_token_id``): the encoder reads the
    corrupted window, the decoder the target shifted right behind the decoder-start token
    (``decoder_input_ids``).
    """
    from ...data import spans

    if not getattr(model.config, "is_encoder_decoder", False):
        return {"input_ids": windows, "attention_mask": torch.ones_like(windows),
                "token_mask": ~special_mask(windows, tokenizer)}
    sentinel = spans.first_sentinel(tokenizer)
    if sentinel is None:
        raise ValueError("an encoder-decoder is calibrated on span corruption, and this tokenizer has no "
                         "<extra_id_0> sentinel (T5's); use the model's own tokenizer")
    pair = spans.objective(model.config, sentinel)(windows, seed=seed * len(windows))  # (n, T_in), (n, T_out)
    start = torch.full_like(pair["labels"][:, :1], model.config.decoder_start_token_id)
    dec = torch.cat([start, pair["labels"][:, :-1]], dim=1)  # (n, T_out): teacher forcing
    return {"input_ids": pair["input_ids"], "attention_mask": torch.ones_like(pair["input_ids"]),
            "decoder_input_ids": dec, "decoder_attention_mask": torch.ones_like(dec),
            "token_mask": ~special_mask(pair["input_ids"], tokenizer),
            "decoder_token_mask": decoder_token_mask(dec, tokenizer)}


def no_token_dropped(model, capacity: int = 1024) -> int:
    """Raise every Switch router's expert capacity to ``capacity`` tokens per expert and sequence
    (QMoE: 1024), so no token is dropped in calibration or evaluation; returns the routers changed.
    transformers' Switch keeps at most ``expert_capacity`` (switch-base: 64) tokens per expert in
    a sequence and passes the rest through the residual only."""
    routers = list(capacity_routers(model).values())
    for r in routers:
        r.expert_capacity = max(r.expert_capacity, capacity)
    if routers:
        model.config.expert_capacity = max(model.config.expert_capacity, capacity)
    return len(routers)


@torch.no_grad()
def dropped_tokens(model, calib, capacity: int | None = None, batch_size: int = 8) -> dict:
    """Tokens the Switch routers drop on ``calib`` at expert capacity ``capacity`` (None: as the
    model is set now): {"routed": tokens that reached a router, "dropped": those over capacity}.
    A dropped token skips the expert layer (only the residual carries it on)."""
    from ..sequential import forward_calibration

    routers = list(capacity_routers(model).values())
    before = [r.expert_capacity for r in routers]
    count = {"routed": 0, "dropped": 0}

    def hook(module, inp, out):  # out[0]: (b, t, E) one-hot of the kept choice; all zero = dropped
        kept = out[0].reshape(-1, out[0].shape[-1]).sum(-1)
        count["routed"] += kept.numel()
        count["dropped"] += int((kept == 0).sum())
    try:
        for r in routers:
            r.expert_capacity = capacity if capacity is not None else r.expert_capacity
        forward_calibration(model, calib, [r.register_forward_hook(hook) for r in routers], batch_size)
    finally:
        for r, c in zip(routers, before):
            r.expert_capacity = c
    return count


def load(model_name: str, device: str = "auto", expert_capacity: int = 1024):
    """The MoE to compress as QMoE runs it: (model, tokenizer, the checkpoint's expert capacity --
    None for a family without one), every Switch router set to drop no token. A notebook loads
    afresh for each compression, so one working copy is in memory at a time."""
    from ...models.loading import load as load_model

    model, tokenizer = load_model(model_name, device=device)
    check_moe(model)
    capacity = getattr(model.config, "expert_capacity", None)
    no_token_dropped(model, expert_capacity)
    return model, tokenizer, capacity


def stack_tokens(model, calib) -> dict:
    """Calibration tokens per stack (``encoder.block`` / ``decoder.block`` of an encoder-decoder
    calibrated on pairs; the one stack of a decoder-only model): every real token, special ones
    included -- what ``token_cap`` counts, as QMoE's reference code does (its ``traintokens``).
    Padding is not counted."""
    from ..sequential import calibration_batches, statistics_masks

    batches = calibration_batches(calib, "cpu", None)
    return {name: int(statistics_masks(model, name, batches, real=True)[0].sum())
            for name, _ in find_stacks(model)}


@torch.no_grad()
def calibrate_expert(model, calib: torch.Tensor, name: str, batch_size: int = 8) -> GPTQ:
    """One expert matrix under the microscope: its GPTQ filled with the tokens the dense
    model's router sends to it (for a fused expert, through ``experts.hook_routed_inputs``)."""
    from collections import defaultdict

    from ..driver import Untouched
    from ..experts import hook_routed_inputs
    from ..sequential import ValidTokens, forward_calibration

    layers = check_moe(model)
    if name not in layers:
        raise ValueError(f"name={name!r} is not an expert matrix of this model; e.g. {list(layers)[:2]}")
    layer, valid = layers[name], ValidTokens()
    probe = GPTQ(layer, keep_dead=True)
    if isinstance(layer, ExpertMatrix):
        module = next(m for m in model.modules() if any(getattr(m, p, None) is layer.param for p in FUSED))
        which = next(p for p in FUSED if getattr(module, p) is layer.param)
        sink = defaultdict(Untouched, {f".{which}.{layer.e}": probe})
        handles = [hook_routed_inputs(module, "", sink, valid)]
    else:  # nn.Linear experts (Switch): the routers tell which of the expert's tokens to keep
        handles = [layer.register_forward_hook(lambda m, inp, out: probe.add_batch(*valid.split(inp[0], name))),
                   *valid.hook_routers(model)]
    forward_calibration(model, calib, handles, batch_size, valid, name)
    return probe


@torch.no_grad()
def snap_ternary_scales(W: torch.Tensor) -> None:
    """Round each row's wmin / wmax to bf16 in place (QMoE stores them in bf16), so the stored
    code decodes to exactly these weights."""
    lo = W.min(dim=1, keepdim=True).values.bfloat16().float()  # (rows, 1)
    hi = W.max(dim=1, keepdim=True).values.bfloat16().float()
    W.copy_(torch.where(W < 0, lo, torch.where(W > 0, hi, torch.zeros_like(W))))


def _key(layer):
    """The same key for an expert matrix however often it is looked up (a fused expert's
    ``ExpertMatrix`` view is made anew each time)."""
    return (id(layer.param), layer.e) if isinstance(layer, ExpertMatrix) else id(layer)


def compress(model, calib: torch.Tensor | None = None, bits="ternary", method: str = "gptq",
             percdamp: float = 0.1, max_tokens_mult: float = 4.0, blocksize: int = 128,
             batch_size: int = 8, progress: bool = True, batch_experts: bool = False) -> list[dict]:
    """Quantize every expert matrix in place; one report row per expert matrix.

    ``gptq`` runs the sequential driver over ``calib`` -- token windows (n, seqlen), or the dict
    of ``calibration_pairs`` (QMoE's protocol: special tokens masked out of the statistics, span
    corruption for an encoder-decoder) -- each expert on its routed tokens, its first
    ``max_tokens_mult`` x the mean per expert of its stack (``token_cap``), in QMoE mode (dead
    inputs keep their weights). An expert no token reached, or whose H has no Cholesky factor,
    is rounded on the same grid (RTN): its row's ``method`` says "rtn (no tokens)" or "rtn (no
    Cholesky)", and the second kind is counted in a printed line. ``batch_experts``: the experts
    of a block that share a shape go through one batched sweep (``peakllm.compress.batched``,
    QMoE section 4), with the same result. ``rtn`` needs no data. Everything else in the model is
    left as it is.
    """
    choice("method", method, QUANT_METHODS)
    check_bits(bits)
    if not 0 <= percdamp < 10:
        raise ValueError(f"percdamp={percdamp!r} must be in [0, 10) (QMoE: 0.1)")
    experts = check_moe(model)

    def finish(W):
        if bits == "ternary":
            snap_ternary_scales(W)

    caps = {}  # expert matrix -> its cap: max_tokens_mult x the mean over its stack's tokens
    if calib is not None:
        for stack, n in stack_tokens(model, calib).items():
            caps |= {_key(m): token_cap(model.config, n, max_tokens_mult) for name, m in experts.items()
                     if name.startswith(stack + ".")}

    def fallback(layer):
        round_layer(layer, bits)
        finish(layer.weight)

    def quantize(c):
        c.quantize(bits, blocksize, percdamp)
        finish(c.layer.weight)

    def quantize_group(cs):
        from .batched import quantize_group as batched

        batched(cs, bits, blocksize, percdamp)
        for c in cs:
            finish(c.layer.weight)

    rows = compress_model(model, calib, fallback, lambda layer: GPTQ(layer, caps.get(_key(layer)), keep_dead=True),
                          None if method == "rtn" else quantize, method=method,
                          only=lambda name, layer: name in experts, batch_size=batch_size,
                          progress=progress, desc=f"qmoe {bits}",
                          compress_group=quantize_group if batch_experts else None)
    labels = {"data-free": "rtn", "calibrated": "gptq", "fallback (no tokens)": "rtn (no tokens)",
              "fallback (no Cholesky)": "rtn (no Cholesky)"}
    rows = [r | {"method": labels[r["how"]]} for r in rows]
    failed = sum(r["method"] == "rtn (no Cholesky)" for r in rows)
    if failed:
        print(f"qmoe: {failed} of {len(rows)} expert matrices had an H with no Cholesky factor and were rounded (RTN)")
    return rows


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


@torch.no_grad()
def zero_share_by_column(model, bins: int = 8) -> list[float]:
    """Share of zeros among the expert weights in each of ``bins`` equal stretches of columns, in
    the order GPTQ sweeps them (left to right). RTN rounds every column alike; GPTQ adds each
    column's rounding error to the columns still to come, which widens their spread, so fewer of
    them fall inside the zero band (|w| below half the row's extreme) the further right they sit."""
    zeros, total = torch.zeros(bins), torch.zeros(bins)
    for m in check_moe(model).values():
        W = m.weight
        edges = torch.linspace(0, W.shape[1], bins + 1).round().long()
        for b in range(bins):
            part = W[:, edges[b]:edges[b + 1]]
            zeros[b] += int((part == 0).sum())
            total[b] += part.numel()
    return (zeros / total).tolist()


def experts_removed(model):
    """A context in which every expert matrix is zero (restored after): each MoE layer then adds
    nothing to its residual stream, so the loss inside measures what the experts carry."""
    return zeroed(check_moe(model))


def zero_share(model, by_row_length: bool = False):
    """Share of exact zeros among the expert weights (the natural sparsity of ternary QMoE); with
    ``by_row_length``, {row length (columns): share} over the expert matrices of that row length."""
    layers = list(check_moe(model).values())

    def share(ms):
        return sum(int((m.weight == 0).sum()) for m in ms) / sum(m.weight.numel() for m in ms)
    if by_row_length:
        return {c: share([m for m in layers if m.weight.shape[1] == c]) for c in sorted({m.weight.shape[1] for m in layers})}
    return share(layers)


@torch.no_grad()
def encode_experts(model, size: int = 2 ** 12, max_pairs: int = 14, coders=("dictionary", "qmoe"),
                   verify: bool = True) -> dict:
    """Store every ternary expert matrix with each coder of ``qmoe_format.bits_report``: ours
    (one dictionary fitted to all the experts, compact rows) and QMoE's (fixed dictionary, 64
    bits a row). Returns ``coders`` (coder -> ``FormatBits``), the parameter count, and the
    entropy bound and lzma on the same codes. With ``verify``, every matrix is decoded from its
    bytes and the weights it gives are compared with the model's, bit for bit."""
    from . import coding as tc
    from . import paper as qmoe_format

    mats = {n: m.weight.float() for n, m in check_moe(model).items()}  # name -> (rows, cols)
    for n, W in mats.items():
        if not torch.equal(W, torch.where(W < 0, W.min(1, keepdim=True).values,
                                          torch.where(W > 0, W.max(1, keepdim=True).values, 0 * W))):
            raise ValueError(f"{n} is not ternary (more than three values in a row): compress with bits='ternary' first")
    codes = {n: torch.sign(W).to(torch.int8) for n, W in mats.items()}
    scales = {n: (W.min(1).values, W.max(1).values) for n, W in mats.items()}
    report = qmoe_format.bits_report(codes, scales, coders, size=size, max_pairs=max_pairs, verify=verify)
    if verify:  # the stored scales give back the very weights (snap_ternary_scales made them bf16)
        for fb in report.values():
            for n, e in fb.encoded.items():
                if not torch.equal(tc.from_codes(fb.code.decode(e), *e.scales()), mats[n]):
                    raise AssertionError(f"{n}: the decoded weights differ from the model's")
    allq = torch.cat([c.reshape(-1) for c in codes.values()])[None]  # (1, params)
    params = sum(W.numel() for W in mats.values())
    return {"coders": report, "params": params, "rows": sum(W.shape[0] for W in mats.values()),
            "entropy": tc.entropy_bits(allq), "lzma": tc.lzma_bits(allq) / params}


def eval_loss(model, ids: torch.Tensor, seqlen: int, batch_size: int = 8, max_windows: int | None = None,
              sentinel: int | None = None) -> float:
    """The loss QMoE reports: the model's own objective per predicted token (``perplexity.mean_loss``):
    span corruption for Switch (C4 masked-LM loss in the paper; ``sentinel`` the id of
    <extra_id_0>, default the vocabulary's last), next-token loss for a causal MoE."""
    from ...core.perplexity import mean_loss
    from ...data.spans import objective

    pairs = objective(model.config, sentinel) if getattr(model.config, "is_encoder_decoder", False) else None
    return mean_loss(model, ids, seqlen, batch_size, max_windows, pairs)
