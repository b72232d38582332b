import pytest
import torch

from peakllm.compress import baselines, obs, pruning
from peakllm.compress.quant import Quantizer
from peakllm.compress.sparsegpt import SparseGPT
from peakllm.models.structure import all_linear_layers, find_stacks


def layer_with_hessian(correlated_inputs, rows=32, columns=64, seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(columns, rows, bias=False)
    X = correlated_inputs(columns=columns, seed=seed)
    pruner = SparseGPT(layer)
    for chunk in X.split(512):
        pruner.add_batch(chunk)
    return layer, pruner, X


def prune_copy(correlated_inputs, method, sparsity=0.5, pattern="unstructured", **kw):
    layer, pruner, X = layer_with_hessian(correlated_inputs)
    W0 = layer.weight.detach().clone()
    n, m = pruning.parse_pattern(pattern)
    if method == "sparsegpt":
        pruner.prune(sparsity, n, m, blocksize=kw.get("blocksize", 128), quantizer=kw.get("quantizer"))
    elif method == "wanda":
        baselines.wanda(layer, pruner.H.diag(), sparsity, n, m)
    else:
        baselines.magnitude(layer, sparsity, n, m)
    err = ((X @ W0.t() - X @ layer.weight.t()) ** 2).mean().item()
    return layer.weight.detach(), err, W0, pruner


def test_hessian_is_two_x_xt_over_n(correlated_inputs):
    layer, pruner, X = layer_with_hessian(correlated_inputs)
    assert torch.allclose(pruner.H, 2 * X.t() @ X / len(X), rtol=1e-4, atol=1e-3)
    assert pruner.n == len(X)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda(pattern, correlated_inputs):
    errs = {m: prune_copy(correlated_inputs, m, pattern=pattern)[1] for m in ("magnitude", "wanda", "sparsegpt")}
    assert errs["sparsegpt"] < errs["wanda"] and errs["sparsegpt"] < errs["magnitude"], errs


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_exact_sparsity_fraction(method, sparsity, correlated_inputs):
    W = prune_copy(correlated_inputs, method, sparsity, blocksize=32)[0]
    rows, cols = W.shape
    expect = {"magnitude": int(rows * cols * sparsity),       # per matrix
              "wanda": rows * int(cols * sparsity),           # per row
              "sparsegpt": (cols // 32) * int(rows * 32 * sparsity)}  # per block of 32 columns
    assert (W == 0).sum().item() == expect[method]


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_every_n_m_group_holds(method, pattern, correlated_inputs):
    W = prune_copy(correlated_inputs, method, pattern=pattern)[0]
    n, m = pruning.parse_pattern(pattern)
    zeros = (W == 0).reshape(W.shape[0], -1, m).sum(-1)
    assert (zeros == n).all()
    ok, broken = torch.nn.Linear(*W.shape[::-1], bias=False), torch.nn.Linear(*W.shape[::-1], bias=False)
    ok.weight.data, broken.weight.data = W.clone(), W.clone()
    broken.weight.data[0, :m] = 1.0  # one group with no zeros
    report = pruning.sparsity_report({"ok": ok, "broken": broken}, pattern)
    assert report[0]["n:m holds"] and not report[1]["n:m holds"]


def test_sparsity_zero_leaves_weights_unchanged(correlated_inputs):
    W, err, W0, _ = prune_copy(correlated_inputs, "sparsegpt", sparsity=0.0)
    assert torch.equal(W, W0) and err == 0


def test_joint_quantization_keeps_mask_and_grid(correlated_inputs):
    q = Quantizer(4)
    W, err, W0, _ = prune_copy(correlated_inputs, "sparsegpt", quantizer=q)
    assert (W == 0).float().mean().item() >= 0.5
    kept = W[W != 0]
    assert kept.numel() > 0
    # every kept weight sits on its row's 4-bit grid
    Wq = Quantizer(4).fit(W0).quantize(W)
    assert torch.allclose(W, Wq, atol=1e-6)


def test_obs_closed_form_matches_brute_force_least_squares(correlated_inputs):
    torch.manual_seed(0)
    X = correlated_inputs(n=256, columns=6).double()
    H = 2 * X.t() @ X / len(X)
    w = torch.randn(6, dtype=torch.float64)
    q = 2
    new, loss = obs.remove_one(w, H, q)
    keep = [j for j in range(6) if j != q]
    # brute force: best weights on the kept inputs reproducing w's outputs
    sol = torch.linalg.lstsq(X[:, keep], X @ w).solution
    expect = torch.zeros(6, dtype=torch.float64)
    expect[keep] = sol
    assert torch.allclose(new, expect, atol=1e-8)
    d = w - expect
    assert loss == pytest.approx((d @ H @ d / 2).item(), rel=1e-8)


@pytest.mark.parametrize("bad,match", [
    (dict(sparsity=1.0), "sparsity=1.0 is outside"),
    (dict(sparsity=-0.1), "sparsity=-0.1"),
    (dict(pattern="4:4"), "0 < N < M"),
    (dict(pattern="3:5"), "M=5 does not divide"),
    (dict(pattern="dense"), "pattern='dense'"),
    (dict(method="obs"), "method='obs'.*magnitude.*wanda.*sparsegpt"),
    (dict(bits=5), "bits=5"),
])
def test_bad_arguments_fail_before_pruning(bad, match, tiny_random_opt):
    before = [p.clone() for p in tiny_random_opt.parameters()]
    with pytest.raises(ValueError, match=match):
        pruning.prune(tiny_random_opt, torch.zeros(2, 8, dtype=torch.long), **bad)
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_random_opt.parameters()))


def test_calibration_longer_than_the_context_fails_before_pruning(tiny_random_opt):
    before = [p.clone() for p in tiny_random_opt.parameters()]
    with pytest.raises(ValueError, match="exceed the model's context of 32"):
        pruning.prune(tiny_random_opt, torch.zeros(2, 64, dtype=torch.long))
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_random_opt.parameters()))


