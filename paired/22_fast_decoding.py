# %% [markdown]
# # 22 · Case study 2, continued: fast decoding -- KV cache, batching and the roofline
#
# **Goal.** Generating text makes one forward pass per new token, and at batch 1 every weight is
# read from memory for a single multiply-add: decoding is **memory-bound**. Measure what the
# standard tools change -- the KV cache, batching, the attention kernel, a static cache (with
# `torch.compile` where the device supports it), and fewer bytes per weight (bf16, int8, NF4) --
# and compare the batch-1 speed with the bandwidth roofline: the memory bandwidth divided by the
# bytes of weights read per token. The tiny model shows the mechanisms; a model at OPT-125M's size
# shows the memory-bound regime itself.
#
# **Prerequisites.** Notebook 00 (the roofline), notebook 21 (int8 / NF4 weights).
#
# **Runtime on the default** (`tiny-opt`, then OPT-125M's shape; 2 CPU cores): about a minute; peak memory under 2 GiB RSS
# (the bandwidth measurement reads a buffer 4x the last-level cache, within a quarter of the free memory).

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # model to decode with: tiny-opt (shipped), a local directory, or a Hub id such as facebook/opt-125m
batches: list = [1, 2, 4, 8, 16]  # batch sizes of the throughput sweep
no_cache_batches: list = [1, 4]  # batch sizes to run without KV cache (slow: it recomputes the prefix)
prompt_len: int = 32  # prompt tokens per sequence
new_tokens: int = 64  # tokens generated per sequence (exactly this many)
dtypes: list = ["float32", "bfloat16"]  # weight dtypes at batch 1
quantizations: list = ["int8", "nf4"]  # bitsandbytes weights at batch 1 (empty list: skip)
shape: str = "opt-125m"  # a real model's shape with random weights for section 6: opt-125m, opt-350m, or "" to skip
shape_new_tokens: int = 16  # tokens decoded per timed run in section 6 (the first comes from the prefill)
threads: int = 0  # CPU threads for every timing (0: the scaffold's count, peakllm.core.hardware.cpu_threads())
use_compile: str = "auto"  # static cache + torch.compile: auto (GPU only), yes, no
repeats: int = 3  # timed runs per setting (best of; section 6: median)
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds the prompts
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch

import peakllm
from peakllm import models, show_source
from peakllm.core import checks, memory, roofline
from peakllm.infer import decoding, latency
from peakllm.models import shapes
from peakllm.workbook import gpuruns

rec, dev = peakllm.setup("22_fast_decoding", globals())
batches, no_cache_batches = [int(b) for b in batches], [int(b) for b in no_cache_batches]
for k, v in dict(batches=min(batches + no_cache_batches), prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats).items():
    checks.positive_int(k, v)
checks.choices("dtypes", dtypes, models.DTYPES)
checks.choices("quantizations", quantizations, [m for m in models.QUANTIZATIONS if m != "none"])
checks.choice("use_compile", use_compile, ["auto", "yes", "no"])
checks.choice("shape", shape, ["", *shapes.SHAPES])
checks.in_range("threads", threads, 0, 1025)
checks.in_range("shape_new_tokens", shape_new_tokens, 2, 10**6)
if threads:
    torch.set_num_threads(threads)  # fixed for every timing below
print(f"{torch.get_num_threads()} threads")
for q in quantizations:
    models.bnb_config(q, dev)  # bitsandbytes present and able to run on this device

# %% [markdown]
# ## 1. Why decoding is memory-bound

# %%
peakllm.show_doc(decoding)
model, tokenizer = models.load(model_name, device=str(dev), dtype="float32")  # the fp32 baseline on every device
ceiling = roofline.ceilings(dev)
roof = decoding.decode_roofline(model, ceiling=ceiling)
print(f"weights read per token: {memory.human(roof['bytes_per_token'])} ({roof['weights_per_token']:,} weights)")
print(f"memory bandwidth: {roof['bandwidth'] / 1e9:.1f} GB/s, {ceiling['source']}")
rec.add("bandwidth", round(roof["bandwidth"] / 1e9, 1), "GB/s", scope=ceiling["source"],
        buffer_bytes=ceiling.get("bandwidth_buffer_bytes"), threads=torch.get_num_threads())
