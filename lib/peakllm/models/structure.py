"""What a transformer is made of, as the compressors see it: its stacks of blocks, each block's
linear layers, and its experts, whatever their layout.

* the **stacks** are the outermost ``nn.ModuleList``s holding linear layers, in execution order
  (OPT/Llama/Mixtral: one decoder stack; BERT: the encoder; T5/Switch: encoder, then decoder);
  ``find_stacks``;
* a block's **linear layers** (``linear_layers``; the whole model's: ``all_linear_layers``) are its
  ``nn.Linear`` modules except the routers (``router``, ``gate``: tiny, and they decide where every
  token goes), plus every matrix of its fused experts;
* experts come in two layouts. A ModuleList/ModuleDict of small MLPs built from ``nn.Linear``
  (SwitchTransformers) needs nothing more; fused 3-D parameters (transformers 5.x Mixtral,
  Qwen-MoE, OLMoE), one module holding ``gate_up_proj`` (E, 2I, H) and ``down_proj`` (E, H, I),
  are presented matrix by matrix as ``ExpertMatrix``, expert e's slice with a linear layer's
  ``weight`` (a view: writing it writes the model). ``capacity_routers`` finds Switch's top-1
  routers, which drop tokens over an expert's capacity.

The compressors (``compress.sequential``, ``compress.qmoe``), the scale-out code
(``train.distributed``) and the notebooks all find layers here.
"""
from __future__ import annotations

import re

import torch

ROUTER = re.compile(r"(^|\.)(router|gate)(\.|$)")  # router layers: left dense
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


def capacity_routers(module: torch.nn.Module) -> dict:
    """Routers with an expert capacity (Switch Transformers' top-1 router), by name: each returns
    its one-hot choice (b, t, E) first, all zero for a token dropped over capacity."""
    return {n: m for n, m in module.named_modules() if hasattr(m, "expert_capacity") and hasattr(m, "num_experts")}


def find_stacks(model: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    """The outermost ModuleLists that contain linear layers, in registration order."""
    stacks = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        if any(name.startswith(s + ".") for s, _ in stacks):
            continue  # nested inside a block (e.g. T5's block.layer)
        if any(isinstance(m, torch.nn.Linear) for m in mod.modules()):
            stacks.append((name, mod))
    if not stacks:
        raise ValueError(f"{type(model).__name__} has no ModuleList of blocks with linear layers")
    return stacks


def linear_layers(block: torch.nn.Module) -> dict:
    """The block's linear layers by name, routers excluded, and its fused experts' matrices."""
    layers = {n: m for n, m in block.named_modules()
              if isinstance(m, torch.nn.Linear) and not ROUTER.search(n)}
    for name, module in fused_modules(block).items():
        layers |= expert_matrices(name, module)
    return layers


def all_linear_layers(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Every compressible linear layer of every block, named from the model's root."""
    return {f"{s}.{i}.{n}": m for s, stack in find_stacks(model)
            for i, block in enumerate(stack) for n, m in linear_layers(block).items()}
