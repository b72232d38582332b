"""Where the experts of a mixture-of-experts model live, whatever the layout.

Transformers keeps experts in two layouts:

* a ModuleList/ModuleDict of small MLPs built from ``nn.Linear`` (SwitchTransformers, older
  Mixtral code) -- every expert matrix is an ordinary linear layer;
* fused 3-D parameters (transformers 5.x Mixtral, Qwen-MoE, OLMoE...): one module holds
  ``gate_up_proj`` (E, 2I, H) and ``down_proj`` (E, H, I) and is called as
  ``experts(hidden_states, top_k_index, top_k_weights)``.

For the second layout, ``ExpertMatrix`` presents expert e's slice as a linear layer's
``weight`` (out x in, a view: writing it writes the model), and ``routed_inputs`` recomputes
what each expert matrix sees: the tokens the router sent to expert e (for ``gate_up_proj``)
and act(gate) * up of those tokens (for ``down_proj``). Pruning and quantization code then
treats every expert matrix like any other linear layer, each with its own calibration inputs.
"""
from __future__ import annotations

import contextlib

import torch

FUSED = ("gate_up_proj", "down_proj")


class ExpertMatrix:
    """Expert ``e``'s matrix inside a fused 3-D parameter, with a linear layer's ``weight``."""

    def __init__(self, param: torch.nn.Parameter, e: int):
        self.param, self.e = param, e

    @property
    def weight(self) -> torch.Tensor:
        return self.param.data[self.e]  # (out, in), a view into the 3-D parameter

    def __repr__(self):
        return f"ExpertMatrix(expert={self.e}, shape={tuple(self.weight.shape)})"


def is_fused(module: torch.nn.Module) -> bool:
    return all(isinstance(getattr(module, n, None), torch.nn.Parameter) and getattr(module, n).dim() == 3
               for n in FUSED)


def fused_modules(block: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in block.named_modules() if is_fused(m)}


def expert_matrices(name: str, module: torch.nn.Module) -> dict[str, ExpertMatrix]:
    """``{"<name>.gate_up_proj.<e>": ..., "<name>.down_proj.<e>": ...}`` for every expert."""
    return {f"{name}.{p}.{e}": ExpertMatrix(getattr(module, p), e)
            for e in range(getattr(module, FUSED[0]).shape[0]) for p in FUSED}


@torch.no_grad()
def routed_inputs(module: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                  keep: torch.Tensor | None = None):
    """Yield (e, sent, X_e, Z_e): the inputs of expert e's gate_up_proj and down_proj matrices,
    and ``sent`` (T',) bool, which of the tokens the router sent to e; ``keep`` (T,) bool, if
    given, leaves out the tokens it marks False (padding) first."""
    X = hidden_states.reshape(-1, hidden_states.shape[-1])       # (T, H)
    top_k_index = top_k_index.reshape(X.shape[0], -1)            # (T, k)
    if keep is not None:
        X, top_k_index = X[keep], top_k_index[keep]              # (T', H), (T', k)
    for e in range(module.gate_up_proj.shape[0]):
        sent = (top_k_index == e).any(dim=-1)                    # (T',)
        X_e = X[sent]                                            # (T_e, H)
        gate, up = torch.nn.functional.linear(X_e, module.gate_up_proj[e]).chunk(2, dim=-1)
        yield e, sent, X_e, module.act_fn(gate) * up             # Z_e: (T_e, I)


def hook_routed_inputs(module: torch.nn.Module, name: str, collectors: dict, valid=None):
    """A forward hook feeding each expert matrix's collector its own routed inputs. ``valid``
    (``sequential.ValidTokens``), if given, holds the running batch's masks (b, t): the module
    receives the batch's tokens flattened (b·t, H), so padding is left out before routing, and
    each collector is told which of its routed tokens feed the statistics."""
    def hook(mod, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        index = args[1] if len(args) > 1 else kwargs["top_k_index"]
        real, stats = (None, None) if valid is None else valid.flat()  # (b·t,), (b·t,)
        stats = None if stats is None else stats[real]                  # (T',): of the real tokens
        for e, sent, X_e, Z_e in routed_inputs(mod, hidden, index, real):
            keep = None if stats is None else stats[sent]               # (T_e,)
            collectors[f"{name}.gate_up_proj.{e}"].add_timed(X_e, keep)
            collectors[f"{name}.down_proj.{e}"].add_timed(Z_e, keep)
    return module.register_forward_hook(hook, with_kwargs=True)


def capacity_routers(module: torch.nn.Module) -> dict:
    """Routers with an expert capacity (Switch Transformers' top-1 router), by name: each returns
    its one-hot choice (b, t, E) first, all zero for a token dropped over capacity."""
    return {n: m for n, m in module.named_modules() if hasattr(m, "expert_capacity") and hasattr(m, "num_experts")}


@contextlib.contextmanager
def zeroed(layers: dict):
    """Every ``layers[name].weight`` set to zero inside the block and restored after, even on error."""
    saved = {n: m.weight.detach().clone() for n, m in layers.items()}
    try:
        with torch.no_grad():
            for m in layers.values():
                m.weight.zero_()
        yield layers
    finally:
        with torch.no_grad():
            for n, m in layers.items():
                m.weight.copy_(saved[n])
