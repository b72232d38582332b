"""What each expert of a fused mixture-of-experts module sees, for the compressors' statistics.

Fused experts (transformers 5.x Mixtral, Qwen-MoE, OLMoE; ``models.structure``) are one module
holding ``gate_up_proj`` (E, 2I, H) and ``down_proj`` (E, H, I), called as
``experts(hidden_states, top_k_index, top_k_weights)``. ``models.structure.ExpertMatrix``
presents expert e's slice as a linear layer; ``routed_inputs`` recomputes what each expert
matrix sees: the tokens the router sent to expert e (for ``gate_up_proj``) and act(gate) * up of
those tokens (for ``down_proj``), and ``hook_routed_inputs`` feeds them to each matrix's
collector. Pruning and quantization code then treats every expert matrix like any other linear
layer, each with its own calibration inputs. ``zeroed`` silences layers for a what-if.
"""
from __future__ import annotations

import contextlib

import torch


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