print(f"batch-1 bound B / W: {roof['ideal_tokens_per_s']:.0f} tok/s")
if ceiling.get("gemv_bandwidth"):  # measured where no datasheet is known
    gemv = ceiling["gemv_bandwidth"]
    print(f"a matrix-vector product (decoding's kernel) streams its matrix at {gemv / 1e9:.1f} GB/s, "
          f"{gemv / roof['bandwidth']:.2f}x the plain read")
    rec.add("bandwidth", round(gemv / 1e9, 1), "GB/s", scope="matrix-vector product (F.linear, fp32)",
            threads=torch.get_num_threads())

# %% [markdown]
# ## 2. The KV cache
#
# Each attention layer mixes the positions with
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_\text{head}}}\right) V,$$
#
# per head, where row t of Q, K and V is position t's query, key and value (a linear map of its
# hidden state), and position t attends only to positions up to t. A position's key and value
# never change once computed, so at step t only the new token needs them: without a cache step
# t recomputes keys and values of all t earlier positions, and the work per token grows with the
# length; with it, each step computes one position and reads the cached ones. The price is memory,
#
# $$\text{KV bytes} = 2 \cdot n_\text{layers} \cdot n_\text{heads} \cdot d_\text{head} \cdot \text{seq} \cdot \text{batch} \cdot \text{bytes per value}$$
#
# (2: keys and values; n_heads counts the key/value heads, fewer than the query heads under
# grouped-query attention).
#
# **By hand, on one layer.** Run the prompt once with a cache and take layer 0 apart: its
# attention input is the layer norm of the hidden state entering the layer, and its keys and
# values are two linear maps of it, split into heads. Transformers keeps them in a
# `DynamicCache`, one entry per layer:

# %%
kv_model = model if model.config.model_type == "opt" and model.config.do_layer_norm_before else models.load("tiny-opt", device=str(dev))[0]  # the cells follow OPT's pre-norm layer
layer0 = kv_model.model.decoder.layers[0]
attn0 = layer0.self_attn
n_heads = kv_model.config.num_attention_heads
d_head = kv_model.config.hidden_size // n_heads
kv_ids = decoding.prompt_ids(tokenizer, 1, prompt_len, seed).to(dev)   # (1, T) the prompt
with torch.no_grad():
    pre = kv_model(kv_ids, use_cache=True, output_hidden_states=True)
    cache = pre.cache                                                   # transformers' cache object
    x = layer0.self_attn_layer_norm(pre.hidden_states[0])               # (1, T, d) layer 0's attention input
    K = attn0.k_proj(x).view(1, -1, n_heads, d_head).transpose(1, 2)     # (1, heads, T, d_head)
    V = attn0.v_proj(x).view(1, -1, n_heads, d_head).transpose(1, 2)
torch.testing.assert_close(K, cache.layers[0].keys)
torch.testing.assert_close(V, cache.layers[0].values)
print(f"{type(cache).__name__}: layer 0 holds keys {tuple(cache.layers[0].keys.shape)} and values "
      f"{tuple(cache.layers[0].values.shape)} (batch, heads, positions, d_head)")
print("keys and values by hand equal the cache's (assert_close): True")

# %% [markdown]
# One decoding step. The new token (greedy: the most likely one after the prompt) goes in alone
# with the cache; by hand, compute its query, key and value, **append** its key and value to those
# of the prompt, and let its query attend over the concatenation (the last position sees every
# earlier one: no mask needed). The rest of layer 0 -- output projection, residual, MLP -- gives the
# layer's output for the new token; and the whole model's logits for it must equal those of a
# run without a cache over the prompt plus the token:

