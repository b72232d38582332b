"""Decoding at the memory bound on a GPU: a greedy loop over a static KV cache, its one-token step
captured as a CUDA graph.

At batch 1 a GPU reads a small model's weights in microseconds, while each decoding step also
costs a Python step (``generate``'s logits processors, stopping criteria, cache bookkeeping) and
dozens of kernel launches of a few microseconds each. Below some size the step is
**launch-bound**: time per token stays flat as the weights shrink, far under the roofline's
B / W. A CUDA graph records the step's kernels once and replays them with one launch, so the
step costs what its kernels cost; with the weights far larger than the caches (OPT-1.3B's shape
in 16 bits: 2.6 GB read per token), what remains is the memory-bound regime. This is how
PyTorch's gpt-fast (2023) decodes near the bandwidth bound at batch 1.

``static_greedy`` is that loop, written out:

1. a ``transformers.StaticCache`` of ``prompt + new_tokens`` positions, allocated once (a graph
   replays fixed addresses, so nothing may be reallocated);
2. the prefill, eager: one forward over the prompt fills the first positions;
3. per new token, ``step(token)``: one forward of one position at the cache's next slot (the
   cache keeps its length in a tensor it updates in place, so a replay advances it), the argmax.
   With ``graph=True`` (CUDA only) the step is ``torch.compile(mode="reduce-overhead")``,
   which captures it as a CUDA graph after two warm-up calls and replays it from then on.

It yields the same tokens as ``generate`` (greedy), which the tests check on the CPU without a
graph. ``benchmark`` times it against ``generate`` and sets both against the bound B / W.
"""
from __future__ import annotations

import torch

from ..core.checks import positive_int


def _step_fn(model, cache, mask):
    def step(token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        # token (b, 1) int64; position (b, 1) int64: the new token's position in the sequence
        out = model(input_ids=token, attention_mask=mask, cache=cache, position_ids=position, use_cache=True)
        return out.logits[:, -1].argmax(-1, keepdim=True)  # (b, 1) next token
    return step


@torch.inference_mode()
def static_greedy(model, ids: torch.Tensor, new_tokens: int, graph: bool = False) -> torch.Tensor:
    """Greedy decoding of ``new_tokens`` after ``ids`` (b, t) with a static KV cache; returns
    (b, t + new_tokens) token ids. ``graph=True`` replays the one-token step as a CUDA graph."""
    from transformers import StaticCache

    positive_int("new_tokens", new_tokens)
    if graph and ids.device.type != "cuda":
        raise ValueError(f"graph=True needs a CUDA device; ids are on {ids.device.type}")
    b, t = ids.shape
    total = t + new_tokens
    cache = StaticCache(config=model.config, max_cache_len=total)
    mask = torch.ones(b, total, dtype=torch.long, device=ids.device)  # (b, total): no padding
    logits = model(input_ids=ids, attention_mask=mask[:, :t], cache=cache, use_cache=True).logits
    out = torch.empty(b, total, dtype=ids.dtype, device=ids.device)
    out[:, :t] = ids
    out[:, t:t + 1] = logits[:, -1].argmax(-1, keepdim=True)
    step = _step_fn(model, cache, mask)
    if graph:
        step = torch.compile(step, mode="reduce-overhead", fullgraph=False)
    position = torch.full((b, 1), t, dtype=torch.long, device=ids.device)
    for i in range(t, total - 1):
        out[:, i + 1:i + 2] = step(out[:, i:i + 1], position)
        position += 1
    return out


def benchmark(model, ids: torch.Tensor, new_tokens: int = 128, graph: bool | None = None,
              repeats: int = 3) -> dict:
    """Tokens/s of ``generate`` (dynamic cache) and of ``static_greedy`` (with a CUDA graph where
    ``graph``, default: on CUDA), median of ``repeats`` after one warm-up; ``same_tokens`` says
    whether both produced the same ids."""
    from ..core.timing import median_of
    from .decoding import generate

    graph = ids.device.type == "cuda" if graph is None else graph
    runs = {"generate": lambda: generate(model, ids, new_tokens).sequences,
            "static graph" if graph else "static": lambda: static_greedy(model, ids, new_tokens, graph)}
    rows, tokens = {}, {}
    for name, fn in runs.items():
        tokens[name] = fn()  # warm-up (and the graph's capture)
        rows[name] = ids.shape[0] * new_tokens / median_of(fn, ids.device, repeats, warmup=0)
    a, b = tokens.values()
    return {"tokens_per_s": rows, "same_tokens": bool(torch.equal(a.cpu(), b.cpu())), "new_tokens": new_tokens,
            "batch": ids.shape[0], "graph": graph}
