"""GPTQ on many expert matrices of one shape at once: QMoE's batched execution.

An expert of a mixture-of-experts layer is a small matrix (a switch-base expert: 3072 x 768), so
quantizing it one at a time with GPTQ leaves the device mostly idle: the per-column Python loop
of ``ColumnSweep.sweep`` issues a few small kernels per column, whatever the matrix size.
QMoE (Frantar & Alistarh 2023, arXiv 2310.16795, section 4, "expert grouping" in its
system design) therefore stacks experts of the same shape (16 at a time) and runs one GPTQ
sweep over the stack: the same number of loop iterations, each doing E experts' work.

``quantize_batched`` is exactly ``GPTQ.quantize`` applied to every (W_e, H_e) independently,
through the same code: the dead-input handling, dampening and inverse of ``obs.prepare`` and
the sweep of ``obs.column_sweep`` both take a stack (E, rows, columns) as they take one matrix
(QMoE mode included, ``keep_dead``) -- batched Cholesky factors, broadcast in-block updates and
a batched product for the lazy updates. Per-row grids need no batched quantizer: a stack
(E, rows, columns) is the matrix (E·rows, columns) row for row.

``quantize_group`` is the entry point at the level of ``GPTQ`` collectors (what the sequential
driver holds); ``time_batched_vs_sequential`` times both ways on random experts.
"""
from __future__ import annotations

import torch

from ...core.checks import positive_int
from ...core.timing import Timer
from ..gptq import GPTQ
from ..obs import column_sweep, dead_inputs, inverse_factor, prepare
from ..quant import Quantizer, check_bits


def _check_stack(Ws: torch.Tensor, Hs: torch.Tensor) -> None:
    if Ws.dim() != 3:
        raise ValueError(f"Ws must be a 3-D tensor (experts, rows, columns); got shape {tuple(Ws.shape)}")
    E, _, columns = Ws.shape
    if tuple(Hs.shape) != (E, columns, columns):
        raise ValueError(f"Hs must have shape (experts, columns, columns) = {(E, columns, columns)} "
                         f"to match Ws {tuple(Ws.shape)}; got {tuple(Hs.shape)}")


def prepare_batched(Ws: torch.Tensor, Hs: torch.Tensor, percdamp: float = 0.01, keep_dead: bool = False):
    """``obs.prepare`` for every expert at once: returns (W, Hinv), (E, rows, columns) fp32 and
    (E, columns, columns) upper Cholesky factors of each dampened H_e⁻¹.

    Per expert, as ``prepare``: dense mode gives a dead input j (H_e[j, j] = 0) H_e[j, j] = 1 and
    W_e[:, j] = 0, then adds λ_e = percdamp · mean(diag H_e) to H_e's diagonal; ``keep_dead``
    (QMoE mode, its ``batch_gptq``) keeps W_e whole and gives an H_e with no Cholesky factor
    Hinv_e = I (``obs.inverse_factor``).
    """
    _check_stack(Ws, Hs)
    return prepare(Ws, Hs, percdamp, keep_dead)


@torch.no_grad()
def quantize_batched(Ws: torch.Tensor, Hs: torch.Tensor, bits=4, blocksize: int = 128,
                     percdamp: float = 0.01, keep_dead: bool = False) -> torch.Tensor:
    """GPTQ of E matrices at once: Ws (E, rows, columns), Hs (E, columns, columns) their
    Hessians; returns the quantized weights (E, rows, columns) in fp32. Expert e's result is
    what ``GPTQ.quantize(bits, blocksize, percdamp)`` makes of (W_e, H_e) (a ``GPTQ`` made with
    ``keep_dead``, for QMoE mode), up to float rounding (``torch.bmm`` may sum in another order
    than one matrix product). Inputs are not modified.
    """
    check_bits(bits)
    positive_int("blocksize", blocksize)
    W, Hinv = prepare_batched(Ws, Hs, percdamp, keep_dead)  # (E, rows, columns), (E, columns, columns)
    column_sweep(W, Hinv, blocksize, Quantizer(bits))      # in place, every operation carrying E
    return W