# %%
with torch.no_grad():
    nxt = pre.logits[:, -1].argmax(-1, keepdim=True)                    # (1, 1) the next token
    step = kv_model(nxt, cache=cache, use_cache=True, output_hidden_states=True)   # the cached step
    x_new = layer0.self_attn_layer_norm(step.hidden_states[0])          # (1, 1, d)
    q = (attn0.q_proj(x_new) * attn0.scaling).view(1, 1, n_heads, d_head).transpose(1, 2)  # (1, heads, 1, d_head), scaled by 1/sqrt(d_head)
    K = torch.cat([K, attn0.k_proj(x_new).view(1, 1, n_heads, d_head).transpose(1, 2)], dim=2)  # (1, heads, T+1, d_head)
    V = torch.cat([V, attn0.v_proj(x_new).view(1, 1, n_heads, d_head).transpose(1, 2)], dim=2)
    a = torch.softmax(q @ K.transpose(-1, -2), dim=-1)                  # (1, heads, 1, T+1) attention weights
    o = (a @ V).transpose(1, 2).reshape(1, 1, n_heads * d_head)          # (1, 1, d) heads concatenated
    h = step.hidden_states[0] + attn0.out_proj(o)                        # residual
    h = h + layer0.fc2(layer0.activation_fn(layer0.fc1(layer0.final_layer_norm(h))))  # MLP, residual
    uncached = kv_model(torch.cat([kv_ids, nxt], dim=1), use_cache=False)  # the whole sequence again, no cache
torch.testing.assert_close(K, cache.layers[0].keys)
torch.testing.assert_close(V, cache.layers[0].values)
torch.testing.assert_close(h, step.hidden_states[1], atol=1e-4, rtol=1e-4)
torch.testing.assert_close(step.logits[:, -1], uncached.logits[:, -1], atol=1e-4, rtol=1e-4)
print(f"after one step the cache holds {cache.layers[0].keys.shape[2]} positions; appended by hand: equal (assert_close)")
print("layer 0's output for the new token, by hand vs the model: equal to 1e-4")
print("logits of the cached step vs a forward pass without cache: equal to 1e-4")
print(f"cache bytes: {decoding.cache_bytes(cache):,} on the cache object, "
      f"{decoding.kv_cache_bytes(kv_model.config, 1, prompt_len + 1):,} by the formula")
assert decoding.cache_bytes(cache) == decoding.kv_cache_bytes(kv_model.config, 1, prompt_len + 1)
del kv_model, pre, step, uncached, cache

# %% [markdown]
# Now timed: generation with and without the cache, at batch 1 and 4.

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
# bound B / W says how close each format gets. For the tiny model the weights fit in the CPU's
# last-level cache and Python's per-step overhead weighs on every step, so its fractions say little
# about memory; bitsandbytes' int8 and NF4 layers also dequantize in software on a CPU.
# Section 6 repeats the measurement at a size where memory sets the pace.
#
# The `regime` column names the limit each step sits at, from its figures alone (`roofline.regime`): the step's least time is the larger of bytes / B and FLOPs / P; a step within twice that is **memory-bound** or **compute-bound**, a slower one spends most of its time on neither -- a Python step, dozens of kernel launches or operator dispatches per token -- and is **launch-bound**. On a CPU the matrix-vector product that reads the weights streams below B (section 1 measures its rate); a step within twice bytes / that rate is memory-bound at the **matrix-vector rate**: memory still sets the pace, the kernel just reads it more slowly than a plain sum does.

# %% tags=["nbval-ignore-output"]
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
    reg = decoding.decode_regime(m, r["tokens_per_s"], ceiling)  # which limit the step sits at
    roof_rows[-1]["regime"] = reg["regime"] + (" (matrix-vector rate)" if reg["at"] != "read bandwidth" else "")
    rec.add("roofline_fraction", round(100 * rf["fraction"], 1), "% of this device", dtype=r["dtype"], batch=1)
    rec.add("regime", reg["regime"], "", dtype=r["dtype"], batch=1, at=reg["at"])
    if m is not model:
        del m
decoding.record_throughput(rec, rows_w)
pd.DataFrame(roof_rows).set_index("weights")

# %% tags=["nbval-ignore-output"]
speeds = {r["dtype"]: r["tokens_per_s"] for r in rows_w}
shares = {d: rec.value("roofline_fraction", dtype=d, batch=1, model=None) for d in speeds}  # section 6's carry model=shape
fastest, slowest = max(speeds, key=speeds.get), min(speeds, key=speeds.get)
spread = speeds[fastest] / speeds[slowest]
several = len(shares) > 1
text = (f"For `{model_name}` the format{'s reach' if several else ' reaches'} " + ", ".join(f"{d} {s:.0f}%" for d, s in shares.items())
        + f" of {'their bounds' if several else 'its bound'}"
        + (f": {'small fractions, all' if several else 'a small fraction,'} under half." if max(shares.values()) < 50 else
           f": {'not all small, up to' if several else 'not a small fraction:'} {max(shares.values()):.0f}%."))
