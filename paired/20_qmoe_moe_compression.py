# %% [markdown]
# # 20 · Case study 2: QMoE -- compressing a mixture of experts below one bit per parameter
#
# **Goal.** Reproduce the review's second case study: QMoE (Frantar & Alistarh, MLSys 2024)
# compresses SwitchTransformer-c2048, more than a trillion and a half parameters, from terabytes in bf16 to under
# 160 GB -- under one bit per parameter -- so it runs on one server. We follow its steps on our
# own Switch Transformer (`tiny-switch`: an encoder-decoder like the paper's, 8 experts per MoE
# layer as wide as Switch's (d_ff = 4 d_model), top-1 routing, pretrained by this project on T5's span corruption; `-p model_name tiny-moe`
# takes a decoder-only MoE with top-2 routing, `-p model_name google/switch-base-8` a real Switch
# Transformer): where the parameters live and what the experts carry, calibration as the paper
# does it, GPTQ with a ternary grid on every expert, the zeros that follow, and two storage
# formats -- QMoE's own and ours -- counted to the bit beside the paper's tables.
#
# **Prerequisites.** Notebook 10.1 (the OBS / GPTQ column sweep). Notebook 21 shows GPTQ on a dense model.
#
# **Runtime on the default** (`tiny-switch`, 2 CPU cores): under 2 minutes; peak memory about 1 GiB RSS.

# %% tags=["parameters"]
model_name: str = "tiny-switch"  # MoE to compress: tiny-switch or tiny-moe (shipped), a local directory, or a Hub id such as google/switch-base-8 (Switch: span-corruption pairs)
bits: str = "ternary"  # headline grid of the experts: ternary, 2, 3 or 4
method: str = "gptq"  # headline method: gptq (QMoE) or rtn (round to nearest)
grid_bits: list = ["ternary", 2]  # bit widths of the loss-vs-bits comparison (each with rtn and gptq)
seeds: list = [0, 1, 2]  # calibration seeds: GPTQ runs once per seed (RTN reads no data)
calib_dataset: str = "shakespeare"  # calibration text: shakespeare (shipped train split) or c4 (Hub train shard, QMoE's choice)
eval_dataset: str = "shakespeare"  # loss text: shakespeare (shipped test split) or c4 (Hub validation shard, as the paper)
calib_samples: int = 128  # calibration windows
calib_seqlen: int = 128  # tokens per calibration window (an encoder-decoder gets its span-corrupted pair)
eval_seqlen: int = 128  # tokens per evaluation window (at most the context of a decoder-only model)
eval_windows: int = 0  # evaluation windows for the loss; 0 means all of the split
expert_capacity: int = 1024  # tokens one expert may take per sequence (Switch; QMoE: 1024; transformers' default drops the rest)
percdamp: float = 0.1  # dampening, as a share of the mean Hessian diagonal (QMoE: 0.1, 10x GPTQ's)
max_tokens_mult: float = 4.0  # cap each expert's calibration tokens at this multiple of the mean (0: no cap)
batch_experts: bool = True  # quantize the experts of one shape in one batched GPTQ sweep (QMoE section 4)
dict_log2: int = 12  # our dictionary holds 2**dict_log2 entries; its codewords are dict_log2 bits wide
max_pairs: int = 14  # longest sequence of ternary pairs one codeword stands for (QMoE: 14)
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds everything that is not a calibration seed
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import peakllm
from peakllm import models, show_source
from peakllm.compress import obs, quant
from peakllm.compress.qmoe import algorithm, batched, coding, paper
from peakllm.core import checks, spread
from peakllm.data import evaldata, spans
from peakllm.infer import speak
from peakllm.models import probes
from peakllm.workbook import compare, diagrams

# isort: split
from tqdm.auto import tqdm  # after peakllm, which quiets tqdm's notice about missing ipywidgets

rec, dev = peakllm.setup("20_qmoe_moe_compression", globals())
bits, grid_bits = quant.parse_bits(bits), [quant.parse_bits(b) for b in grid_bits]
checks.choice("method", method, algorithm.QUANT_METHODS)
checks.choice("calib_dataset", calib_dataset, evaldata.CALIBRATION_DATASETS)
checks.choice("eval_dataset", eval_dataset, evaldata.EVAL_DATASETS)
seeds = checks.seeds("seeds", seeds)
for k, v in dict(calib_samples=calib_samples, calib_seqlen=calib_seqlen, eval_seqlen=eval_seqlen,
                 expert_capacity=expert_capacity, max_pairs=max_pairs).items():
    checks.positive_int(k, v)
checks.in_range("dict_log2", dict_log2, 4, 24, high_inclusive=True)

# %% [markdown]
# ## 1. Where the parameters of an MoE live
#
# A mixture-of-experts layer replaces one feed-forward block by E copies (experts) and a router
# that sends each token to k of them. Parameters grow E-fold, compute per token only k-fold:
# that is why MoEs are cheap to run per token and expensive to *store*. QMoE compresses the
# experts only; attention, embeddings and routers stay in bf16.

# %%
model, tokenizer, checkpoint_capacity = algorithm.load(model_name, str(dev), expert_capacity)  # routers drop no token (section 2)
config = model.config
E, k = models.moe.routing(model.config)
share = algorithm.experts_share(model)
shapes = sorted({tuple(m.weight.shape) for m in algorithm.expert_layers(model).values()})
print(f"{type(model).__name__}: {E} experts per MoE layer, {k} per token; expert matrices (rows x columns): {shapes}")
pd.DataFrame([{"part": "experts", "parameters": share["experts"], "share": round(share["share"], 3)},
              {"part": "everything else (attention, embeddings, routers, norms)", "parameters": share["dense"],
               "share": round(1 - share["share"], 3)}]).set_index("part")

# %% [markdown]
# **What the experts carry.** Before compressing anything, measure what there is to lose: the
# loss with every expert's output removed (each expert matrix zeroed, so every MoE layer adds
# nothing to its residual stream; `algorithm.experts_removed`). If that costs little, no rounding of the
# experts can cost much, and RTN and GPTQ cannot differ. For an encoder-decoder, three more numbers
# on the hidden (span) tokens alone say whether the model does its task (`models.probes`): its loss
# with the right encoder, with another window's encoder (what reading the context is worth), and a
# left-context bigram fitted on the train split (what the token just before each hidden one gives
# without any model).

# %%
test_ids = evaldata.eval_ids(eval_dataset, tokenizer)
sentinel = spans.first_sentinel(tokenizer)  # T5's <extra_id_0>: the span-corruption loss
n_windows = eval_windows or None
dense_loss = algorithm.eval_loss(model, test_ids, eval_seqlen, max_windows=n_windows, sentinel=sentinel)
with algorithm.experts_removed(model):  # every expert matrix zero inside the block, restored after
    removed_loss = algorithm.eval_loss(model, test_ids, eval_seqlen, max_windows=n_windows, sentinel=sentinel)
