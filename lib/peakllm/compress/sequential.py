"""One sequential driver for any Hugging Face transformer whose blocks sit in a ModuleList.

SparseGPT section 4 (and GPTQ section 4) compress a model block by block: the calibration
inputs of block i+1 are the outputs of the *already compressed* block i, so each block
learns to correct the errors of the ones before it, and only one block's activations are in
memory at a time. Nothing here knows a model family:

* the **stacks** are the outermost ``nn.ModuleList``s holding linear layers, in execution
  order (OPT/Llama/Mixtral: one decoder stack; BERT: the encoder; T5/Switch: encoder, then
  decoder);
* one forward pass per stack records what each block receives besides its hidden state
  (attention masks, rotary embeddings, T5's position bias, the encoder output), and stops
  after the stack's last block;
* block by block, hooks feed every linear layer's inputs to its compressor, the layers are
  compressed, and the block runs again to produce the next block's inputs.

Calibration comes in two forms (``calibration_tensors``): token windows (n, seqlen), as the
papers cut them from running text, or padded lines with their attention mask, as an encoder
such as MiniLM reads sentences. One path serves both, windows being the case where every token
is valid: the mask goes into the model's forward (so the blocks record the model's own extended
mask), and every collector receives only the real tokens of each batch (``ValidTokens``).

Experts stored as fused 3-D parameters (transformers 5.x Mixtral) are compressed matrix by
matrix, each on the tokens the router sent to it (``peakllm.compress.experts``). Router layers
(``router``, ``gate``) are left dense: they are tiny and decide where every token goes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from tqdm.auto import tqdm

from ..core.timing import Timer
from ..models.structure import all_linear_layers, capacity_routers, find_stacks, fused_modules, linear_layers
from .experts import hook_routed_inputs

_LIST_EXPERT = re.compile(r"^(.*)\.experts\.expert_(\d+)\.")  # Switch: <moe>.experts.expert_<e>.wi


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the stack of interest has run."""


def calibration_tensors(calib) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both (n, seqlen), from either form of calibration data:

    * token windows, a LongTensor (n, seqlen): every token valid, the mask all ones;
    * padded lines, a dict or ``transformers.BatchEncoding`` holding ``input_ids`` and
      ``attention_mask`` (1: a token, 0: padding), as a tokenizer returns them with ``padding=True``.
    """
    if torch.is_tensor(calib):
        ids, mask = calib, torch.ones_like(calib)
    elif isinstance(calib, Mapping) and "input_ids" in calib and "attention_mask" in calib:
        ids, mask = calib["input_ids"], calib["attention_mask"]
    else:
        raise ValueError(f"calib of type {type(calib).__name__} is neither token windows (a LongTensor "
                         "(n, seqlen)) nor padded lines (a dict with input_ids and attention_mask)")
    if ids.dim() != 2 or mask.shape != ids.shape:
        raise ValueError(f"calib: input_ids {tuple(ids.shape)} and attention_mask {tuple(mask.shape)} "
                         "must both be (n, seqlen)")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("calib: attention_mask must hold only 0 (padding) and 1 (a token)")
    return ids, mask


# Optional keys of the dict form: the decoder's own inputs (an encoder-decoder calibrated on
# (input, target) pairs, as QMoE calibrates Switch on span corruption), and the tokens whose
# activations go into the statistics (default: the attention mask; QMoE leaves special tokens out).
PAIR_KEYS = ("decoder_input_ids", "decoder_attention_mask")
STATISTICS_KEYS = ("token_mask", "decoder_token_mask")


def calibration_batches(calib, device, batch_size: int | None = None) -> list[dict]:
    """The calibration data as batches ``{"input_ids": (b, t), "attention_mask": (b, t), ...}``
    on ``device`` (with whichever of ``PAIR_KEYS`` and ``STATISTICS_KEYS`` ``calib`` holds);
    ``batch_size=None``: one batch."""
    ids, mask = calibration_tensors(calib)
    parts = {"input_ids": ids, "attention_mask": mask}
    if isinstance(calib, Mapping):
        for k in (*PAIR_KEYS, *STATISTICS_KEYS):
            if k in calib:
                if len(calib[k]) != len(ids):
                    raise ValueError(f"calib[{k!r}] has {len(calib[k])} rows, input_ids {len(ids)}")
                parts[k] = calib[k]
    size = len(ids) if batch_size is None else batch_size
    return [{k: v[i:i + size].to(device) for k, v in parts.items()} for i in range(0, len(ids), size)]


def model_inputs(model, batch: dict) -> dict:
    """Forward arguments for a calibration batch: an encoder-decoder gets its decoder inputs, or
    the encoder's on both sides when the batch has none."""
    kw = {k: v for k, v in batch.items() if k not in STATISTICS_KEYS} | {"use_cache": False}
    if getattr(model.config, "is_encoder_decoder", False) and "decoder_input_ids" not in batch:
        kw |= {"decoder_input_ids": batch["input_ids"], "decoder_attention_mask": batch["attention_mask"]}
    return kw