if several:
    text += (f" The fastest, {fastest} at {speeds[fastest]:.0f} tok/s, is {spread:.2f}x the slowest, {slowest} at "
             f"{speeds[slowest]:.0f} tok/s: " + ("the formats barely differ." if spread < 1.25 else "the formats differ."))
if several and fastest == "float32":
    text += " The format that reads the most bytes per token, float32, is the fastest: at this size the bytes do not set the pace."
peakllm.say(text)

# %% [markdown]
# ## 6. At real sizes: the memory-bound regime
#
# A model is memory-bound at batch 1 only when its weights are far larger than the caches. We
# build OPT-125M's shape (or OPT-350M's: `-p shape opt-350m`) with **random weights** -- decoding
# speed depends on the shapes and the bytes, never on the values -- and time the two phases of a
# request apart (`peakllm.infer.latency`): the prefill (the prompt in one forward pass: time to
# first token) and the decode (one forward pass per further token), each the median of
# `repeats` runs at a fixed thread count.

# %%
show_source(latency.prefill_and_decode)

# %% tags=["nbval-ignore-output"]
shape_rows = []
for dtype in (dtypes if shape else []):
    m = shapes.shape_only(shape, device=dev, dtype=models.DTYPES[dtype], seed=seed)
    r = latency.roofline_fraction(latency.prefill_and_decode(m, m.config.vocab_size, prompt_len, shape_new_tokens,
                                                             repeats=repeats, seed=seed), roof["bandwidth"])
    shape_rows.append(r)
    rec.add("prefill_ms", round(r["prefill_ms"], 1), "ms", model=shape, dtype=dtype, batch=1, prompt_len=prompt_len,
            threads=r["threads"])
    rec.add("decode_tokens_per_s", round(r["decode_tokens_per_s"], 1), "tok/s", model=shape, dtype=dtype, batch=1,
            threads=r["threads"])
    rec.add("roofline_fraction", round(100 * r["fraction"], 1), "% of this device", model=shape, dtype=dtype, batch=1)
    reg = decoding.decode_regime(m, r["decode_tokens_per_s"], ceiling)
    r["regime"] = reg["regime"] + (" (matrix-vector rate)" if reg["at"] != "read bandwidth" else "")
    rec.add("regime", reg["regime"], "", model=shape, dtype=dtype, batch=1, at=reg["at"])
    del m
if shape_rows:
    display(pd.DataFrame([{"weights": r["dtype"], "read per token": memory.human(r["bytes_per_token"]),
                           "prefill (time to first token)": f"{r['prefill_ms']:.0f} ms",
                           "decode": f"{r['decode_tokens_per_s']:.1f} tok/s",
                           "bound B/W": f"{r['bound_tokens_per_s']:.1f} tok/s",
                           "fraction of roofline": f"{100 * r['fraction']:.0f}% of this device",
                           "regime": r["regime"]} for r in shape_rows])
            .set_index("weights"))
    fig, ax = plt.subplots(figsize=(6, 3))
    x = range(len(shape_rows))
    ax.bar([i - 0.2 for i in x], [r["bound_tokens_per_s"] for r in shape_rows], 0.4, label="bound B / W", color="lightgrey")
    ax.bar([i + 0.2 for i in x], [r["decode_tokens_per_s"] for r in shape_rows], 0.4, label="measured decode")
    ax.set(xticks=list(x), xticklabels=[r["dtype"] for r in shape_rows], ylabel="tokens/s",
           title=f"{shape} (random weights), batch 1, {dev.type}")
    ax.legend(); fig.tight_layout(); plt.show()
else:
    print("skipped: shape is empty")

# %% [markdown]
# Read each format's decode speed against its own bound. A format close to its bound is
# memory-bound: it reads weights as fast as the memory delivers them, and only fewer bytes per
# weight make it faster. A format far below its bound is limited by something else, its
# arithmetic: on a CPU, 16-bit matrix-vector products need not run at memory speed even where
# the CPU has bf16 instructions (notebook 00 prints whether this one has), and then half the
# bytes do not buy twice the speed. The prefill
# of the prompt multiplies matrices instead of vectors: it reads each weight once for all
# `prompt_len` tokens.