@pytest.mark.parametrize("family,stacks", [("opt", 1), ("llama", 1), ("mixtral", 1), ("bert", 1), ("t5", 2),
                                           ("switch", 2)])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_driver_runs_on_model_families(family, stacks, method, tiny_model):
    model = tiny_model(family, preset="compress")
    assert len(find_stacks(model)) == stacks
    calib = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    report = pruning.prune(model, calib, method=method, sparsity=0.5, blocksize=16, batch_size=2, progress=False)
    layers = all_linear_layers(model)
    assert [r["layer"] for r in report] == list(layers)
    for row in pruning.sparsity_report(layers):
        assert row["sparsity"] >= 0.5, row
    assert not any("router" in n for n in layers)
    kw = {"decoder_input_ids": calib} if model.config.is_encoder_decoder else {}
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=calib, **kw).logits).all()


def test_fused_experts_are_pruned_each_on_its_own_tokens(tiny_model):
    from peakllm.models.structure import ExpertMatrix

    model = tiny_model("mixtral", preset="compress")
    calib = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    report = {r["layer"]: r for r in pruning.prune(model, calib, method="sparsegpt", blocksize=16, progress=False)}
    experts = {n: layer for n, layer in all_linear_layers(model).items() if isinstance(layer, ExpertMatrix)}
    assert len(experts) == 2 * 4 * 2  # layers x experts x (gate_up, down)
    fused = model.model.layers[0].mlp.experts
    assert (fused.gate_up_proj == 0).float().mean() >= 0.5 and (fused.down_proj == 0).float().mean() >= 0.5
    tokens = [report[n]["tokens"] for n in experts if ".gate_up_proj." in n and n.startswith("model.layers.0")]
    assert sum(tokens) == 4 * 16 * 2  # top-2: every token reaches two experts


def test_calibrate_layer_sees_the_layer_inputs(tiny_random_opt):
    from peakllm.compress.obs import Hessian
    from peakllm.compress.sequential import calibrate_layer

    calib = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    name = "model.decoder.layers.0.fc2"
    h = calibrate_layer(tiny_random_opt, calib, name, lambda layer: Hessian(layer.weight.shape[1]))
    assert h.n == 4 * 16 and h.H.shape == (32, 32)
    with pytest.raises(ValueError, match="name='fc9'"):
        calibrate_layer(tiny_random_opt, calib, "fc9", Hessian)
