"""Fast decoding: why generating tokens is memory-bound, and what the KV cache buys.

Autoregressive decoding makes one forward pass per new token. At batch 1 every weight matrix
is read from memory once per token and used for just one multiply-add per weight
(2 FLOPs), so the arithmetic intensity is I = 2 / (bytes per weight): far left of any device's
ridge point (see ``peakllm.core.roofline``). The roofline then bounds the decoding speed by the
memory bandwidth B alone:

    tokens/s  <=  B / W,        W = bytes of weights read per token,

and a batch of b sequences shares that one read, so b tokens per step cost about the same time
(tokens/s <= b B / W) until the compute ceiling P / (2 N) is reached (N weights per token).
Fewer bytes per weight (bf16, int8, nf4) raise the bound; batching raises the throughput.

The KV cache (keys and values of every past position, kept per layer) turns the O(T^2)
recomputation of the prefix at each of T steps into O(T) work: step t computes only the new
position's q, k, v and attends to the t cached ones. Its price is memory,

    KV = 2 (keys and values) x layers x kv_heads x head_dim x seq_len x batch x bytes,

which grows with batch and context while the weights stay fixed.

Caveats on a CPU: the shipped tiny model (17 MB in fp32) fits in a server's last-level cache, so
its weights are read from the cache, not from memory, and Python overhead per step dominates a
model that small: its fraction of the roofline says little. The memory-bound regime needs
weights far larger than the cache -- ``peakllm.models.shapes`` builds OPT-125M / OPT-350M
shapes with random weights for that, and ``peakllm.infer.latency`` times their prefill and
decode apart. ``roofline.ceilings`` measures bandwidth on a buffer of 4x the last-level cache.
"""
from __future__ import annotations

import math
import shutil

import torch

from ..compat import compile_config
from ..core import memory
from ..core.checks import choice, positive_int
from ..core.hardware import resolve_device
from ..core.roofline import ceilings
from ..core.timing import best_of
from ..core.units import nbytes
from ..models.loading import DTYPES
from ..models.moe import is_moe, routing

ATTN = ("eager", "sdpa")
SETTING_KEYS = ("use_cache", "attn", "static", "compiled")


# --- bytes ------------------------------------------------------------------------------------

def _attn_shape(config) -> tuple[int, int, int]:
    """(layers L, kv_heads H_kv, head_dim d_h) of a decoder config (OPT, Llama, Mixtral, ...)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    H = cfg.num_attention_heads
    H_kv = getattr(cfg, "num_key_value_heads", None) or H  # grouped-query attention: H_kv < H
    d_h = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    return cfg.num_hidden_layers, H_kv, d_h


def kv_cache_bytes(config, batch: int, seq_len: int, dtype="float32") -> int:
    """2 * L * H_kv * d_h * T * B * bytes: the keys and values of T positions (full attention)."""
    positive_int("batch", batch)
    positive_int("seq_len", seq_len)
    if not isinstance(dtype, torch.dtype):
        choice("dtype", dtype, DTYPES)
        dtype = DTYPES[dtype]
    L, H_kv, d_h = _attn_shape(config)
    return 2 * L * H_kv * d_h * seq_len * batch * dtype.itemsize


def cache_bytes(cache) -> int:
    """Bytes of the key and value tensors a transformers cache object holds (0 for None)."""
    if cache is None:
        return 0
    if hasattr(cache, "layers"):  # transformers >= 4.56: cache.layers[i].keys / .values
        kv = [t for layer in cache.layers for t in (layer.keys, layer.values)]
    else:  # legacy tuple of (key, value) per layer
        kv = [t for layer in cache for t in layer[:2]]
    return sum(nbytes(t) for t in kv if torch.is_tensor(t))


def _stored(p: torch.Tensor, seen: set) -> int:
    """Bytes of a parameter as stored (``memory.stored``), each storage once."""
    total = 0
    for t in memory.stored(p):
        if t.numel() and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += nbytes(t)
    return total


def _weights_read(model) -> tuple[int, int]:
    """(bytes, weights) one batch-1 decoding step reads: every parameter in full, except that an
    embedding table is read one row per token (a tied lm_head still reads the whole matrix) and
    MoE experts are read in the fraction top_k / n_experts."""
    cfg = model.config
    E, k = routing(cfg) if is_moe(cfg) else (1, 1)
    moe = k / E  # share of the experts a token reads
    tables = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    full = {id(p): p for m in model.modules() if not isinstance(m, torch.nn.Embedding)
            for p in m.parameters(recurse=False)}  # includes a tied lm_head's weight
    seen, nbytes, numel = set(), 0.0, 0.0
    for name, p in model.named_parameters():
        if id(p) in full:
            f = moe if ".experts." in name else 1.0
            nbytes, numel = nbytes + f * _stored(p, seen), numel + f * memory.represented(p)
    for E in tables.values():  # (vocab, d): one row of d per token
        nbytes += E.shape[-1] * E.element_size()
    return round(nbytes), round(numel)


def weight_bytes_read_per_token(model) -> int:
    """W: bytes of weights read per batch-1 decoding step (quantized weights at stored size)."""
    return _weights_read(model)[0]


def dtype_label(model) -> str:
    """'float32', 'bfloat16', 'int8', 'nf4' or 'fp4': how the model's weights are stored."""
    for p in model.parameters():
        if type(p).__name__ == "Int8Params":
            return "int8"
        if type(p).__name__ == "Params4bit":
            return p.quant_type
    return str(model.dtype).removeprefix("torch.")