rec.add("loss", round(dense_loss, 4), "nats", method="dense", bits="32", dataset=eval_dataset)
rec.add("loss", round(removed_loss, 4), "nats", method="experts_removed", dataset=eval_dataset)
carry = {"loss, dense": dense_loss, "loss, experts removed": removed_loss}
if config.is_encoder_decoder:
    pairs = spans.objective(config, sentinel)
    kw = dict(seqlen=eval_seqlen, pairs=pairs, first_sentinel=sentinel, max_windows=n_windows)
    span_loss = {"right encoder": probes.span_token_nll(model, test_ids, **kw),
                 "another window's encoder": probes.span_token_nll(model, test_ids, encoder="other", **kw)}
    if eval_dataset == "shakespeare":  # the bigram is fitted on the shipped train split
        train_ids = evaldata.eval_ids(eval_dataset, tokenizer, split="train")
        span_loss["left-context bigram"] = probes.left_bigram_nll(train_ids, test_ids, eval_seqlen, max_windows=n_windows)["nll"]
    for who, v in span_loss.items():
        rec.add("span_token_loss", round(v, 4), "nats", model=who, dataset=eval_dataset)
        carry[f"span tokens, {who}"] = v
pd.Series(carry, name="nats per token").round(4).to_frame()

# %% tags=["nbval-ignore-output"]
removed_by = removed_loss - dense_loss
text = (f"Removing the experts raises the loss from {dense_loss:.3f} to {removed_loss:.3f} nats ({removed_by:+.3f}): "
        + ("the experts carry much of what the model knows, so how they are rounded will show in the loss."
           if removed_by > 0.5 else "the experts carry little here, so no rounding of them can cost much."))
if config.is_encoder_decoder:
    right_loss, other_loss = span_loss["right encoder"], span_loss["another window's encoder"]
    worth = other_loss - right_loss
    text += (f" On the span tokens the model reaches {right_loss:.3f} nats; reading another window's text "
             f"instead, {other_loss:.3f}: the right encoder is worth {worth:.3f} nats.")
    if "left-context bigram" in span_loss:
        big = span_loss["left-context bigram"]
        text += (f" The left-context bigram reaches {big:.3f}: the model is "
                 + (f"{big - right_loss:.3f} nats better, so it uses the text around each span."
                    if big > right_loss else "no better, so it has not learned to use the text around a span."))
peakllm.say(text)

# %% [markdown]
# ## 2. Calibration as the paper does it
#
# GPTQ needs, for each matrix, the inputs it sees. An expert sees only the tokens the router sends
# it, so each expert matrix gets its **own** Hessian from its routed tokens. QMoE adds four rules,
# all in `algorithm.calibration_pairs`, `algorithm.no_token_dropped` and `algorithm.compress`:
#
# * **the model's own task**: a Switch Transformer is an encoder-decoder trained on T5's span
#   corruption, so it is calibrated (and evaluated) on span-corrupted pairs: the encoder reads the
#   text with a few spans replaced by sentinels `<extra_id_i>`, the decoder writes the hidden spans;
# * **special tokens masked** (section 3.3): the encoder's sentinels and padding stay in the forward
#   pass but are kept out of the Hessians; in the decoder the paper skips "the token directly
#   *before* such a special token as this is the one used to predict the latter" -- the position
#   that predicts a sentinel, not the one that reads it (the reference code shifts the mask left by
#   one and drops the last position; `algorithm.decoder_token_mask`);
# * **no token dropped**: transformers' Switch lets an expert take at most `expert_capacity`
#   tokens of a sequence and passes the rest on through the residual only; QMoE raises the capacity;
# * **a cap per expert**: no expert folds in more than `max_tokens_mult` times the mean number of
#   tokens per expert, N k / E (N counting every token, special ones included, as the reference
#   counts them); the paper caps to bound memory in rare cases where very many tokens go to one
#   expert.

# %%
seqlen = calib_seqlen if model.config.is_encoder_decoder else min(calib_seqlen, models.context_length(model))
calibs = {s: algorithm.calibration_pairs(evaldata.calibration(calib_dataset, tokenizer, nsamples=calib_samples,
                                                         seqlen=seqlen, seed=s), tokenizer, model, seed=s)
          for s in seeds}  # one calibration set per seed
calib = calibs[seeds[0]]
if "decoder_input_ids" in calib:
    print("one calibration pair, its first tokens:")
    print("  encoder reads :", repr(tokenizer.decode(calib["input_ids"][0, :48])))
    print("  decoder writes:", repr(tokenizer.decode(calib["decoder_input_ids"][0, :16])))
tokens = algorithm.stack_tokens(model, calib)
dropped = algorithm.dropped_tokens(model, calib, capacity=checkpoint_capacity) if checkpoint_capacity else None
cap_rows = []
for stack, n in tokens.items():
    cap = algorithm.token_cap(model.config, n, max_tokens_mult)
    cap_rows.append({"stack": stack, "tokens in the Hessians": n, "mean per expert (N k / E)": round(n * k / E),
                     "cap": cap, "cap / N": round(cap / n, 3) if cap else None})
display(pd.DataFrame(cap_rows).set_index("stack"))
if dropped:
    print(f"at the checkpoint's expert capacity ({checkpoint_capacity} tokens per expert and sequence) the routers drop "
          f"{dropped['dropped']:,} of {dropped['routed']:,} routed tokens ({dropped['dropped'] / dropped['routed']:.1%}); "
          f"at {expert_capacity}: {algorithm.dropped_tokens(model, calib)['dropped']}")
print(f"the cap lets one expert take at most {max_tokens_mult:g} x {k}/{E} = {max_tokens_mult * k / E:.3g} of its stack's tokens"
      + (": it can never bind" if max_tokens_mult * k / E >= 1 else ""))

# %% [markdown]
# The cap is a share of the tokens: `max_tokens_mult` x k / E. With top-1 routing over 8 experts
# (`tiny-switch`) it is half of them, so only an expert the router sends more than four times its
# share reaches it (the histogram of section 4 draws the line where it can bind); with top-2
# routing over 8 experts (`tiny-moe`) it is all of them and cannot bind; over 128 experts
# (switch-base-128) it is one in 32, which popular experts exceed.

# %% [markdown]
# ## 3. One expert: RTN vs GPTQ on the ternary and 2-bit grids
#
# The **ternary** grid of a row has three values, its extremes and zero:
#
# $$\hat w = \begin{cases} w_{\max} & w > w_{\max}/2 \\ w_{\min} & w < w_{\min}/2 \\ 0 & \text{otherwise.} \end{cases}$$
#
# GPTQ quantizes the columns one at a time and spreads each column's rounding error over the
# columns still to come, weighted by the inverse Hessian $H^{-1}$ with $H = 2 X X^\top$ (notebook 10.1). We take one expert matrix, collect its routed inputs, and
# compare the output error ||W X - Ŵ X||² / ||W X||² of round-to-nearest and of GPTQ.

