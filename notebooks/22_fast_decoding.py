# %% [markdown]
# # 22 · Case study 2, continued: fast decoding -- KV cache, batching and the roofline
#
# **Goal.** Generating text makes one forward pass per new token, and at batch 1 every weight is
# read from memory for a single multiply-add: decoding is **memory-bound**. Measure what the
# standard tools change -- the KV cache, batching, the attention kernel, a static cache (with
# `torch.compile` where the device supports it), and fewer bytes per weight (bf16, int8, NF4) --
# and compare the batch-1 speed with the bandwidth roofline: bytes of weights read per token
# divided by the memory bandwidth.
#
# **Prerequisites.** Notebook 00 (the roofline), notebook 21 (int8 / NF4 weights).
#
# **Runtime on the default** (`tiny-opt`, 2 CPU cores): about 1.5 minutes; peak memory about 1 GiB RSS.

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # model to decode with: tiny-opt (shipped), a local directory, or a Hub id such as facebook/opt-125m
batches: list = [1, 2, 4, 8, 16]  # batch sizes of the throughput sweep
no_cache_batches: list = [1, 4]  # batch sizes to run without KV cache (slow: it recomputes the prefix)
prompt_len: int = 32  # prompt tokens per sequence
new_tokens: int = 64  # tokens generated per sequence (exactly this many)
dtypes: list = ["float32", "bfloat16"]  # weight dtypes at batch 1
quantizations: list = ["int8", "nf4"]  # bitsandbytes weights at batch 1 (empty list: skip)
use_compile: str = "auto"  # static cache + torch.compile: auto (GPU only), yes, no
repeats: int = 3  # timed runs per setting (best of)
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds the prompts
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import matplotlib.pyplot as plt
import pandas as pd

import peakllm
from peakllm import models
from peakllm.core import checks, memory, roofline
from peakllm.infer import decoding

rec, dev = peakllm.setup("22_fast_decoding", globals())
batches, no_cache_batches = [int(b) for b in batches], [int(b) for b in no_cache_batches]
for k, v in dict(batches=min(batches + no_cache_batches), prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats).items():
    checks.positive_int(k, v)
checks.choices("dtypes", dtypes, models.DTYPES)
checks.choices("quantizations", quantizations, [m for m in models.QUANTIZATIONS if m != "none"])
checks.choice("use_compile", use_compile, ["auto", "yes", "no"])
for q in quantizations:
    models.bnb_config(q, dev)  # bitsandbytes present and able to run on this device

# %% [markdown]
# ## 1. Why decoding is memory-bound

# %%
print(decoding.__doc__)
model, tokenizer = models.load(model_name, device=str(dev), dtype="float32")  # the fp32 baseline on every device
ceiling = roofline.ceilings(dev)
roof = decoding.decode_roofline(model, ceiling=ceiling)
print(f"weights read per token: {memory.human(roof['bytes_per_token'])} ({roof['weights_per_token']:,} weights)")
print(f"memory bandwidth ({ceiling['source']}): {roof['bandwidth'] / 1e9:.1f} GB/s")
print(f"batch-1 bound B / W: {roof['ideal_tokens_per_s']:.0f} tok/s")

# %% [markdown]
# ## 2. The KV cache
#
# Without a cache, step t recomputes keys and values of all t earlier positions: the work per
# token grows with the length. With it, each step computes one position and reads the cached
# ones; the price is memory, `2 x layers x kv_heads x head_dim x tokens x batch x bytes`.

# %%
rows_cache = [decoding.benchmark_generate(model, tokenizer, b, prompt_len, new_tokens, use_cache=c, repeats=repeats)
              for b in no_cache_batches for c in (True, False)]
decoding.record_throughput(rec, rows_cache)
formula = decoding.kv_cache_bytes(model.config, 1, prompt_len + new_tokens - 1)
print(f"KV cache at batch 1 after {prompt_len} + {new_tokens} tokens: formula {memory.human(formula)}, "
      f"measured on the cache object {memory.human(rows_cache[0]['kv_cache_bytes'])}")
decoding.throughput_table(rows_cache)

# %% [markdown]
# ## 3. Batching
#
# A batch of b sequences shares each read of the weights, so throughput rises almost b-fold
# while decoding stays memory-bound, up to the compute ceiling. The dashed line is that bound,
# b x B / W.

# %%
rows_batch = decoding.throughput_grid(model, tokenizer, batches=batches, settings=[{"use_cache": True}],
                                      prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats)