# --- generation ---------------------------------------------------------------------------------

def _special_ids(vocab) -> tuple[int, int]:
    """(vocab size V, first ordinary id) from a tokenizer or a vocabulary size."""
    if isinstance(vocab, int):
        return vocab, 0
    ids = [i for i in (vocab.pad_token_id, vocab.eos_token_id, vocab.bos_token_id) if i is not None]
    return len(vocab), min(max(ids, default=-1) + 1, len(vocab) // 2)


def resolve_pad_id(model, vocab) -> int:
    """The pad id generate is told (so it does not warn that it picked one itself)."""
    for src in (vocab, model.generation_config, model.config):
        for key in ("pad_token_id", "eos_token_id"):
            i = getattr(src, key, None)
            i = i[0] if isinstance(i, list) else i
            if i is not None:
                return i
    return 0


def prompt_ids(vocab, batch: int, prompt_len: int, seed: int = 0) -> torch.Tensor:
    """Fixed random prompts (B, T0), reproducible by seed (from a tokenizer: no pad/bos/eos ids)."""
    V, low = _special_ids(vocab)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, V, (batch, prompt_len), generator=g)


def set_attention(model, attn: str) -> None:
    """Switch every attention layer to ``attn`` ('eager' or 'sdpa') and check that it switched."""
    choice("attn", attn, ATTN)
    if model.config._attn_implementation != attn:
        model.set_attn_implementation(attn)
    if model.config._attn_implementation != attn:
        raise RuntimeError(f"{type(model).__name__} did not switch to attn={attn!r}")


def _compile_blocker(model, device: torch.device) -> str:
    """Why torch.compile cannot run here ('' when it can)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and not quantizer.is_compileable:
        return f"{dtype_label(model)} weights (bitsandbytes) do not support torch.compile"
    if device.type == "cpu":
        import torch._inductor.config as inductor

        cxx = inductor.cpp.cxx[-1] or "g++"
        if not shutil.which(cxx):
            return f"no C++ compiler ({cxx}) for torch.compile's CPU backend"
    return ""


def generate(model, ids, new_tokens: int, use_cache=True, static=False, compiled=False, pad_id=0,
             logits_processor=None):
    """Greedy generation of exactly ``new_tokens`` per sequence; returns transformers' output."""
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  use_cache=use_cache, pad_token_id=pad_id, return_dict_in_generate=True,
                  attention_mask=torch.ones_like(ids), disable_compile=not compiled)
    if logits_processor:
        from transformers import LogitsProcessorList

        kwargs["logits_processor"] = LogitsProcessorList(logits_processor)
    if static:
        kwargs["cache_implementation"] = "static"
    if compiled:
        kwargs["compile_config"] = compile_config(ids.device.type)
    with torch.inference_mode():
        return model.generate(ids, **kwargs)


def _check_setting(batch, prompt_len, new_tokens, use_cache, attn, static, compiled, repeats):
    for name, v in (("batch", batch), ("prompt_len", prompt_len), ("new_tokens", new_tokens),
                    ("repeats", repeats)):
        positive_int(name, v)
    choice("attn", attn, ATTN)
    for name, v in (("use_cache", use_cache), ("static", static), ("compiled", compiled)):
        choice(name, v, (True, False))
    if static and not use_cache:
        raise ValueError("static=True needs use_cache=True (a static cache is a KV cache)")
    if compiled and not static:
        raise ValueError("compiled=True needs static=True (torch.compile needs fixed cache shapes)")


