"""The sequential driver: as many block forwards as the reference loop, one Hessian per distinct input."""
import pytest
import torch

from peakllm.compress import baselines, pruning, sequential
from peakllm.compress.sparsegpt import SparseGPT
from peakllm.models import structure


def calib(n=4, seqlen=16, vocab=64, seed=0):
    return torch.randint(0, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def count_calibration_forwards(model, batch_size, run):
    counts = {}
    stack_name, stack = structure.find_stacks(model)[0]
    hooks = [b.register_forward_hook(  # a completed forward of the block on a calibration batch
        lambda m, args, kwargs, out, i=i: counts.__setitem__(i, counts.get(i, 0) + 1)
        if (args[0] if args else kwargs["hidden_states"]).shape[0] == batch_size else None, with_kwargs=True)
        for i, b in enumerate(stack)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return [counts.get(i, 0) for i in range(len(stack))]


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_each_block_runs_twice_per_batch_like_the_reference_loop(tiny_model, family):
    """Collect its layers' inputs, then produce the next block's: no extra dense pass."""
    m = tiny_model(family, preset="compress", num_hidden_layers=4)
    x = calib(n=4)
    counts = count_calibration_forwards(m, 2, lambda: pruning.prune(m, x, "sparsegpt", 0.5, batch_size=2, progress=False))
    assert counts == [2 * 2] * 4  # 2 batches x 2 passes, every block


def test_blocks_that_receive_what_earlier_blocks_computed_are_recorded_in_full(tiny_model):
    """T5's later blocks receive the position bias block 0 computes: the driver records every block."""
    m = tiny_model("t5")
    stack = structure.find_stacks(m)[0][1]
    assert not sequential.block_invariant(m, stack, calib(n=1, seqlen=2))
    assert sequential.block_invariant(tiny_model("opt"), structure.find_stacks(tiny_model("opt"))[0][1], calib(1, 2))


def test_layers_fed_the_same_tensor_share_one_hessian(tiny_model):
    m = tiny_model("opt", preset="compress")
    seen = {}

    def make(name, layer):
        seen[name] = SparseGPT(layer)
        return seen[name]

    sequential.compress_sequentially(m, calib(), make, lambda name, c: None, batch_size=2, progress=False)
    q, k, v, o = (seen[f"model.decoder.layers.0.self_attn.{p}"] for p in ["q_proj", "k_proj", "v_proj", "out_proj"])
    assert q.H is k.H is v.H and o.H is not q.H  # q, k, v read the same normalized hidden state
    alone = sequential.calibrate_layer(m, calib(), "model.decoder.layers.0.self_attn.k_proj", SparseGPT, batch_size=2)
    assert k.n == alone.n and torch.allclose(k.H, alone.H, atol=1e-6)


def test_wanda_needs_only_column_norms_and_prunes_as_with_the_hessian_diagonal(tiny_model):
    a, b = tiny_model("opt", preset="compress"), tiny_model("opt", preset="compress")
    rows = pruning.prune(a, calib(), "wanda", 0.5, progress=False)
    name = "model.decoder.layers.1.fc1"
    layer_b = structure.all_linear_layers(b)[name]
    # the same layer of an untouched copy, pruned from the Hessian's diagonal of its inputs in the pruned model's
    # first block: compare on block 0, whose inputs do not depend on pruning
    name0 = "model.decoder.layers.0.fc1"
    h = sequential.calibrate_layer(b, calib(), name0, SparseGPT)
    baselines.wanda(h.layer, h.H.diag(), 0.5)
    assert torch.equal(structure.all_linear_layers(a)[name0].weight == 0, h.layer.weight == 0)
    assert {r["how"] for r in rows} == {"calibrated"} and layer_b.weight.count_nonzero() == layer_b.weight.numel()


def test_a_layers_seconds_count_its_statistics_and_its_solve_not_the_shared_forwards(tiny_model):
    """Timed as the Wanda paper times pruning: statistics + solve, without the block forwards."""
    m = tiny_model("opt", preset="compress")
    seen, solved = {}, {}

    def make(name, layer):
        seen[name] = SparseGPT(layer)
        return seen[name]

    def apply(name, c):
        solved[name] = c.seconds  # what the statistics took, before the solve
        c.prune(0.5)

    rows = {r["layer"]: r["seconds"] for r in
            sequential.compress_sequentially(m, calib(), make, apply, batch_size=2, progress=False)}
    q, k = "model.decoder.layers.0.self_attn.q_proj", "model.decoder.layers.0.self_attn.k_proj"
    assert seen[q].seconds > 0 and seen[k].seconds == 0  # k takes q's Hessian: nothing folded in twice
    assert all(rows[n] > solved[n] for n in rows)  # plus the solve