# %% tags=["nbval-ignore-output"]
if shape_rows:
    by_dtype = {r["dtype"]: r for r in shape_rows}
    text = f"At {shape}'s size " + "; ".join(
        f"{d} decodes at {r['decode_tokens_per_s']:.1f} tok/s, {100 * r['fraction']:.0f}% of its bound" for d, r in by_dtype.items()) + "."
    if any(r["fraction"] > 1 for r in shape_rows):
        text += (" A share above 100% means decoding streamed the weights faster than the bandwidth B measured in "
                 "section 1: that B understates what this machine delivered here, and the bound with it.")
    if "float32" in by_dtype and "float32" in shares:
        here, tiny = 100 * by_dtype["float32"]["fraction"], shares["float32"]
        text += (f" The fp32 row reaches {here:.0f}% of its bound against {tiny:.0f}% for `{model_name}` in section 5: "
                 + ("closer to the bound." if abs(100 - here) < abs(100 - tiny) else "no closer to the bound."))
    if "float32" in by_dtype and "bfloat16" in by_dtype:
        ratio = by_dtype["bfloat16"]["decode_tokens_per_s"] / by_dtype["float32"]["decode_tokens_per_s"]
        if ratio > 2.2:
            bf16_text = "more than twice, more than the halved bytes alone would buy."
        elif ratio >= 1.8:
            bf16_text = "close to twice, as the bytes predict."
        else:
            bf16_text = "half the bytes do not buy twice the speed here."
        text += f" bf16 reads half the bytes of fp32 and decodes at {ratio:.2f}x its speed: {bf16_text}"
    for d, r in by_dtype.items():
        steps_equal = r["prefill_ms"] / 1e3 * r["decode_tokens_per_s"]  # the prefill's time in decode steps
        text += (f" In {d} the prefill of the {prompt_len}-token prompt takes {r['prefill_ms']:.0f} ms, as long as "
                 f"{steps_equal:.1f} decode steps" + (f", although it processes {prompt_len} tokens." if steps_equal < prompt_len
                                                       else f": no cheaper than {prompt_len} decode steps."))
    peakllm.say(text)

# %% [markdown]
# ## 7. What a GPU changes
#
# Rerun with `-p device cuda`. The runs of this notebook on a GPU that are on record
# (`python -m peakllm gpucheck` writes them to `data/results/gpu/`) appear here:

# %%
gpu_runs = gpuruns.stored_records("22_fast_decoding", ["decode_tokens_per_s", "roofline_fraction", "prefill_ms"])
if gpu_runs is None:
    print("no GPU run on record yet (python -m peakllm gpucheck on a CUDA machine writes one)")
else:
    display(gpu_runs[[k for k in ("card", "metric", "model", "dtype", "batch", "value", "unit") if k in gpu_runs]])
    fr = gpu_runs[gpu_runs.metric == "roofline_fraction"] if "metric" in gpu_runs else None
    if fr is not None and len(fr):  # at batch 1 the arithmetic is far below a GPU's peak: memory or launches
        print("regimes on record: " + "; ".join(
            f"{row['model'] if isinstance(row.get('model'), str) else row['params']['model_name']} {row['dtype']}: {row['value']:.1f}% of the bound, "
            # in units of the step: its bytes take `fraction` of it (a record rounded to 0.0% is under 0.05%)
            + roofline.regime(1.0, max(row["value"], 0.01) / 100, 0.0, 1.0, None)["regime"]
            for _, row in fr.iterrows()))

