"""Calibration on padded lines: the mask reaches the model, and no collector sees a padding token."""
import pytest
import torch

from peakllm.compress import pruning, sequential
from peakllm.compress.obs import Hessian
from peakllm.models import structure

LENGTHS = (5, 9, 14, 3)  # four sentences of the tiny BERT's 64-token vocabulary (pad id 0)


def sentences(vocab=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (1, n), generator=g) for n in LENGTHS]


def padded(sents) -> dict:
    """The sentences as a tokenizer pads them: right padding, attention_mask 0 at the pads."""
    width = max(s.shape[1] for s in sents)
    ids = torch.zeros(len(sents), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sents):
        ids[i, : s.shape[1]], mask[i, : s.shape[1]] = s[0], 1
    return {"input_ids": ids, "attention_mask": mask}


def collect(model, calib, collectors, batch_size):
    """Every layer's Hessian through the driver, the layers left as they are (apply does nothing)."""
    def make(name, layer):
        return collectors.setdefault(name, Hessian(layer.weight.shape[1]))
    sequential.compress_sequentially(model, calib, make, lambda name, c: None, batch_size, progress=False)


def test_padded_batches_give_the_hessians_of_the_sentences_one_by_one(tiny_model):
    """Every layer of every block, through the recorded extended mask of the padded batches."""
    m = tiny_model("bert")
    batched, alone = {}, {}
    collect(m, padded(sentences()), batched, batch_size=2)
    for s in sentences():
        collect(m, s, alone, batch_size=1)  # windows: every token valid, no padding anywhere
    assert batched.keys() == alone.keys() and len(batched) == 12
    for name in batched:
        assert batched[name].n == alone[name].n == sum(LENGTHS), name
        torch.testing.assert_close(batched[name].H, alone[name].H, atol=1e-5, rtol=0, msg=name)


def test_calibrate_layer_sees_only_the_real_tokens(tiny_model):
    m = tiny_model("bert")
    name = "bert.encoder.layer.1.intermediate.dense"
    h = sequential.calibrate_layer(m, padded(sentences()), name, lambda layer: Hessian(layer.weight.shape[1]))
    ref = Hessian(h.H.shape[0])
    for s in sentences():
        sequential.calibrate_layer(m, s, name, lambda layer: ref)
    assert h.n == ref.n == sum(LENGTHS)
    torch.testing.assert_close(h.H, ref.H, atol=1e-5, rtol=0)


def test_fused_experts_are_routed_only_the_real_tokens(tiny_model):
    m = tiny_model("mixtral", preset="compress")  # 4 experts, top-2: every token reaches two experts
    seen = {}
    collect(m, padded(sentences()), seen, batch_size=2)
    routed = sum(c.seen for n, c in seen.items() if n.startswith("model.layers.0.mlp.experts.gate_up_proj."))
    assert routed == 2 * sum(LENGTHS)


@pytest.mark.parametrize("family", ["opt", "llama", "t5", "switch"])
def test_padded_lines_calibrate_every_family_on_their_real_tokens(tiny_model, family):
    """Decoder-only, encoder-decoder (the mask on both sides) and Switch's routed experts."""
    m = tiny_model(family, preset="compress")
    rows = pruning.prune(m, padded(sentences()), "sparsegpt", 0.5, batch_size=2, progress=False)
    assert {r["how"] for r in rows} == {"calibrated"} and rows[0]["tokens"] == sum(LENGTHS)


def test_each_block_runs_twice_per_batch_with_padded_lines(tiny_model):
    m = tiny_model("bert", num_hidden_layers=4)
    counts = {}
    hooks = [b.register_forward_hook(  # a completed forward of the block on a calibration batch of 2
        lambda mod, args, kwargs, out, i=i: counts.__setitem__(i, counts.get(i, 0) + 1)
        if (args[0] if args else kwargs["hidden_states"]).shape[0] == 2 else None, with_kwargs=True)
        for i, b in enumerate(structure.find_stacks(m)[0][1])]
    try:
        pruning.prune(m, padded(sentences()), "sparsegpt", 0.5, batch_size=2, progress=False)
    finally:
        for h in hooks:
            h.remove()
    assert [counts.get(i, 0) for i in range(4)] == [2 * 2] * 4  # 2 batches x 2 passes, every block


def test_calibration_in_neither_form_fails_naming_both(tiny_model):
    m = tiny_model("bert")
    with pytest.raises(ValueError, match="neither token windows.*nor padded lines"):
        pruning.prune(m, {"input_ids": torch.ones(2, 4, dtype=torch.long)}, "sparsegpt", progress=False)
    with pytest.raises(ValueError, match=r"attention_mask \(2, 3\) must both be \(n, seqlen\)"):
        pruning.prune(m, {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 3)},
                      "sparsegpt", progress=False)


@pytest.mark.slow
def test_sparsegpt_prunes_minilm_on_padded_lines_to_half_in_every_encoder_layer():
    from peakllm import models
    from peakllm.core.embeddings import cosine_to, embed
    from peakllm.data import evaldata

    model, tok = models.load("minilm", device="cpu")
    texts = evaldata.lines("test", n=32)
    dense = embed(model, tok, texts)
    rows = pruning.prune(model, evaldata.calibration_lines(tok, nsamples=16), "sparsegpt", 0.5, progress=False)
    layers = structure.all_linear_layers(model)
    assert len(rows) == len(layers) == 6 * 6 and all(n.startswith("encoder.layer.") for n in layers)
    assert all(r["sparsity"] == pytest.approx(0.5, abs=1e-3) for r in pruning.sparsity_report(layers))
    assert cosine_to(dense, embed(model, tok, texts))[1] > 0.5  # still an encoder, no NaN


def test_column_norms_and_inputs_keep_the_tokens_they_fold_in():
    import torch

    from peakllm.compress.baselines import ColumnNormsAndInputs

    acc = ColumnNormsAndInputs(torch.nn.Linear(4, 2))
    X = torch.randn(2, 3, 4)  # (batch, tokens, columns)
    acc.add_batch(X)
    assert torch.equal(acc.inputs(), X.reshape(-1, 4)) and torch.allclose(acc.sq, X.reshape(-1, 4).pow(2).sum(0))