def benchmark_generate(model, vocab, batch: int = 1, prompt_len: int = 32, new_tokens: int = 64,
                       use_cache: bool = True, attn: str = "sdpa", static: bool = False,
                       compiled: bool = False, device=None, repeats: int = 3, seed: int = 0) -> dict:
    """Time greedy generation of ``new_tokens`` for ``batch`` seeded prompts of ``prompt_len``.

    ``vocab`` is a tokenizer or a vocabulary size. ``seconds`` is the best of ``repeats`` runs
    after one warm-up (prefill included); ``tokens_per_s = batch * new_tokens / seconds``;
    ``ms_per_token`` is the time per decoding step, the wait for each sequence's next token;
    ``kv_cache_bytes`` is measured on the cache generate returns. ``device`` is where the prompts
    go and what the timer synchronizes (default: the model's device; the model is not moved).
    A ``compiled`` run that cannot run here gives a row with ``skipped`` set to the reason and NaN
    timings (the first, untimed run pays the compilation: ~25 s on a CPU for tiny-opt).
    """
    _check_setting(batch, prompt_len, new_tokens, use_cache, attn, static, compiled, repeats)
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    row = dict(batch=batch, kv_cache=use_cache, attn=attn, dtype=dtype_label(model), static=static,
               compiled=compiled, prompt_len=prompt_len, new_tokens=new_tokens, skipped="")
    nan = dict(seconds=math.nan, tokens=0, tokens_per_s=math.nan, ms_per_token=math.nan,
               kv_cache_bytes=0)
    if compiled and (why := _compile_blocker(model, dev)):
        return row | nan | {"skipped": why}
    set_attention(model, attn)
    ids = prompt_ids(vocab, batch, prompt_len, seed).to(dev)  # (B, T0)
    pad = resolve_pad_id(model, vocab)
    out = {}

    def run():
        out["gen"] = generate(model, ids, new_tokens, use_cache, static, compiled, pad)

    try:
        seconds = best_of(run, dev, repeats=repeats, warmup=1)
    except Exception as e:  # noqa: BLE001 -- only a compile failure becomes a skipped row
        if not compiled:
            raise
        return row | nan | {"skipped": f"torch.compile failed: {type(e).__name__}: {e}"[:300]}
    seqs = out["gen"].sequences  # (B, T0 + new_tokens)
    if tuple(seqs.shape) != (batch, prompt_len + new_tokens):
        raise RuntimeError(f"generated {tuple(seqs.shape)}, expected {(batch, prompt_len + new_tokens)}")
    tokens = batch * new_tokens
    return row | dict(seconds=seconds, tokens=tokens, tokens_per_s=tokens / seconds,
                      ms_per_token=1e3 * seconds / new_tokens,
                      kv_cache_bytes=cache_bytes(out["gen"].get("cache")))


def throughput_grid(model, vocab, batches=(1, 2, 4, 8), settings=({"use_cache": True}, {"use_cache": False}),
          prompt_len: int = 32, new_tokens: int = 64, device=None, repeats: int = 1,
          progress: bool = True) -> list[dict]:
    """One ``benchmark_generate`` row per (setting, batch); every argument is checked first.

    ``settings`` are dicts of ``use_cache``, ``attn``, ``static``, ``compiled`` (defaults: True,
    'sdpa', False, False). Returns a list of row dicts (``pandas.DataFrame(rows)`` is the table).
    """
    from tqdm.auto import tqdm

    for s in settings:
        for k in s:
            choice("settings key", k, SETTING_KEYS)
    default = dict(use_cache=True, attn="sdpa", static=False, compiled=False)
    settings = [default | dict(s) for s in settings]
    for s in settings:
        for b in batches:
            _check_setting(b, prompt_len, new_tokens, s["use_cache"], s["attn"], s["static"],
                           s["compiled"], repeats)
    jobs = [(s, b) for s in settings for b in batches]
    return [benchmark_generate(model, vocab, b, prompt_len, new_tokens, device=device,
                               repeats=repeats, **s)
            for s, b in tqdm(jobs, desc="decoding", disable=not progress)]


# --- roofline -----------------------------------------------------------------------------------