# %% [markdown]
# ## Lab: one cached attention step
#
# Write the step section 2 took apart, as a function: the attention of **one new token** with a KV
# cache (Vaswani et al. 2017, section 3.2.1, applied to the newest position only). Given the new
# token's query, key and value, $q, k, v \in \mathbb{R}^{d_\text{head}}$ per head, and the cache of
# the $t$ earlier positions, $K_\text{cache}, V_\text{cache} \in \mathbb{R}^{t \times d_\text{head}}$ per
# head:
#
# $$K = \begin{bmatrix} K_\text{cache} \\ k^\top \end{bmatrix}, \quad V = \begin{bmatrix} V_\text{cache} \\ v^\top \end{bmatrix} \in \mathbb{R}^{(t+1) \times d_\text{head}}, \qquad \mathrm{out} = \mathrm{softmax}\!\left(\frac{q^\top K^\top}{\sqrt{d_\text{head}}}\right) V .$$
#
# `cached_attention_step(q, k, v, K_cache, V_cache)` takes tensors of shape (batch, heads, 1,
# d_head) for `q`, `k`, `v` and (batch, heads, t, d_head) for the cache, and returns `out` (batch,
# heads, 1, d_head) and the updated `K`, `V` (batch, heads, t + 1, d_head).
#
# Hints: positions are dimension 2 (`torch.cat(..., dim=2)`); every head at once is a batched
# matmul, `q @ K.transpose(-1, -2)`; `q` comes unscaled, so divide by $\sqrt{d_\text{head}}$
# yourself; the newest position may attend to every earlier one, so no mask is needed; a softmax by
# hand subtracts the row's maximum before `exp`.
#
# The inputs are layer 0 of the shipped `tiny-opt` on the CPU, for two seeded prompts of
# `prompt_len` tokens and one new token each: the prompt's keys and values (what the cache holds
# after the prefill) and the new token's $q, k, v$ from the layer's projections. The check compares
# your output with transformers' attention in a pass over the whole sequence without a cache (the
# new token's row) and your updated cache with transformers' own cache after its cached step; it
# checks that the cache grew by exactly one position, the earlier ones untouched, and prints what a
# step costs with and without the cache as $t$ grows.

# %% nbgrader={"grade": false, "grade_id": "lab-22-kvstep", "locked": false, "schema_version": 3, "solution": true}
import math

lab_model, lab_tokenizer = models.load("tiny-opt", device="cpu", dtype="float32")  # the shipped tiny OPT
attn_lab = lab_model.model.decoder.layers[0].self_attn
heads_lab = lab_model.config.num_attention_heads
d_head_lab = lab_model.config.hidden_size // heads_lab
ids_lab = decoding.prompt_ids(lab_tokenizer, 2, prompt_len + 1, seed)  # (2, T + 1): 2 prompts of T tokens, then a new token each


def heads_of_lab(t):  # (batch, n, heads * d_head) -> (batch, heads, n, d_head)
    return t.view(t.shape[0], t.shape[1], heads_lab, d_head_lab).transpose(1, 2)


with torch.no_grad():
    emb_lab = lab_model(ids_lab, use_cache=False, output_hidden_states=True).hidden_states[0]  # (2, T + 1, d) into layer 0
    xs_lab = lab_model.model.decoder.layers[0].self_attn_layer_norm(emb_lab)  # (2, T + 1, d): layer 0's attention input
    K_cache_lab = heads_of_lab(attn_lab.k_proj(xs_lab[:, :-1]))  # (2, heads, T, d_head): the prompt's keys
    V_cache_lab = heads_of_lab(attn_lab.v_proj(xs_lab[:, :-1]))  # (2, heads, T, d_head): and values
    q_lab = heads_of_lab(attn_lab.q_proj(xs_lab[:, -1:]))        # (2, heads, 1, d_head): the new token's query, unscaled
    k_lab = heads_of_lab(attn_lab.k_proj(xs_lab[:, -1:]))        # (2, heads, 1, d_head)
    v_lab = heads_of_lab(attn_lab.v_proj(xs_lab[:, -1:]))        # (2, heads, 1, d_head)


def cached_attention_step(q, k, v, K_cache, V_cache):
    """One decoding step of attention for a new token, with a KV cache.

    q, k, v:          (batch, heads, 1, d_head)  the new token's query (unscaled), key and value
    K_cache, V_cache: (batch, heads, t, d_head)  keys and values of the t earlier positions
    returns out (batch, heads, 1, d_head) = softmax(q K^T / sqrt(d_head)) V over all t + 1 positions,
    and the updated K, V (batch, heads, t + 1, d_head).
    """
    ### BEGIN SOLUTION
    K = torch.cat([K_cache, k], dim=2)                    # (b, h, t + 1, d_head): append the new key
    V = torch.cat([V_cache, v], dim=2)                    # (b, h, t + 1, d_head): and the new value
    d_head = q.shape[-1]
    scores = q @ K.transpose(-1, -2) / math.sqrt(d_head)  # (b, h, 1, t + 1): the new query against every position
    scores = scores - scores.amax(-1, keepdim=True)       # softmax by hand: subtract the row's maximum
    weights = scores.exp()
    weights = weights / weights.sum(-1, keepdim=True)     # (b, h, 1, t + 1), no mask: the newest sees all
    out = weights @ V                                     # (b, h, 1, d_head)
    return out, K, V
    ### END SOLUTION


