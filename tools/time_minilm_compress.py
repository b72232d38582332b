"""Time notebook 13's whole-model compressions of all-MiniLM-L6-v2 (SparseGPT 50% and 2:4, GPTQ 4 and
3 bits, the notebook's 128 calibration lines of seed 0), the median of 2 runs each, and print them
with their total. For before/after claims, run it under two trees in turn on the same machine:

    PYTHONPATH=/path/to/old/lib .venv/bin/python tools/time_minilm_compress.py
    .venv/bin/python tools/time_minilm_compress.py
"""
import copy
import statistics

import torch

from peakllm import models
from peakllm.compress import gptq, pruning
from peakllm.core.timing import Timer
from peakllm.data import evaldata

RUNS = {
    "sparsegpt 50%": lambda m, c: pruning.prune(m, c, "sparsegpt", 0.5, pattern="unstructured", progress=False),
    "sparsegpt 2:4": lambda m, c: pruning.prune(m, c, "sparsegpt", 0.5, pattern="2:4", progress=False),
    "gptq 4-bit": lambda m, c: gptq.quantize_model(m, c, method="gptq", bits=4, progress=False),
    "gptq 3-bit": lambda m, c: gptq.quantize_model(m, c, method="gptq", bits=3, progress=False),
}

if __name__ == "__main__":
    torch.manual_seed(0)
    model, tokenizer = models.load("minilm", device="cpu")
    calib = evaldata.calibration_lines(tokenizer, 128, seed=0)
    seconds = {}
    for name, run in RUNS.items():
        times = []
        for _ in range(2):
            m = copy.deepcopy(model)  # outside the timer
            with Timer("cpu") as t:
                run(m, calib)
            times.append(t.seconds)
        seconds[name] = statistics.median(times)
    print(" ".join(f"{k}: {v:.3f} s" for k, v in seconds.items()), f"| total {sum(seconds.values()):.3f} s")