@torch.no_grad()
def quantize_group(collectors: list[GPTQ], bits=4, blocksize: int = 128, percdamp: float = 0.01) -> None:
    """Quantize the layers of ``collectors`` (``GPTQ`` collectors whose layers share one weight
    shape) in one batched sweep, writing each result into its ``layer.weight`` in place.

    Every collector must have seen calibration data (``n > 0``): one with none has H = 0, which
    the sweep would read as all inputs dead and zero the whole matrix; the caller gives those
    their fallback (RTN) instead, as the sequential driver does. The collectors share one mode
    (``keep_dead``): in QMoE mode an expert whose H has no Cholesky factor is rounded (RTN)
    while the others are solved, and its ``fell_back`` says so. A group of one runs
    ``GPTQ.quantize`` itself. Put at most a few dozen experts in one group (QMoE: 16): the
    stack holds E Hessians and E copies of the weights at once.
    """
    collectors = list(collectors)
    if not collectors:
        raise ValueError("collectors must hold at least one GPTQ collector; got none")
    check_bits(bits)
    positive_int("blocksize", blocksize)
    shape, keep_dead = tuple(collectors[0].layer.weight.shape), collectors[0].keep_dead
    for k, c in enumerate(collectors):
        if tuple(c.layer.weight.shape) != shape:
            raise ValueError(f"collectors must share one weight shape: collectors[0] is {shape}, "
                             f"collectors[{k}] is {tuple(c.layer.weight.shape)}")
        if c.n == 0:
            raise ValueError(f"collectors[{k}] has no calibration data (n == 0); give it its fallback "
                             f"instead of quantize_group")
        if c.keep_dead != keep_dead:
            raise ValueError(f"collectors must share one mode: collectors[0] has keep_dead={keep_dead}, "
                             f"collectors[{k}] keep_dead={c.keep_dead}")
    if len(collectors) == 1:
        collectors[0].quantize(bits, blocksize, percdamp)
        return
    Ws = torch.stack([c.layer.weight.detach() for c in collectors])  # (E, rows, columns)
    Hs = torch.stack([c.H for c in collectors])                      # (E, columns, columns)
    W = dead_inputs(Ws, Hs, keep_dead)                               # (E, rows, columns) fp32
    Hinv, failed = inverse_factor(Hs, percdamp, keep_dead)           # (E, columns, columns), (E,)
    column_sweep(W, Hinv, blocksize, Quantizer(bits))              # in place: W is now quantized
    for c, q, f in zip(collectors, W, failed.tolist()):
        c.layer.weight.copy_(q)  # in place: also right for an expert's slice of a fused parameter
        c.fell_back = f          # Hinv_e = I: expert e was rounded


def time_batched_vs_sequential(E: int = 16, rows: int = 512, cols: int = 256, bits="ternary",
                               repeats: int = 3, device="cpu", blocksize: int = 128,
                               percdamp: float = 0.01, seed: int = 0) -> dict:
    """Seconds to GPTQ-quantize E random experts (rows x cols, each with its own H from random
    inputs) one at a time (``GPTQ.quantize`` per collector) and batched (``quantize_group``):
    the fastest of ``repeats`` device-synchronized runs of each (the two ways alternating, after
    one untimed warm-up on a tiny group), the weights restored between runs (outside the timer). Returns {"sequential_s", "batched_s", "speedup"} (speedup =
    sequential / batched). A benchmark, not a test: timings depend on the machine.
    """
    from ..bench import random_hessian

    check_bits(bits)
    for name, value in (("E", E), ("rows", rows), ("cols", cols), ("repeats", repeats)):
        positive_int(name, value)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    collectors = []
    for _ in range(E):
        layer = torch.nn.Linear(cols, rows, bias=False, device=dev)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(rows, cols, generator=gen).to(dev))
        c = GPTQ(layer)
        c.share(random_hessian(cols, dev, gen))
        collectors.append(c)
    originals = [c.layer.weight.detach().clone() for c in collectors]

    def restore():
        with torch.no_grad():
            for c, w in zip(collectors, originals):
                c.layer.weight.copy_(w)

    def sequential():
        for c in collectors:
            c.quantize(bits, blocksize, percdamp)

    def batched():
        quantize_group(collectors, bits, blocksize, percdamp)

    # one-time costs (library and kernel initialisation, a GPU's solver handles) outside the timings
    warm = [GPTQ(torch.nn.Linear(16, 8, bias=False, device=dev)) for _ in range(2)]
    for c in warm:
        c.add_batch(torch.randn(32, 16, generator=gen).to(dev))
    warm[0].quantize(bits, blocksize, percdamp)
    quantize_group(warm, bits, blocksize, percdamp)

    times = {"sequential_s": [], "batched_s": []}
    for _ in range(repeats):  # alternate the two ways, so a change in the machine's load hits both
        for key, fn in (("sequential_s", sequential), ("batched_s", batched)):
            restore()
            with Timer(dev) as t:
                fn()
            times[key].append(t.seconds)
    best = {key: min(ts) for key, ts in times.items()}
    best["speedup"] = best["sequential_s"] / best["batched_s"]
    return best