with torch.no_grad():
    out_lab, K_new_lab, V_new_lab = cached_attention_step(q_lab, k_lab, v_lab, K_cache_lab, V_cache_lab)
print(f"cache {tuple(K_cache_lab.shape)} -> {tuple(K_new_lab.shape)}; out {tuple(out_lab.shape)}")

# %% nbgrader={"grade": true, "grade_id": "lab-22-kvstep-check", "locked": true, "points": 4, "schema_version": 3, "solution": false} tags=["check"]
from peakllm.workbook import labs

seen_lab = []  # the input of layer 0's out_proj: the attention output, heads concatenated
hook_lab = attn_lab.out_proj.register_forward_pre_hook(lambda mod, args: seen_lab.append(args[0].detach().clone()))
try:
    with torch.no_grad():
        lab_model(ids_lab, use_cache=False)                              # the whole sequence, no cache
        pre_lab = lab_model(ids_lab[:, :-1], use_cache=True)             # transformers' prefill of the prompt ...
        lab_model(ids_lab[:, -1:], cache=pre_lab.cache, use_cache=True)  # ... and its own cached step
finally:
    hook_lab.remove()
t_lab = K_cache_lab.shape[2]
labs.close("out (the new token's attention output)", out_lab, heads_of_lab(seen_lab[0][:, -1:]), rtol=1e-4)
labs.outcome(K_new_lab.shape[2] == t_lab + 1 and V_new_lab.shape[2] == t_lab + 1,
             f"your updated cache holds {K_new_lab.shape[2]} keys and {V_new_lab.shape[2]} values, not t + 1 = {t_lab + 1}")
labs.outcome(torch.equal(K_new_lab[:, :, :t_lab], K_cache_lab) and torch.equal(V_new_lab[:, :, :t_lab], V_cache_lab),
             "the earlier positions of your updated cache differ from K_cache, V_cache: a step only appends")
labs.close("K (updated cache)", K_new_lab, pre_lab.cache.layers[0].keys, rtol=1e-4)
labs.close("V (updated cache)", V_new_lab, pre_lab.cache.layers[0].values, rtol=1e-4)

# what the cache saves: multiply-adds of layer 0's attention for the token after t positions (per sequence), from the shapes
d_lab = heads_lab * d_head_lab
for n_lab in (t_lab, 2 * t_lab, 4 * t_lab):
    mix_lab = 2 * d_lab * (n_lab + 1)         # q K^T and weights V over t + 1 positions, all heads
    cached_lab = 4 * d_lab * d_lab + mix_lab  # + the q, k, v and out projections of the new token only
    recompute_lab = 4 * d_lab * d_lab * (n_lab + 1) + d_lab * (n_lab + 1) * (n_lab + 2)  # all positions again, causal attention
    print(f"t = {n_lab:4d}: with the cache {cached_lab:>9,} multiply-adds ({mix_lab:>7,} of them over the cache: linear in t), "
          f"without {recompute_lab:>11,} ({recompute_lab / cached_lab:5.1f}x)")
labs.passed("one cached attention step")

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Set `prompt_len` to 192 (the context is 256). How do the KV-cache bytes and the no-cache slowdown change?

# %% [markdown] tags=["solution"]
# **Solution 1.** The cache holds prompt + new - 1 positions: 255 instead of 95, so its bytes grow by 255/95 at every batch size (`decoding.kv_cache_bytes(model.config, 1, 255)` gives the figure: 2 x layers x hidden x 4 bytes per position). Without a cache every step recomputes the whole prefix, now 192 to 255 tokens instead of 32 to 95, so the no-cache run slows down by roughly the ratio of prefix lengths while the cached run barely changes.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** From sections 5 and 6, predict the batch-1 decoding speed of a 7B model (6.74e9 weights) in NF4 on an H100 (3.35e12 bytes/s), and compare it with the same model in bf16.

