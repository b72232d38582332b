"""Prefill and decode, timed apart: time to first token and per-token speed at batch 1.

A request's latency has two phases. **Prefill** runs the whole prompt through the model in one
forward pass (matrix-matrix products: compute-bound for long prompts) and yields the first new
token; **decode** then makes one forward pass per further token, reading every weight for a
single multiply-add per sequence (matrix-vector products: memory-bound). Their speeds obey
different ceilings, so they are measured apart:

    prefill_ms          = time from the call until the first new token's logits exist
    decode_tokens_per_s = 1 / (median time between the logits of consecutive new tokens)

Both come from one ``generate`` call: a logits processor, which transformers calls once per new
token, stamps the (device-synchronized) time.
Each figure is the median over ``repeats`` runs after one warm-up, at a fixed thread count, so one slow run (another
process, a page fault) does not move the figure. The decode speed is then set beside the
bandwidth roofline B / W (``peakllm.infer.decoding``): the bytes of weights W read per token over
the read bandwidth B measured on a buffer no cache holds (``peakllm.core.roofline``).
"""
from __future__ import annotations

import statistics
import time

import torch

from ..core.checks import positive_int
from ..core.hardware import synchronize
from .decoding import dtype_label, generate, prompt_ids, resolve_pad_id, weight_bytes_read_per_token


def prefill_and_decode(model, vocab, prompt_len: int = 32, new_tokens: int = 32, repeats: int = 5,
                       seed: int = 0) -> dict:
    """Batch-1 ``prefill_ms`` and ``decode_tokens_per_s`` (medians, see the module docstring)."""
    for name, v in (("prompt_len", prompt_len), ("repeats", repeats)):
        positive_int(name, v)
    if not isinstance(new_tokens, int) or new_tokens < 2:
        raise ValueError(f"new_tokens={new_tokens!r} must be an integer >= 2 (one prefill token, then decode steps)")
    dev = next(model.parameters()).device
    ids = prompt_ids(vocab, 1, prompt_len, seed).to(dev)  # (1, T0)
    pad = resolve_pad_id(model, vocab)
    prefill, step = [], []
    for i in range(repeats + 1):
        stamps = _Stamps(dev)
        stamps.start()
        generate(model, ids, new_tokens, pad_id=pad, logits_processor=[stamps])
        if i:  # the first run warms up
            t = stamps.times  # t[0]: the call; t[k]: the logits of new token k
            prefill.append(t[1] - t[0])
            step.append(statistics.median(b - a for a, b in zip(t[1:], t[2:])))
    return {"dtype": dtype_label(model), "prompt_len": prompt_len, "new_tokens": new_tokens,
            "threads": torch.get_num_threads(), "prefill_ms": 1e3 * statistics.median(prefill),
            "decode_tokens_per_s": 1 / statistics.median(step),
            "bytes_per_token": weight_bytes_read_per_token(model)}


class _Stamps:
    """A transformers logits processor that changes nothing and stamps the time of each step."""

    def __init__(self, device):
        self.device, self.times = device, []

    def start(self):
        synchronize(self.device)
        self.times = [time.perf_counter()]

    def __call__(self, input_ids, scores):
        synchronize(self.device)
        self.times.append(time.perf_counter())
        return scores


def roofline_fraction(row: dict, bandwidth: float) -> dict:
    """``row`` with the batch-1 bound B / W (tokens/s) and the share of it that decode reached."""
    bound = bandwidth / row["bytes_per_token"]
    return row | {"bound_tokens_per_s": bound, "fraction": row["decode_tokens_per_s"] / bound}