rows_batch += [r for r in rows_cache if not r["kv_cache"]]
decoding.record_throughput(rec, [r for r in rows_batch if r["kv_cache"]])
ax = decoding.plot_throughput(rows_batch, roof, title=f"{model_name} on {dev.type}: decoding throughput")
decoding.throughput_table(rows_batch)

# %% [markdown]
# ## 4. The attention kernel and a static cache
#
# `sdpa` calls PyTorch's fused scaled-dot-product attention; `eager` is the plain matmul-softmax-
# matmul. A **static** cache is allocated once at its final length, which is what lets
# `torch.compile` capture the decoding step as one graph (CUDA graphs on a GPU).

# %%
want_compile = use_compile == "yes" or (use_compile == "auto" and dev.type == "cuda")
settings = [dict(attn="sdpa"), dict(attn="eager"), dict(static=True)]
if want_compile:
    settings.append(dict(static=True, compiled=True))
rows_attn = [decoding.benchmark_generate(model, tokenizer, 1, prompt_len, new_tokens, repeats=repeats, **s) for s in settings]
decoding.record_throughput(rec, rows_attn)
if not want_compile:
    print(f"torch.compile skipped: use_compile={use_compile!r} on {dev.type} (on a CPU it costs ~25 s of compilation per shape)")
decoding.throughput_table(rows_attn)

# %% [markdown]
# ## 5. Fewer bytes per weight, and the batch-1 roofline
#
# Batch-1 decoding time should follow the bytes read per token. The achieved fraction of the
# bound B / W says how close each format gets. On a CPU, bitsandbytes dequantizes in software and
# the tiny model fits in the cache, so the fractions are low and the ordering can invert; on a GPU
# with a real model the bytes win (see `data/results/gpu/`).

# %%
rows_w, roof_rows = [], []
variants = [(d, "none") for d in dtypes] + [("float32", q) for q in quantizations]
for dtype, q in variants:
    m = model if (dtype, q) == ("float32", "none") else models.load_model(model_name, device=str(dev), dtype=dtype, quantization=q)
    r = decoding.benchmark_generate(m, tokenizer, 1, prompt_len, new_tokens, repeats=repeats)
    rf = decoding.decode_roofline(m, achieved_tokens_per_s=r["tokens_per_s"], ceiling=ceiling)
    rows_w.append(r)
    roof_rows.append({"weights": r["dtype"], "bytes per token": memory.human(rf["bytes_per_token"]),
                      "bound B/W": f"{rf['ideal_tokens_per_s']:.0f} tok/s", "achieved": f"{r['tokens_per_s']:.0f} tok/s",
                      "fraction of roofline": f"{100 * rf['fraction']:.1f}% of this device"})
    rec.add("roofline_fraction", round(100 * rf["fraction"], 1), "% of this device", dtype=r["dtype"], batch=1)
    if m is not model:
        del m
decoding.record_throughput(rec, rows_w)
pd.DataFrame(roof_rows).set_index("weights")

# %% [markdown]
# ## 6. What a GPU changes
#
# On a GPU the same cells tell the textbook story: fp32 -> bf16 -> int8 -> NF4 each cut the bytes
# per token and raise batch-1 speed toward B / W; batching multiplies throughput until the compute
# ceiling; the static cache with `torch.compile` removes most of the per-step Python and launch
# overhead that dominates small models. Rerun with `-p device cuda` (and `-p model_name
# facebook/opt-125m` for a real model).

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Set `prompt_len` to 192 (the context is 256). How do the KV-cache bytes and the no-cache slowdown change?

# %% [markdown] tags=["solution"]
# **Solution 1.** The cache holds prompt + new - 1 = 255 positions instead of 95: 760 KiB x 255 / 95 = about 2.0 MiB at batch 1 (2 x 4 layers x 256 x 4 bytes = 8 KiB per token). Without a cache every step recomputes the whole prefix, now 192 to 255 tokens instead of 32 to 95, so the no-cache run slows down by roughly the ratio of prefix lengths while the cached run barely changes.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** From section 5, predict the batch-1 decoding speed of a 7B model in NF4 on an H100 (3.35 TB/s) and compare with the same model in bf16.

# %% [markdown] tags=["solution"]
# **Solution 2.** Bytes per token: bf16 6.74e9 x 2 = 13.5 GB; NF4 with double quantization about 6.74e9 x 4.19 / 8 = 3.5 GB. Bound B / W: bf16 3.35e12 / 13.5e9 = 248 tok/s; NF4 3.35e12 / 3.5e9 = about 950 tok/s, 3.8x faster if the kernel reaches the same fraction of bandwidth (real 4-bit kernels reach 50-80%).

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