# %%
names = list(algorithm.expert_layers(model))
name = names[len(names) // 4]
probe = algorithm.calibrate_expert(model, calib, name)
W0 = probe.layer.weight.detach().clone()
signal = obs.layer_error(W0, torch.zeros_like(W0), probe.H)
one = []
for b in ["ternary", 2]:
    err_rtn = obs.layer_error(W0, quant.rtn(W0, b), probe.H) / signal
    probe.quantize(b, percdamp=percdamp)
    err_gptq = obs.layer_error(W0, probe.layer.weight, probe.H) / signal
    if b == "ternary":
        W_ternary = probe.layer.weight.detach().clone()  # section 6 codes one of its rows by hand
    with torch.no_grad():
        probe.layer.weight.copy_(W0)  # put the dense expert back
    one.append({"bits": str(b), "rtn": round(err_rtn, 4), "gptq": round(err_gptq, 4), "gptq / rtn": round(err_gptq / err_rtn, 3)})
    rec.add("layer_error", round(err_gptq, 4), "relative", method="gptq", bits=str(b))
    rec.add("layer_error", round(err_rtn, 4), "relative", method="rtn", bits=str(b))
print(f"{name}: {tuple(W0.shape)}, {probe.n:,} routed calibration tokens")
pd.DataFrame(one).set_index("bits")

# %% [markdown]
# ## 4. All experts: loss on held-out text
#
# `algorithm.compress` runs the sequential driver of notebook 10.2 over the blocks; in every block each
# expert matrix is quantized from its own routed tokens, and nothing else in the model changes.
# With `batch_experts` the experts of one shape go through one batched GPTQ sweep (section 7
# times it). Each run starts from a fresh load of the checkpoint, so one working copy is in memory.

# %%
show_source(algorithm.compress)

# %%
del model, probe  # from here on, one working copy at a time
variants, reports, seed_rows, zcols, storage = {}, {}, [], {}, None
spoken = {}  # one prompt's masked span, filled greedily by each model
grid = sorted(set(grid_bits) | {bits}, key=lambda b: (b != "ternary", b))
runs = [(b, m, s) for b in grid for m in ["rtn", "gptq"] for s in (seeds if m == "gptq" else seeds[:1])]
for b, m, s in tqdm(runs, desc="RTN and GPTQ"):
    mm, _, _ = algorithm.load(model_name, str(dev), expert_capacity)  # a fresh working copy
    if not spoken:
        spoken["dense"] = speak.speak(mm, tokenizer, span=4)
    report = algorithm.compress(mm, calibs[s], bits=b, method=m, percdamp=percdamp, max_tokens_mult=max_tokens_mult,
                           progress=False, batch_experts=batch_experts)
    loss = algorithm.eval_loss(mm, test_ids, eval_seqlen, max_windows=n_windows, sentinel=sentinel)
    seed_rows.append({"method": m, "bits": str(b), "seed": s if m == "gptq" else None, "loss": loss})
    rec.add("loss", round(loss, 4), "nats", method=m, bits=str(b), seed=s if m == "gptq" else None, dataset=eval_dataset)
    if s == seeds[0]:  # the first seed's runs serve the sections below
        reports[(m, b)] = report
        spoken[f"{m} {b}" + ("" if b == "ternary" else "-bit")] = speak.speak(mm, tokenizer, span=4)
        variants[(m, b)] = {"loss": loss, "zeros": algorithm.zero_share(mm), "zeros by row": algorithm.zero_share(mm, by_row_length=True)}
        if b == "ternary":  # for sections 5 and 6, before this copy goes
            zcols[m] = algorithm.zero_share_by_column(mm, bins=8)
            if m == method and bits == "ternary":
                storage = algorithm.encode_experts(mm, size=2 ** dict_log2, max_pairs=max_pairs)
    del mm
runs_df = pd.DataFrame(seed_rows)
loss_table = spread.table(runs_df, ["method", "bits"], "loss", digits=4)
loss_table["increase"] = (loss_table["mean"] - dense_loss).round(4)
print(f"dense loss {dense_loss:.4f} ({eval_dataset}); GPTQ: mean ± sd over calibration seeds {seeds} (RTN reads no data: one run)")
loss_table[["mean ± sd", "increase"]]

# %% [markdown]
# **What the compressed models write.** Switch was pretrained to fill masked spans, so the same test-split line with a few words in its middle hidden behind the first sentinel goes to the dense model and to each compressed model (first calibration seed); each fills the span greedily. The loss says how much was lost; the fills show what it looks like.

# %% tags=["nbval-ignore-output"]
first = next(iter(spoken.values()))
print("the encoder reads:", first["prompt"])
print("the hidden words:  ", first["hidden"])
speak.table(spoken)

# %%
for b in ["ternary", "2"]:
    g = runs_df[(runs_df.method == "gptq") & (runs_df.bits == b)].loss.tolist()
    r = runs_df[(runs_df.method == "rtn") & (runs_df.bits == b)].loss.tolist()
    if g and r:
        v, inc_g, inc_r = spread.verdict(g, r), spread.summarize(g)["mean"] - dense_loss, r[0] - dense_loss
        print(f"{b:>7}: loss increase RTN {inc_r:+.4f}, GPTQ {inc_g:+.4f} (sd {spread.summarize(g)['sd']:.4f}): "
              f"GPTQ's increase is {inc_g / inc_r:.2f} of RTN's -> {'a tie' if v == 'tie' else 'GPTQ ' + v}")
one_rtn = rec.value("layer_error", method="rtn", bits="ternary")
inc_rtn = runs_df[(runs_df.method == "rtn") & (runs_df.bits == "ternary")].loss.item() - dense_loss
if one_rtn > 0.2 and inc_rtn < 0.25 * removed_by:
    print(f"Ternary RTN leaves a relative error of {one_rtn:.2f} on section 3's expert, yet moves the loss by only "
          f"{inc_rtn:+.3f} of the {removed_by:+.3f} that removing the experts costs: an expert's output is one term of "
          "the residual sum, and most of its error lies in directions the next layers read little.")
hist = algorithm.routing_histogram(reports.get(("gptq", bits), []))
if len(hist):
    piv = hist.pivot_table(index="expert", columns="layer", values="routed", sort=False)
    ax = piv.plot.bar(figsize=(9, 3), title="calibration tokens the router sent to each expert (first seed)")
    for stack, n in tokens.items():
        cap = algorithm.token_cap(config, n, max_tokens_mult) if max_tokens_mult else None
        if cap and cap < n:  # a cap no expert can reach is not drawn
            ax.axhline(cap, ls=":", color="k", lw=0.8)
            ax.annotate(f"cap, {stack.split('.')[0]}", (0, cap), fontsize=7, va="bottom")
    ax.set_ylabel("tokens")
    ax.legend(fontsize=7)

# %% [markdown]
# ## 5. The zeros of ternary experts -- and why GPTQ leaves fewer than RTN
#
# With three levels and the threshold at half the row's extreme, most weights land on 0: QMoE
# counts 86-89% on Switch, and that skew is what lets a code go below one bit. GPTQ changes the
# share: it adds each column's rounding error to the columns still to come, so their spread
# changes as the sweep goes on, and with it how many stay inside the zero band (|w| below half the
# row's extreme). RTN rounds every column alike. The share of zeros along the columns, in the
# order GPTQ sweeps them, shows how that plays out on this model.

# %%
zrows = []
for (m, b), v in variants.items():
    if b == "ternary":
        zrows.append({"method": m, "zero share": round(v["zeros"], 4)})
        rec.add("zero_share", round(v["zeros"], 4), "fraction", bits="ternary", method=m)
if zcols:
    fig, ax = plt.subplots(figsize=(6, 3))
    for m, color in (("rtn", "tab:red"), ("gptq", "tab:blue")):
        ax.plot([f"{i + 1}/8" for i in range(8)], zcols[m], "o-", color=color, label=m)
    ax.set(xlabel="eighth of the columns, in GPTQ's order", ylabel="share of zeros",
           title="ternary experts: zeros along the columns")
    ax.legend()
    fig.tight_layout()
    plt.show()
if zcols:
    zr, zg = variants[("rtn", "ternary")]["zeros"], variants[("gptq", "ternary")]["zeros"]
    print(f"GPTQ leaves {'fewer' if zg < zr else 'more'} zeros than RTN on {model_name}: {zg:.1%} against {zr:.1%}. "
          f"Along the columns GPTQ's share goes from {zcols['gptq'][0]:.1%} (first eighth) to {zcols['gptq'][-1]:.1%} "
          f"(last); RTN's from {zcols['rtn'][0]:.1%} to {zcols['rtn'][-1]:.1%}.")
pd.DataFrame(zrows).set_index("method") if zrows else print("no ternary variant in grid_bits")

# %% [markdown]
# ## 6. Storing ternary weights below one bit: QMoE's format and ours
#
# Both take the ternary weights in pairs (9 symbols) and replace sequences of pairs by
# fixed-width codewords, so a GPU decodes every row independently:
#
# * **QMoE's format** (`paper.qmoe_dictionary`): a *fixed* dictionary of the 2^16 most
#   probable sequences of 1-14 pairs if weights were independent with P(0) = 0.885, greedy
#   longest-match parsing, 16-bit codewords, and per row a 32-bit offset plus bf16 wmin and wmax
#   (64 bits);
# * **ours** (`coding.DictionaryCode.fit`): a dictionary of 2^`dict_log2` entries fitted
#   to this model's codes, the fewest codewords per row (optimal parsing), `dict_log2`-bit
#   codewords, and per row bf16 wmin and wmax plus the row's codeword *count* in a few bits (its
#   offset is the running sum of the counts, computed once at load time).
#
# Every matrix is written to bytes, read back, decoded and compared with the model's weights
# (`algorithm.encode_experts`, run on the headline model in section 4 before its copy was freed).

# %%
diagrams.qmoe_layout()

# %% [markdown]
# **One row by hand.** Take row 0 of the ternary GPTQ expert of section 3. Its codes are the
# signs of its weights ($w_{\min} \to -1$, $0 \to 0$, $w_{\max} \to +1$). Each pair of codes $(a, b)$
# becomes one of nine symbols $s = 3(a+1) + (b+1)$. QMoE's dictionary is read greedily: at each
# position, the longest sequence of pairs it holds; each sequence costs one 16-bit codeword, and
# the row adds 64 bits (a 32-bit offset, bf16 $w_{\min}$ and $w_{\max}$):
#
# $$\text{bits(row)} = 16\, n_\text{codewords} + 64, \qquad \text{bit per weight} = \frac{16\, n_\text{codewords} + 64}{\text{cols}}.$$
#
# Decoding reads each codeword's pairs from the table, so a row needs nothing but its own offset.

# %%
q_row = torch.sign(W_ternary[0]).to(torch.int8).numpy()  # (cols,) codes of row 0: -1, 0, +1
S = 3 * (q_row[0::2] + 1) + (q_row[1::2] + 1)  # (cols / 2,) pair symbols 0..8
D = paper.qmoe_dictionary()  # 2^16 entries, each a sequence of 1-14 pairs
entry_of = {tuple(D.table[e, :D.lengths[e]]): e for e in range(len(D))}  # sequence -> codeword
words, p = [], 0
while p < len(S):  # greedy: the longest sequence of the dictionary that starts at p
    n = max(n for n in range(1, min(D.max_pairs, len(S) - p) + 1) if tuple(S[p:p + n]) in entry_of)
    words.append(entry_of[tuple(S[p:p + n])])
    p += n
decoded = np.concatenate([D.table[w, :D.lengths[w]] for w in words])  # codewords -> pairs again
row_bits = 16 * len(words) + 64
print(f"row 0: {len(q_row)} weights, {(q_row == 0).mean():.1%} zeros -> {len(S)} pairs -> {len(words)} codewords")
print("first codewords and the pairs they stand for:", [(w, D.table[w, :D.lengths[w]].tolist()) for w in words[:4]])
print(f"bits = 16 x {len(words)} + 64 = {row_bits}: {row_bits / len(q_row):.3f} bit per weight")
lib = D.encode(q_row[None])  # the library's encoder on the same row
assert (decoded == S).all() and words == lib.codes.tolist() and row_bits == lib.code_bits + lib.row_bits
assert (D.decode(lib).numpy()[0] == q_row).all()
print("by hand = qmoe.paper's encoder, codeword for codeword and bit for bit; decoded exactly")

# %%
peakllm.show_doc(paper, start="Bit accounting", stop="Entropy limit")

# %%
if storage is not None:  # algorithm.encode_experts ran on the headline model in section 4
    coders = storage["coders"]
    print(f"decoded {coders['dictionary'].verified} expert matrices with each coder: bit-exact")
    srows = [{"coder": "entropy bound (zero order)", "codes": storage["entropy"]},
             {"coder": "lzma (generic, no row access)", "codes": storage["lzma"]}]
    for c, fb in coders.items():
        srows.append({"coder": {"dictionary": f"ours: fitted 2^{dict_log2}", "qmoe": "QMoE: fixed 2^16"}[c],
                      "codes": fb.bits_per_param("codes"), "codes + rows": fb.bits_per_param("rows"),
                      "all": fb.bits_per_param("all"), "row bits / row": fb.row_bits / fb.rows})
        for counts in ("codes", "rows", "all"):
            rec.add("bits_per_param", round(fb.bits_per_param(counts), 4), "bit", scope="experts", coder=c, counts=counts)
        # the whole checkpoint: the dense part stays in bf16, as in the paper's 0.807 bit
        full = algorithm.checkpoint_bits(share, fb.bits_per_param("all"))
        rec.add("bits_per_param", round(full, 4), "bit", scope="full", coder=c, counts="all")
        rec.add("compression_ratio", round(16 / fb.bits_per_param("all"), 2), "x", scope="experts", coder=c)
        rec.add("compression_ratio", round(16 / full, 2), "x", scope="full", coder=c)
    display(pd.DataFrame(srows).set_index("coder").round(4))
else:
    print(f"bits={bits!r}, method={method!r}: the storage formats are for ternary weights (bits='ternary')")

# %%
if storage is not None:
    ours = coders["dictionary"].bits_per_param("all")
    zeros = variants[(method, "ternary")]["zeros"]
    print(f"With our coder the {method.upper()} ternary experts take {ours:.3f} bit per parameter, row metadata and "
          f"dictionary included ({'below' if ours < 1 else 'above'} one bit); QMoE's format takes "
          f"{coders['qmoe'].bits_per_param('all'):.3f}.")
    if ours >= 1:
        meta = {}  # row length -> row metadata per weight of our coder (bf16 wmin, wmax and the codeword count)
        for e in coders["dictionary"].encoded.values():
            meta.setdefault(e.cols, []).append(e.compact_row_bits / e.params)
        by_row = variants[(method, "ternary")]["zeros by row"]
        parts = "; ".join(f"rows of {c} weights hold {by_row[c]:.1%} zeros and pay {np.mean(v):.3f} bit of row metadata "
                          "per weight (matrix headers aside)" for c, v in sorted(meta.items()))
        print(f"Why not below: {zeros:.1%} of the weights are zero (Switch in QMoE's Table 3: 85.7-88.6%), so even the "
              f"entropy bound is {storage['entropy']:.3f} bit; {parts}.")
        lengths = sorted({*meta, 768, 3072})
        gauss = {n: quant.gaussian_zero_share(n) for n in lengths}
        print("The zeros follow the row length: the grid is set by each row's extremes, and longer rows reach further "
              "into the tails. Rows of Gaussian weights leave " + ", ".join(f"{gauss[n]:.1%} zeros at {n:,}" for n in lengths)
              + " weights per row (switch-base's rows: 768 and 3,072).")
    print(f"Where our figure goes: codewords {coders['dictionary'].bits_per_param('codes'):.3f}, row metadata "
          f"{coders['dictionary'].bits_per_param('rows') - coders['dictionary'].bits_per_param('codes'):.3f}, "
          f"dictionary {coders['dictionary'].bits_per_param('all') - coders['dictionary'].bits_per_param('rows'):.3f} bit per parameter")

# %% [markdown]
# ## 7. What if our codes had the paper's statistics?
#
# QMoE's format was designed for Switch's codes: P(0) = 0.885 and long rows. The paper checks its
# dictionary on i.i.d. ternary codes with that P(0) at **switch-c-2048's** expert shapes (rows of
# 2,080 and 6,144 weights) and reports 21.11x (section 4.3.2): we draw the same codes at the same
# shapes and count them with QMoE's format. The curve below draws codes at **switch-base's** shapes
# (rows of 768 and 3,072 weights) over a range of P(0), our model's zero share among them: it shows
# what the zeros are worth, and is not set against 21.11x, which was measured on longer rows.

# %%
c2048 = {r["coder"]: r for r in paper.paper_statistics_whatif(
    p0=0.885, shapes=tuple(paper.C2048_SHAPES.values()), row_fraction=1 / 32, size=2 ** dict_log2)
    if r["matrix"] == "all"}  # rows of 2,080 and 6,144 weights; bits per weight do not depend on the row count
ratio_c2048 = c2048["qmoe"]["ratio (codes + rows)"]
rec.add("compression_ratio", round(ratio_c2048, 2), "x", scope="experts", coder="qmoe", codes="iid P(0)=0.885",
        shapes="switch-c-2048")
paper_iid = compare.paper_value(metric="compression_ratio", coder="qmoe", model="google/switch-c-2048",
                                where="section 4.3.2 (dictionary validation)")
display(pd.DataFrame([{"codes": "i.i.d. ternary, P(0) = 0.885, switch-c-2048 shapes", "paper": paper_iid,
                       "ours (QMoE's format)": round(ratio_c2048, 2),
                       "ours / paper": round(ratio_c2048 / paper_iid, 3)}]).set_index("codes"))

p0s = sorted({0.885, 0.857} | ({round(variants[(method, "ternary")]["zeros"], 3)} if ("gptq", "ternary") in variants else set()))
what = []
for p0 in tqdm(p0s, desc="i.i.d. codes at switch-base shapes"):
    for r in paper.paper_statistics_whatif(p0=p0, size=2 ** dict_log2):
        if r["matrix"] == "all" and r["coder"] in ("dictionary", "qmoe", "entropy (prior)"):
            what.append({"P(0)": p0, "coder": r["coder"], "codes + rows": round(r["codes + rows"], 4),
                         "ratio vs bf16": round(r["ratio (codes + rows)"], 2)})
what = pd.DataFrame(what)
fig, ax = plt.subplots(figsize=(6, 3.5))
for c, style in (("dictionary", "o-"), ("qmoe", "s-"), ("entropy (prior)", "k:")):
    part = what[what.coder == c]
    ax.plot(part["P(0)"], part["codes + rows"], style, label={"dictionary": "ours", "qmoe": "QMoE's format"}.get(c, "entropy bound"))
if ("gptq", "ternary") in variants:
    ax.axvline(variants[(method, "ternary")]["zeros"], color="tab:gray", lw=0.8, ls="--", label=f"{model_name}'s zero share")
ax.set(xlabel="share of zeros P(0)", ylabel="bit per weight (with row metadata)",
       title="i.i.d. ternary codes at switch-base's expert shapes (768 x 3072)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
what.pivot(index="P(0)", columns="coder", values="codes + rows")

# %% [markdown]
# **The paper's theoretical limit, step by step.** QMoE quotes 25.40x as the limit for codes with
# switch-c-2048's statistics. It is the zero-order entropy H of one ternary weight with P(0) =
# 0.885 and the nonzeros split evenly, set against 16 bits of bf16:
#
# $$H = -P(0)\log_2 P(0) - 2\,P(\pm1)\log_2 P(\pm1), \qquad \text{ratio} = 16 / H .$$

# %%
steps = paper.entropy_derivation(0.885)
pd.Series({k: round(v, 6) for k, v in steps.items()}, name="switch-c-2048's statistics").to_frame()

# %% [markdown]
# ## 8. Batched experts: one GPTQ sweep for all experts of a shape
#
# GPTQ's column loop issues a few small operations per column whatever the matrix size, so many
# small experts leave the processor idle between them. QMoE stacks the experts of one shape and
# runs one sweep over the stack (`batched.quantize_batched`): the same result (section 4 used it),
# the loop run once instead of E times.

# %%
trows = []
for rows_, cols_ in shapes:
    t = batched.time_batched_vs_sequential(E=E, rows=rows_, cols=cols_, bits="ternary", repeats=3,
                                           device=str(dev), percdamp=percdamp)
    trows.append({"expert shape": f"{rows_}x{cols_}", "experts": E, "one at a time": f"{t['sequential_s']:.3f} s",
                  "batched": f"{t['batched_s']:.3f} s", "batched takes": f"{t['speedup']:.1f}x less time"})
    rec.add("solve_seconds", round(t["sequential_s"], 3), "s", method="gptq, one expert at a time", part=f"{rows_}x{cols_}")
    rec.add("solve_seconds", round(t["batched_s"], 3), "s", method="gptq, experts batched", part=f"{rows_}x{cols_}")
pd.DataFrame(trows).set_index("expert shape")

# %% [markdown]
# ## 9. Paper vs ours
#
# QMoE's Tables 3, 4 and 6 (MLSys 2024 numbering: zeros, C4 masked-LM loss, ratios in QMoE's format) beside our model
# (span-corruption loss on held-out text, both formats). "bits (experts)" counts each row's
# metadata; "bits (full)" is the whole checkpoint with the dense part in bf16.

# %%
losses = {"dense loss": dict(metric="loss", method="dense")}
losses |= {f"{'QMoE' if m == 'gptq' else 'RTN'} {'ternary' if b == 'ternary' else '2-bit'}": dict(metric="loss", method=m, bits=b)
           for m in ["rtn", "gptq"] for b in [2, "ternary"]}
columns = losses | {"zeros (ternary)": dict(metric="zero_share"),
                    "ratio experts": dict(metric="compression_ratio", scope="experts", where="Table 6"),
                    "ratio full": dict(metric="compression_ratio", scope="full")}
paper = compare.paper_table({m: {"model": m} for m in ["google/switch-base-128", "google/switch-large-128",
                                                       "google/switch-c-2048"]}, columns, index="model")
ours = {"dense loss": round(dense_loss, 3)}
ours |= {name: round(variants[(f["method"], f["bits"])]["loss"], 3) if (f["method"], f["bits"]) in variants else None
         for name, f in losses.items() if name != "dense loss"}
ours["zeros (ternary)"] = round(variants[("gptq", "ternary")]["zeros"], 3) if ("gptq", "ternary") in variants else None
table = [paper]
if storage is not None:
    for c, label in (("qmoe", "QMoE's format"), ("dictionary", "our coder")):
        fb = coders[c]
        full = algorithm.checkpoint_bits(share, fb.bits_per_param("all"))
        row = ours | {"ratio experts": round(16 / fb.bits_per_param("all"), 2), "ratio full": round(16 / full, 2)}
        table.append(pd.DataFrame([row], index=pd.Index([f"ours: {model_name}, {label}"], name="model")))
else:
    table.append(pd.DataFrame([ours], index=pd.Index([f"ours: {model_name}"], name="model")))
pd.concat(table)

# %%
bit_rows = [{"figure": "bits per expert parameter, with row metadata", "paper (switch-c-2048)":
             compare.paper_value(metric="bits_per_param", scope="experts", model="google/switch-c-2048")},
            {"figure": "bits per parameter, whole checkpoint", "paper (switch-c-2048)":
             compare.paper_value(metric="bits_per_param", scope="full", model="google/switch-c-2048")}]
if storage is not None:
    for c, label in (("qmoe", "ours, QMoE's format"), ("dictionary", "ours, our coder")):
        b = coders[c].bits_per_param("all")
        bit_rows[0][label] = round(b, 3)
        bit_rows[1][label] = round(algorithm.checkpoint_bits(share, b), 3)
pd.DataFrame(bit_rows).set_index("figure")

# %% [markdown]
# What differs and why:

# %% tags=["nbval-ignore-output"]
switch_c = "google/switch-c-2048"
p_dense, p_rtn, p_gptq, p_gptq2 = (compare.paper_value(metric="loss", method=m, bits=b, model=switch_c)
                                   for m, b in [("dense", 16), ("rtn", "ternary"), ("gptq", "ternary"), ("gptq", 2)])
loss_dense = dense_loss  # section 1's and 4's losses, unrounded, as their tables show them
loss_rtn = runs_df[(runs_df.method == "rtn") & (runs_df.bits == "ternary")].loss.item()
loss_gptq = runs_df[(runs_df.method == "gptq") & (runs_df.bits == "ternary")].loss.tolist()
loss_gptq2 = runs_df[(runs_df.method == "gptq") & (runs_df.bits == "2")].loss.tolist()
gptq_vs_rtn = spread.verdict(loss_gptq, [loss_rtn])  # "better": GPTQ's loss is lower beyond its seed spread
gap, paper_gap = loss_rtn - spread.summarize(loss_gptq)["mean"], p_rtn - p_gptq
if gptq_vs_rtn == "better":
    pattern = "The same pattern, at a smaller scale." if gap < paper_gap else "The same pattern."
else:
    pattern = "Not the paper's pattern."
two_bit = ""
if loss_gptq2:
    near = spread.verdict(loss_gptq2, [loss_dense])
    two_bit = (f" 2-bit GPTQ lands at {spread.fmt(loss_gptq2, 4)} against the dense {loss_dense:.4f} "
               f"({'inside its seed spread' if near == 'tie' else 'below dense' if near == 'better' else 'above dense'}; "
               f"the paper: {p_gptq2:.2f} against {p_dense:.2f}).")
row_lens = sorted({c for _, c in shapes})
rows_text = f"{row_lens[0]}" if len(row_lens) == 1 else f"{row_lens[0]} and {row_lens[-1]}"
rows_sentence = (f"Our expert rows hold {rows_text} weights, switch-base's 768 and 3,072, switch-c-2048's 2,080 and "
                 "6,144: " + ("shorter rows pay more row metadata per weight and reach less far into the tails, "
                              "which leaves fewer zeros (section 6 prints the share that Gaussian rows of each length leave)."
                              if row_lens[0] < 768 else "row metadata weighs per weight about what it weighs there."))
peakllm.say(f"""
* **{pattern}** Removing the experts costs {removed_by:+.3f} nats here. In the paper ternary RTN is far worse than ternary GPTQ: on switch-c-2048 it raises
  the C4 loss from {p_dense:.2f} to {p_rtn:.2f}, GPTQ only to {p_gptq:.2f}. Here ternary RTN moves the loss by
  {loss_rtn - loss_dense:+.4f} nats and ternary GPTQ by {spread.summarize(loss_gptq)["mean"] - loss_dense:+.4f}
  (sd {spread.summarize(loss_gptq)["sd"]:.4f} over the seeds): {"a tie" if gptq_vs_rtn == "tie" else "GPTQ " + gptq_vs_rtn},
  with a gap of {gap:.4f} nats between them against the paper's {paper_gap:.2f}.{two_bit}
* **Zeros and row length set the bits.** Section 7 shows both coders on codes with the paper's
  statistics; section 6 says where our own figure goes. {rows_sentence} Longer rows would take a model
  several times larger than the repository can ship.
* **Two coders, two trade-offs.** QMoE's fixed dictionary needs no fitting and one table for
  every model; ours is fitted to the codes at hand and stores rows more cheaply.
* **Loss**: the paper reports C4 masked-LM (span-corruption) loss of encoder-decoder models;
  `tiny-switch`'s is the same loss on held-out plays (`tiny-moe`'s would be next-token loss). With `-p model_name google/switch-base-8
  -p calib_dataset c4 -p eval_dataset c4` (GPU, Hub) the same cells run on a real Switch
  Transformer, calibrated and evaluated on C4 span-corruption pairs as in the paper.
""")

# %%
import math

fig, ax = plt.subplots(figsize=(6, 4))
cols = {"rtn": "tab:red", "gptq": "tab:blue"}
mean_cols = sum(s[0] * s[1] for s in shapes) / sum(s[0] for s in shapes)
for m in ["rtn", "gptq"]:
    pts = []
    for (mm_, b), v in variants.items():
        if mm_ != m:
            continue
        if b == "ternary":
            x = coders["dictionary"].bits_per_param("all") if storage is not None and m == method else math.log2(3) + 32 / mean_cols
        else:
            x = b + 32 / mean_cols  # b bits + a 16-bit scale and zero per row
        pts.append((x, v["loss"]))
    pts.sort()
    ax.plot(*zip(*pts), "o-", color=cols[m], label=m)
ax.axhline(dense_loss, color="k", ls=":", label="dense (fp32)")
ax.set(xlabel="bits per expert parameter (with per-row metadata)", ylabel="test loss (nats/token)",
       title=f"{model_name}: loss against storage")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Key takeaways

# %% tags=["nbval-ignore-output"]
err_rtn1, err_gptq1 = (rec.value("layer_error", method=m, bits="ternary") for m in ("rtn", "gptq"))
zeros_gptq = rec.value("zero_share", method="gptq", bits="ternary")
# Gaussian rows as long as ours, weighted as our matrices are
gauss_zeros = sum(r * c * quant.gaussian_zero_share(c) for r, c in shapes) / sum(r * c for r, c in shapes)
loss_name = "span-corruption loss" if config.is_encoder_decoder else "next-token loss"
spread_gptq = spread.summarize(loss_gptq)
inside = abs(spread_gptq["mean"] - loss_dense) <= spread_gptq["sd"]
bullets = f"""
* What there is to lose: removing every expert raises the loss by {removed_by:+.3f} nats, so the
  experts {"carry much of the model" if removed_by > 0.5 else "carry little of this model"}.
* In an MoE the experts hold {"most" if share["share"] > 0.5 else "a large share"} of the weights ({share["share"]:.2f} of `{model_name}`'s parameters), so
  compressing them alone moves the checkpoint's size; attention, embeddings and routers stay in bf16.
* {"The ternary grid is too coarse for rounding alone" if err_gptq1 < err_rtn1 else "On this expert the ternary grid costs rounding no more than GPTQ"}: on one expert, round-to-nearest leaves a
  relative output error of {err_rtn1:.4f} where GPTQ leaves {err_gptq1:.4f}. Over all experts ternary RTN moves
  the {loss_name} by {loss_rtn - loss_dense:+.4f} nats, while ternary GPTQ lands at {spread.fmt(loss_gptq, 4)} against
  the dense {loss_dense:.4f}: {"inside" if inside else "outside"} its seed spread; against RTN, {"a tie" if gptq_vs_rtn == "tie" else "GPTQ " + gptq_vs_rtn}.
* Zeros are what a code below one bit feeds on: {zeros_gptq:.1%} of GPTQ's ternary weights are zero here,
  {"about" if abs(zeros_gptq - gauss_zeros) < 0.01 else "less than" if zeros_gptq < gauss_zeros else "more than"} what Gaussian rows as long as ours leave ({gauss_zeros:.1%}); Switch's longer rows leave 86-89% (QMoE's Table 3).
"""
if storage is not None:
    at_paper = what[what["P(0)"] == steps["P(0)"]].set_index("coder")["codes + rows"]
    limit, paper_limit = steps["ratio = 16 / H"], compare.paper_value(metric="compression_ratio", coder="entropy")
    bullets += f"""* Counted to the bit with row metadata, our coder stores the experts in {rec.value("bits_per_param", scope="experts", coder="dictionary", counts="all"):.3f} bit per parameter
  and QMoE's format in {rec.value("bits_per_param", scope="experts", coder="qmoe", counts="all"):.3f}, against the paper's {compare.paper_value(metric="bits_per_param", scope="experts", model=switch_c)} on switch-c-2048; at the paper's
  statistics the same two coders reach {at_paper["dictionary"]:.4f} and {at_paper["qmoe"]:.4f}, and the entropy limit is
  16 / {steps["H (bit/weight)"]:.6f} = {limit:.6f}x ({"the paper's" if round(limit, 2) == paper_limit else "against the paper's"} {paper_limit:.2f}x).
  On i.i.d. codes at switch-c-2048's shapes QMoE's format gives {ratio_c2048:.2f}x against the paper's {paper_iid}x.
"""
peakllm.say(bullets)

# %% [markdown]
# ## Lab: QMoE's ternary GPTQ on one expert
#
# QMoE (Frantar & Alistarh 2023, section 4) runs GPTQ's column loop (GPTQ, Algorithm 1) on every
# expert matrix, with two changes: a **ternary grid** per row and 10x GPTQ's dampening
# (`percdamp` = 0.1). Write that loop for section 3's expert.
#
# **The grid.** Each row of $W$ keeps three values, its extremes and zero, found once from the
# row *before* the sweep, with $w_{\min} = \min(\min_j W_{ij},\, 0)$ and
# $w_{\max} = \max(\max_j W_{ij},\, 0)$:
#
# $$\operatorname{quant}(w) = \begin{cases} w_{\max} & w > w_{\max}/2 \\ w_{\min} & w < w_{\min}/2 \\ 0 & \text{otherwise.} \end{cases}$$
#
# **The sweep** is GPTQ's. With $U$ the upper Cholesky factor of the dampened inverse Hessian
# (GPTQ section 3.3), the columns $j = 0, 1, \dots$ are quantized from left to right:
#
# $$Q_{:,j} = \operatorname{quant}(W_{:,j}), \qquad E_{:,j} = \frac{W_{:,j} - Q_{:,j}}{U_{jj}}, \qquad
# W_{:,j+1:} \leftarrow W_{:,j+1:} - E_{:,j}\, U_{j,\,j+1:} ,$$
#
# the last step the OBS update that moves column $j$'s rounding error onto the columns still to
# come. The grid stays the one fitted before the sweep, even where the updates push a weight
# beyond $w_{\max}$.
#
# **Prepared for you** in the cell below (section 4 freed section 3's model and probe, so the cell
# loads the checkpoint again and collects the same expert's routed tokens):
#
# * `W_lab` (rows x cols, fp32): section 3's expert matrix, dense, every weight kept (QMoE mode:
#   an input no routed token fired keeps its weights);
# * `U_lab` (cols x cols): the upper Cholesky factor of $(H + \lambda I)^{-1}$, with
#   $\lambda$ = `percdamp` times the mean of $H$'s diagonal and $H = 2 X X^\top / n$ over the tokens
#   the router sends this expert (`algorithm.calibrate_expert`, then `obs.prepare(..., keep_dead=True)`).
#
# **Hints.**
#
# * Work on a clone of `W`; find $w_{\min}$ and $w_{\max}$ once, one value per row, before the loop.
# * Keep the inequalities strict, as above: a weight exactly at half an extreme goes to 0.
# * You do not need GPTQ's lazy batches: they regroup the same updates for speed.
# * QMoE then stores each row's $w_{\min}$ and $w_{\max}$ in bf16 (`algorithm.snap_ternary_scales`,
#   applied by `algorithm.compress` after the sweep). Leave that step out: the check compares before it,
#   as section 3 does.
#
# The check runs the library's ternary GPTQ (`batched.quantize_batched`, the sweep section 4 ran)
# on the same $W$ and $H$, compares your $Q$ with its result, checks that your output error is
# below that of round-to-nearest (RTN) on the same ternary grid, and reports both zero shares.

# %% nbgrader={"grade": false, "grade_id": "lab-20-ternary-gptq", "locked": false, "schema_version": 3, "solution": true}
# The lab's expert: section 3's, from a fresh load of the checkpoint and the same calibration pairs
model_lab, _, _ = algorithm.load(model_name, str(dev), expert_capacity)
names_lab = list(algorithm.expert_layers(model_lab))
name_lab = names_lab[len(names_lab) // 4]                            # section 3's expert matrix
probe_lab = algorithm.calibrate_expert(model_lab, calib, name_lab)        # the library's collector of its routed tokens
W0_lab = probe_lab.layer.weight.detach().float().cpu().clone()       # (rows, cols) the dense expert
H_lab, n_lab = probe_lab.H.cpu(), probe_lab.n                        # (cols, cols) H = 2 X X^T / n
del model_lab, probe_lab                                             # one working copy at a time
W_lab, U_lab = obs.prepare(W0_lab, H_lab, percdamp, keep_dead=True)  # every weight kept; U = upper Cholesky factor of (H + λI)^-1
print(f"{name_lab}: W {tuple(W_lab.shape)}, H from {n_lab:,} routed tokens, percdamp {percdamp}")


def ternary_gptq(W, U):
    """GPTQ's column loop (Algorithm 1, without lazy batches) on QMoE's per-row ternary grid.

    W: (rows, cols) fp32 weights; U: (cols, cols) upper Cholesky factor of the dampened H^-1.
    Returns Q (rows, cols): every weight of row i one of {w_min_i, 0, w_max_i}.
    """
    ### BEGIN SOLUTION
    W = W.clone()
    wmin = W.min(dim=1).values.clamp(max=0)                  # (rows,) the grid, from the rows before the sweep
    wmax = W.max(dim=1).values.clamp(min=0)                  # (rows,)
    Q = torch.zeros_like(W)
    for j in range(W.shape[1]):
        w = W[:, j]                                          # (rows,) column j, with the updates so far
        q = torch.where(w > wmax / 2, wmax, torch.where(w < wmin / 2, wmin, torch.zeros_like(w)))
        Q[:, j] = q
        e = (w - q) / U[j, j]                                # (rows,) scaled rounding error
        W[:, j + 1:] -= e[:, None] * U[j, j + 1:][None, :]   # OBS update of the columns still to come
    return Q
    ### END SOLUTION


Q_lab = ternary_gptq(W_lab, U_lab)  # (rows, cols)

# %% nbgrader={"grade": true, "grade_id": "lab-20-ternary-gptq-check", "locked": true, "points": 4, "schema_version": 3, "solution": false} tags=["check"]
from peakllm.workbook import labs

Q_ref_lab = batched.quantize_batched(W0_lab[None], H_lab[None], bits="ternary", percdamp=percdamp, keep_dead=True)[0]
# the library's ternary GPTQ, before the bf16 snap of the extremes; a weight near a grid midpoint can round
# the other way with another summation order (threads), and the error feedback carries it along its row
labs.agree("Q_lab", Q_lab, Q_ref_lab, at_least=0.99)
grid_lab = (Q_lab == 0) | (Q_lab == W0_lab.min(1, keepdim=True).values.clamp(max=0)) | (Q_lab == W0_lab.max(1, keepdim=True).values.clamp(min=0))
labs.outcome(bool(grid_lab.all()), f"{int((~grid_lab).sum())} of your weights are none of their row's {{wmin, 0, wmax}}")
R_lab = quant.rtn(W0_lab, "ternary")             # round to nearest on the same grid
signal_lab = obs.layer_error(W0_lab, torch.zeros_like(W0_lab), H_lab)
labs.ratio_at_most("relative output error", obs.layer_error(W0_lab, Q_lab, H_lab) / signal_lab,
                   obs.layer_error(W0_lab, Q_ref_lab, H_lab) / signal_lab, 1.01)
err_lab, err_rtn_lab = (obs.layer_error(W0_lab, Qx, H_lab) / signal_lab for Qx in (Q_lab, R_lab))
labs.outcome(err_lab < err_rtn_lab, f"your relative output error {err_lab:.4f} is not below ternary RTN's {err_rtn_lab:.4f}")
print(f"{name_lab}, ternary: relative output error ||(W - Q) X||^2 / ||W X||^2 = {err_lab:.4f} with your GPTQ, "
      f"{err_rtn_lab:.4f} with RTN; zeros: {(Q_lab == 0).float().mean():.1%} of your weights, {(R_lab == 0).float().mean():.1%} of RTN's")
labs.passed("QMoE's ternary GPTQ (one expert)")

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Set `percdamp` to 0.01 (GPTQ's default) and rerun. What happens to the ternary GPTQ loss, and why does a coarse grid need stronger dampening?

# %% [markdown] tags=["solution"]
# **Solution 1.** Compare the ternary GPTQ loss and the share of zero expert weights that the run prints with those of the default. The dampening adds a share of the mean diagonal to H before inverting it. With a grid of only three levels every rounding error is large, GPTQ pushes each onto the columns still to be rounded, and where H has small eigenvalues a weakly damped inverse amplifies them; a stronger dampening also pulls the updates toward plain rounding, which leaves more weights at zero. On our small Hessians the effect is modest; on Switch-c2048 QMoE found 0.1 necessary for stable results.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** Set `dict_log2` to 8 and then 16. How do the codes-only and all-inclusive bits per parameter move, and which dictionary size suits this model?

# %% [markdown] tags=["solution"]
# **Solution 2.** A bigger dictionary finds longer frequent sequences, so the codewords alone get cheaper; but the dictionary itself ((entries - 9) x (codeword bits + 4) bits) is stored once for all expert weights, so its share per parameter is that size divided by the expert parameter count of section 1. For a model with a few million expert weights that share grows quickly with the dictionary, and the all-inclusive figure is lowest at a middle size; QMoE's fixed 2^16 entries cost nothing per model, since every model shares them.

# %% [markdown]
# **Exercise 3 (code).** The zero-order entropy of row 0's codes bounds what any code that
# treats weights as independent can reach: $H = -\sum_{v \in \{-1, 0, 1\}} P(v) \log_2 P(v)$ bit per
# weight, with $P(v)$ the share of codes equal to $v$. Compute it as `H_row` from `q_row`, and
# compare it with the bits per weight QMoE's format spent on the row above.

# %% nbgrader={"grade": false, "grade_id": "ex20-1", "locked": false, "schema_version": 3, "solution": true, "task": false}
### BEGIN SOLUTION
P_v = np.array([(q_row == v).mean() for v in (-1, 0, 1)])  # (3,) shares of -1, 0, +1
H_row = float(-(P_v[P_v > 0] * np.log2(P_v[P_v > 0])).sum())
### END SOLUTION
print(f"H = {H_row:.3f} bit per weight; QMoE's format spent {row_bits / len(q_row):.3f} on this row")

# %% nbgrader={"grade": true, "grade_id": "ex20-1-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
assert isinstance(H_row, float) and 0 <= H_row <= np.log2(3)
assert abs(H_row - coding.entropy_bits(q_row[None])) < 1e-9, "H_row differs from the library's entropy"
print("check passed")

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
