"""One row of a "compressed model" table: its size, its quality and its speed, measured alike
for every method (bitsandbytes formats, RTN, GPTQ) so the rows can be compared."""
from __future__ import annotations

import torch

from ..core import memory
from ..core.perplexity import perplexity
from ..core.timing import best_of


def model_row(model, method: str, bits, eval_ids: dict[str, torch.Tensor], x: torch.Tensor | None, seqlen: int,
              stored_bytes: int | None = None, linear_bits: float | None = None) -> dict:
    """``method``, ``bits``, bytes of the weights as stored, bits per linear-layer weight (with
    quantization constants), perplexity on each evaluation text, and the best-of-3 forward time
    on the batch ``x`` (a string with its unit: it varies from run to run). ``x=None`` skips the
    timing, for a model whose forward is the dense one (rounded values held in fp32 tensors).

    ``stored_bytes`` / ``linear_bits``: the packed size of a grid-quantized model, whose weights
    are held in fp32 here after simulated quantization; measured from the tensors otherwise.
    """
    b, n = memory.linear_weights(model)  # before any forward: bitsandbytes repacks some weights at the first one
    row = {"method": method, "bits": str(bits),
           "weight bytes": stored_bytes if stored_bytes is not None else memory.weight_bytes(model),
           "bits/param (linear)": round(linear_bits if linear_bits is not None else 8 * b / n, 3)}
    for d, ids in eval_ids.items():
        row[f"ppl {d}"] = round(perplexity(model, ids, seqlen, progress=False), 3)
    if x is None:
        row["forward"] = "as dense"
        return row
    with torch.inference_mode():
        row["forward"] = f"{best_of(lambda: model(input_ids=x), device=x.device) * 1000:.1f} ms"
    return row