# %% [markdown] tags=["solution"]
# **Solution 2.** The bound is B / W with W the bytes read per token: bf16 reads 6.74e9 x 2 bytes; NF4 with double quantization reads 6.74e9 x b / 8 bytes, with b its bits per weight including the block constants (notebook 21's table) -- a little over 4, so NF4's bound is almost 4x bf16's. Evaluate `3.35e12 / (6.74e9 * 2)` and `3.35e12 / (6.74e9 * b / 8)`. Whether a real run gets there depends on the share of the bound its kernels reach -- the fraction section 6 measures; for a GPU, measure it there (section 7).

# %% [markdown]
# **Exercise 3 (code).** How much memory does OPT-125M's KV cache take for one sequence of 2048
# tokens (its full context) in fp16 (2 bytes per value)? `opt125` holds its configuration values
# (`num_hidden_layers`, `num_attention_heads`, `hidden_size`). Compute `kv_125m` in bytes from the
# formula of section 2.

# %% nbgrader={"grade": false, "grade_id": "ex22-1", "locked": false, "schema_version": 3, "solution": true, "task": false}
opt125 = shapes.SHAPES["opt-125m"]            # OPT-125M's configuration (a dict)
### BEGIN SOLUTION
d_head_125m = opt125["hidden_size"] // opt125["num_attention_heads"]
kv_125m = 2 * opt125["num_hidden_layers"] * opt125["num_attention_heads"] * d_head_125m * 2048 * 2
### END SOLUTION
print(f"OPT-125M, 2048 tokens, fp16: {kv_125m:,} bytes ({memory.human(kv_125m)}) per sequence")

# %% nbgrader={"grade": true, "grade_id": "ex22-1-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
from transformers import AutoConfig

assert kv_125m == decoding.kv_cache_bytes(AutoConfig.for_model(**opt125), 1, 2048, "float16")
print("checks passed")

# %% [markdown]
# ## Key takeaways

# %% tags=["nbval-ignore-output"]
from transformers import AutoConfig

kv_opt125 = decoding.kv_cache_bytes(AutoConfig.for_model(**shapes.SHAPES["opt-125m"]), 1, 2048, "float16")
d = "float32" if "float32" in dtypes else (dtypes or [""])[0]
if shape and d:
    tiny_share = rec.value("roofline_fraction", dtype=d, batch=1, model=None)
    shape_share = 100 * next(r["fraction"] for r in shape_rows if r["dtype"] == d)  # as section 6's table rounds it
    if shape_share > 100:
        verdict = "above the bound, so this run's bandwidth measurement (section 1) understates what decoding streamed"
    elif abs(100 - shape_share) < abs(100 - tiny_share):
        verdict = "the larger model comes closer to the bound"
    else:
        verdict = "the larger model comes no closer to the bound"
    approach = (f" In {d} the measured speed reached {tiny_share:.0f}% of the bound for `{model_name}` (section 5) "
                f"and {shape_share:.0f}% at {shape}'s size (section 6): {verdict}.")
else:
    approach = " Section 6, which compares the speed with the bound at a real model's size, was skipped in this run."
peakllm.say(f"""
* The KV cache is each attention layer's keys and values of the positions seen so far. Built by
  hand on layer 0 of the model -- the prompt's keys and values once, the new token's appended,
  its query attending over the concatenation -- it equals transformers' `DynamicCache`, and the
  cached step's logits equal those of a pass over the whole sequence without a cache (to 1e-4).
* Its size is a formula, 2 · layers · heads · d_head · positions · batch · bytes: {formula:,} bytes
  for the {prompt_len + new_tokens - 1} positions of a batch-1 generation of `{model_name}` here, and
  {memory.human(kv_opt125)} for one 2048-token sequence of OPT-125M in fp16 (exercise 3) -- linear in
  batch and context, while the weights stay the same.
* Without the cache each step recomputes the whole prefix: section 2's table measures what that
  costs at batch {" and ".join(str(b) for b in no_cache_batches)}.
* At batch 1 every weight is read once per token, so bytes per token set the bound B / W (section
  5); batching shares that read (section 3).{approach}
""")

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