def decode_roofline(model, device="auto", achieved_tokens_per_s: float | None = None,
                    ceiling: dict | None = None) -> dict:
    """Batch-1 decoding bound: ideal tokens/s = B / W, and the achieved fraction of it.

    ``ceiling`` is a ``roofline.ceilings(device)`` dict (measured once on CPU if not given).
    ``compute_tokens_per_s = P / (2 N)`` is the compute ceiling (N weights read per token)."""
    c = ceiling if ceiling is not None else ceilings(resolve_device(device))
    W, N = _weights_read(model)
    sixteen = dtype_label(model) in ("bfloat16", "float16")
    P = (c.get("peak_flops_16bit") if sixteen else None) or c.get("peak_flops_fp32")
    ideal = c["bandwidth"] / W
    return dict(bytes_per_token=W, weights_per_token=N, bandwidth=c["bandwidth"], peak_flops=P,
                ideal_tokens_per_s=ideal, compute_tokens_per_s=P / (2 * N) if P else None,
                achieved_tokens_per_s=achieved_tokens_per_s,
                fraction=None if achieved_tokens_per_s is None else achieved_tokens_per_s / ideal,
                source=c.get("source", "given"))


def decode_regime(model, tokens_per_s: float, ceiling: dict, batch: int = 1) -> dict:
    """The regime of decoding at ``tokens_per_s`` (``roofline.regime``): a step reads the weights
    once (W bytes) for 2 N FLOPs per sequence of the batch."""
    from ..core.roofline import regime

    r = decode_roofline(model, ceiling=ceiling)
    return regime(batch / tokens_per_s, r["bytes_per_token"], 2 * batch * r["weights_per_token"],
                  r["bandwidth"], r["peak_flops"], gemv_bandwidth=ceiling.get("gemv_bandwidth"))


def roofline_tokens_per_s(batch, roofline: dict) -> float:
    """min(b B / W, P / (2 N)): throughput bound of memory-bound decoding at batch b."""
    bound = batch * roofline["ideal_tokens_per_s"]
    cap = roofline.get("compute_tokens_per_s")
    return min(bound, cap) if cap else bound


TABLE_COLUMNS = ["batch", "kv_cache", "attn", "dtype", "static", "compiled", "tokens_per_s", "ms_per_token",
                 "kv_cache_bytes", "skipped"]


def throughput_table(rows: list[dict]):
    """Benchmark rows as a table; rates and times printed with their units (they vary from run
    to run: the notebook tests mask figures with units), n/a for a skipped setting."""
    import pandas as pd

    df = pd.DataFrame(rows)[TABLE_COLUMNS].copy()
    df["tokens_per_s"] = df["tokens_per_s"].map(lambda v: "n/a" if v != v else f"{v:.0f} tok/s")
    df["ms_per_token"] = df["ms_per_token"].map(lambda v: "n/a" if v != v else f"{v:.2f} ms")
    df["kv_cache_bytes"] = df["kv_cache_bytes"].map(memory.human)
    return df


def record_throughput(rec, rows: list[dict]) -> None:
    """One ``tokens_per_s`` record per measured (not skipped) row."""
    for r in rows:
        if not r["skipped"]:
            rec.add("tokens_per_s", round(r["tokens_per_s"]), "tok/s", batch=r["batch"], kv_cache=r["kv_cache"],
                    attn=r["attn"], dtype=r["dtype"] + " static" * r["static"] + " compiled" * r["compiled"])


def _label(row: dict) -> str:
    parts = [row["dtype"], row["attn"], "KV cache" if row["kv_cache"] else "no cache"]
    return " ".join(parts + ["static"] * row["static"] + ["compiled"] * row["compiled"])


def plot_throughput(rows: list[dict], roofline: dict | None = None, ax=None,
                    title: str = "decoding throughput"):
    """Tokens/s against batch size (log2 x, log y), one line per setting, roofline dashed."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list] = {}
    for r in rows:
        if not r.get("skipped"):
            lines.setdefault(_label(r), []).append((r["batch"], r["tokens_per_s"]))
    for label, pts in lines.items():
        b, tps = zip(*sorted(pts))
        ax.plot(b, tps, "o-", label=label)
    if roofline is not None and rows:
        b = sorted({r["batch"] for r in rows})
        ax.plot(b, [roofline_tokens_per_s(x, roofline) for x in b], "k--",
                label="roofline  min(b·B/W, P/2N)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="batch size", ylabel="tokens/s", title=title)
    ax.legend(fontsize=8)
    return ax