def statistics_masks(model, stack_name: str, batches: list[dict], real: bool = False) -> list[torch.Tensor]:
    """Per batch, the (b, t) tokens of stack ``stack_name`` whose activations feed the statistics:
    ``token_mask`` (or the attention mask) in an encoder or decoder-only stack, and in the decoder
    of an encoder-decoder given its own inputs ``decoder_token_mask`` (or its attention mask).
    ``real``: the attention masks only -- every real token, special or not (padding left out)."""
    decoder = (getattr(model.config, "is_encoder_decoder", False) and "decoder" in stack_name.split(".")
               and "decoder_input_ids" in batches[0])
    keys = ("decoder_token_mask", "decoder_attention_mask") if decoder else ("token_mask", "attention_mask")
    out = []
    for b in batches:
        m = b.get(keys[1]) if real else b.get(keys[0], b.get(keys[1]))
        out.append(torch.ones_like(b["decoder_input_ids"], dtype=torch.bool) if m is None else m.bool())
    return out


class ValidTokens:
    """The tokens of the calibration batch now running, for the hooks that collect layer inputs:
    the driver sets ``mask`` (b, t), the tokens that feed the statistics, and ``real`` (b, t),
    the tokens that are not padding (None: ``mask``), before each batch.

    A layer's input laid out like the batch -- (b, t, d), or flattened (b·t, d) as a fused
    expert module receives it -- keeps the rows of real tokens. The experts of a ModuleList
    (Switch Transformers) receive the tokens their router chose, (n_e, d), matched to the batch
    through the router's choice (``hook_routers``); where that fails they get their tokens whole.
    """

    def __init__(self):
        self.mask = None  # (b, t) bool: feed the statistics
        self.real = None  # (b, t) bool: not padding; None: as mask
        self.routed = {}  # MoE module name -> (b·t, E) bool: where its router sent each token

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, keep), both (b·t,) bool: the batch's real tokens, and those feeding the statistics."""
        real = (self.mask if self.real is None else self.real).reshape(-1)
        return real, self.mask.reshape(-1) & real

    def split(self, x: torch.Tensor, name: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(b, t, d) or (b·t, d) -> (real tokens (n, d), which of them feed the statistics (n,)):
        what ``Calibration.take`` caps, then masks. The input of ``<moe>.experts.expert_<e>.*``,
        (n_e, d), keeps the real ones among the tokens ``<moe>``'s router sent to expert e (in
        position order, as the experts loop takes them); any other layout is kept whole."""
        real, keep = self.flat()                                             # (b·t,), (b·t,)
        X = x.reshape(-1, x.shape[-1])                                       # (b·t, d), (n_e, d) or other
        if x.shape[:-1] in (self.mask.shape, real.shape):
            return X[real], keep[real]
        m = _LIST_EXPERT.search(name)
        if m and m.group(1) in self.routed:
            chosen = self.routed[m.group(1)][:, int(m.group(2))]           # (b·t,) sent to expert e
            if int(chosen.sum()) == X.shape[0]:
                real, keep = real[chosen], keep[chosen]                      # (n_e,)
                return X[real], keep[real]
        return X, torch.ones(X.shape[0], dtype=torch.bool, device=X.device)  # e.g. the encoder's output

    def tokens(self, x: torch.Tensor, name: str = "") -> torch.Tensor:
        """The tokens of ``x`` that feed the statistics (``split``): (n, d)."""
        X, keep = self.split(x, name)
        return X[keep]

    def hook_routers(self, block: torch.nn.Module) -> list:
        """Forward hooks on the block's Switch-style routers (``<moe>.router`` returning the
        one-hot expert choice (b, t, E) first) that keep each choice in ``routed``."""
        def hook(moe):
            def f(module, inp, out):
                self.routed[moe] = out[0].reshape(-1, out[0].shape[-1]).bool()
            return f
        return [m.register_forward_hook(hook(n.rsplit(".", 1)[0])) for n, m in capacity_routers(block).items()]


def _record(model, stack: torch.nn.ModuleList, batches: list[dict], stop_before: int):
    """Run the model on every batch until block ``stop_before`` is entered (its forward does not
    run; ``len(stack)``: through the whole stack). Returns (hidden states entering block 0, per
    batch) and, per block and batch, the other positional and keyword arguments it received."""
    hidden0, calls, current = [], [[None] * len(batches) for _ in stack], [0]

    def pre_hook(i):
        def hook(module, args, kwargs):
            if args:
                h, rest = args[0], args[1:]
            else:
                h, rest = kwargs["hidden_states"], ()
                kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            if i == 0:
                hidden0.append(h)
            calls[i][current[0]] = (rest, kwargs)
            if i == stop_before:
                raise _Stop
        return hook

    def stop(module, args, output):
        raise _Stop

    handles = [b.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, b in enumerate(stack)]
    if stop_before >= len(stack):
        handles.append(stack[-1].register_forward_hook(stop))
    try:
        for b, batch in enumerate(batches):
            current[0] = b
            try:
                model(**model_inputs(model, batch))
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    return hidden0, calls


def _same(a, b) -> bool:
    """The same argument: the very same object, equal tensors, or containers of such."""
    if a is b:
        return True
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 -- objects without a plain equality differ
        return False


def block_invariant(model, stack: torch.nn.ModuleList, probe) -> bool:
    """Do all blocks receive the same arguments besides the hidden state? Decoder-only models
    pass every block the same mask and rotary embeddings; T5 / Switch do not (block 0 computes
    the position bias the later blocks receive). Asked on a tiny ``probe`` batch (either form
    of ``calibration_tensors``)."""
    if len(stack) < 2:
        return True
    _, calls = _record(model, stack, calibration_batches(probe, next(model.parameters()).device), stop_before=1)
    return _same(calls[0][0], calls[1][0])


def record_stack(model, stack: torch.nn.ModuleList, batches: list[dict]):
    """The hidden states entering block 0 (per batch) and every block's other arguments.

    Where every block receives the same arguments, the calibration batches stop as block 0 is
    entered: like the reference implementations' input catcher, no block runs, so each block
    then runs exactly twice per batch (once to collect its layers' inputs, once to produce the
    next block's inputs). Otherwise (T5, Switch) each batch runs the dense stack once to record
    what every block receives.
    """
    if block_invariant(model, stack, {k: v[:1, :2] for k, v in batches[0].items()}):
        hidden0, calls = _record(model, stack, batches, stop_before=0)
        return hidden0, [calls[0]] * len(stack)
    return _record(model, stack, batches, stop_before=len(stack))


def _run_block(block, hidden, calls_i):
    out = []
    for h, (rest, kwargs) in zip(hidden, calls_i):
        o = block(h, *rest, **kwargs)
        out.append(o[0] if isinstance(o, tuple) else o)
    return out


def _collect(block, hidden, calls_i, masks: list[torch.Tensor], layers: dict, collectors: dict,
             reals: list[torch.Tensor] | None = None) -> None:
    """Run the block over the batches, each linear layer's inputs -- the real tokens of the
    batch, ``reals[b]`` (b, t), those of ``masks[b]`` feeding the statistics -- into its collector.

    Layers fed the very same tensor (q, k and v; gate and up) share one collector's statistics:
    the first of them accumulates, the others take its result (one Hessian per distinct input).
    """
    owner, shared, alive, batch, valid = {}, {}, [], [0], ValidTokens()

    def hook(name):
        def f(module, inp, out):
            x, c = inp[0], collectors[name]
            alive.append(x)  # keeps ids unique within the batch
            first = owner.setdefault((batch[0], id(x), type(c)), name)
            if first == name:
                c.add_timed(*valid.split(x.detach(), name))
            shared.setdefault(name, set()).add(first)
        return f

    hooks = [layer.register_forward_hook(hook(n)) for n, layer in layers.items() if isinstance(layer, torch.nn.Module)]
    hooks += [hook_routed_inputs(module, name, collectors, valid) for name, module in fused_modules(block).items()]
    hooks += valid.hook_routers(block)
    try:
        for b, (h, (rest, kwargs)) in enumerate(zip(hidden, calls_i)):
            batch[0], valid.mask, valid.real = b, masks[b], (None if reals is None else reals[b])
            alive.clear()
            block(h, *rest, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    for name, firsts in shared.items():
        if firsts != {name}:
            if len(firsts) > 1:
                raise RuntimeError(f"{name} shared its inputs with {sorted(firsts)} in different batches")
            collectors[name].share(collectors[firsts.pop()])


@torch.no_grad()
def compress_sequentially(model, calib, make, apply, batch_size: int = 8,
                          progress: bool = True, desc: str = "blocks", apply_group=None) -> list[dict]:
    """Compress every block's linear layers in order.

    ``make(name, layer)`` returns a collector with ``add_batch(inputs)`` (e.g. ``SparseGPT(layer)``);
    ``apply(name, collector)`` compresses the layer (names from the model's root). ``calib`` holds token
    windows (n, seqlen) or padded lines with their attention mask (``calibration_tensors``). Returns one
    row per layer: name, shape, calibration tokens (padding not counted), and ``seconds``: the time of
    the method itself -- folding the layer's inputs into its statistics plus solving -- without the
    block forwards every method shares (how the Wanda paper times pruning, section 5).
    ``apply_group([(name, collector), ...])``, if given, compresses a block's layers in one call
    instead (QMoE batches experts of one shape); its time is shared out equally among them.
    """
    device = next(model.parameters()).device
    batches = calibration_batches(calib, device, batch_size)
    rows = []
    for stack_name, stack in find_stacks(model):
        masks = statistics_masks(model, stack_name, batches)
        reals = statistics_masks(model, stack_name, batches, real=True)
        hidden, calls = record_stack(model, stack, batches)
        for i, block in enumerate(tqdm(stack, desc=f"{desc} ({stack_name})", disable=not progress)):
            layers = linear_layers(block)
            collectors = {n: make(f"{stack_name}.{i}.{n}", layer) for n, layer in layers.items()}
            _collect(block, hidden, calls[i], masks, layers, collectors, reals)
            if apply_group is not None:
                with Timer(device) as t:
                    apply_group([(f"{stack_name}.{i}.{n}", collectors[n]) for n in layers])
                solve = {n: t.seconds / len(layers) for n in layers}
            else:
                solve = {}
                for n in layers:
                    with Timer(device) as t:  # synchronized: on a GPU the solver runs asynchronously
                        apply(f"{stack_name}.{i}.{n}", collectors[n])
                    solve[n] = t.seconds
            rows += [{"layer": f"{stack_name}.{i}.{n}", "shape": tuple(layer.weight.shape),
                      "tokens": collectors[n].n, "seconds": collectors[n].seconds + solve[n]}
                     for n, layer in layers.items()]
            del collectors
            hidden = _run_block(block, hidden, calls[i])  # inputs of the next block, from the compressed one
    return rows


@torch.no_grad()
def calibrate_layer(model, calib, name: str, make, batch_size: int = 8):
    """One layer under the microscope: ``make(layer)`` filled with the inputs the layer ``name``
    (a key of ``all_linear_layers``) sees -- at the real tokens -- when the dense model runs on
    the calibration data."""
    layers = all_linear_layers(model)
    if name not in layers or not isinstance(layers[name], torch.nn.Module):
        raise ValueError(f"name={name!r} is not a linear layer of this model; e.g. {list(layers)[:3]}")
    collector, valid = make(layers[name]), ValidTokens()
    hook = layers[name].register_forward_hook(lambda m, inp, out: collector.add_batch(*valid.split(inp[0], name)))
    forward_calibration(model, calib, [hook, *valid.hook_routers(model)], batch_size, valid, name)
    return collector


@torch.no_grad()
def forward_calibration(model, calib, hooks: list, batch_size: int = 8, valid: ValidTokens | None = None,
                        layer: str = "") -> None:
    """Run the model over the calibration data so ``hooks`` see it (``valid``, if given, holds
    each batch's tokens for the statistics of ``layer``'s stack while it runs); then remove the hooks."""
    device = next(model.parameters()).device
    try:
        for batch in calibration_batches(calib, device, batch_size):
            if valid is not None:
                valid.mask = statistics_masks(model, layer, [batch])[0]
                valid.real = statistics_masks(model, layer, [batch], real=True)[0]
            model(**model_inputs(model, batch))
    finally:
        for h in hooks:
            h.remove()
