import json

import torch

from peakllm.core import memory
from peakllm.core.records import Recorder, format_value, gather, to_frame
from peakllm.core.timing import Timer, best_of


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_saved_activations_counts_each_storage_once_and_skips_weights():
    m, x = mlp(), torch.randn(5, 4)
    with memory.SavedActivations(m) as saved:
        m(x).sum()
    # Linear 1 saves its input (5x4); ReLU saves its output (5x8), which Linear 2 saves again.
    assert saved.bytes == (5 * 4 + 5 * 8) * 4


def test_no_grad_saves_nothing():
    m = mlp()
    with torch.no_grad(), memory.SavedActivations(m) as saved:
        m(torch.randn(5, 4))
    assert saved.bytes == 0


def test_adamw_state_is_8_bytes_per_parameter_and_gradients_4():
    m = mlp()
    n = sum(p.numel() for p in m.parameters())
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(5, 4)).sum().backward()
    opt.step()
    assert memory.weight_bytes(m) == 4 * n
    assert memory.gradient_bytes(m) == 4 * n
    # exp_avg and exp_avg_sq (fp32) plus one scalar step counter per parameter tensor
    assert memory.optimizer_bytes(opt) == 8 * n + 4 * len(list(m.parameters()))


def test_tied_weights_count_once(tiny_random_opt):
    n_unique = sum(p.numel() for p in tiny_random_opt.parameters())  # parameters() dedups
    assert memory.weight_bytes(tiny_random_opt) >= 4 * n_unique
    assert memory.weight_bytes(tiny_random_opt) < 4 * (n_unique + 64 * 16)


def test_training_step_anatomy_adds_up(tiny_random_opt):
    opt = torch.optim.AdamW(tiny_random_opt.parameters())
    x = torch.randint(0, 64, (2, 16))
    parts = memory.training_step_anatomy(tiny_random_opt, opt, {"input_ids": x, "labels": x})
    assert parts["total"] == sum(parts[p] for p in memory.PARTS)
    assert parts["activations"] > 0 and parts["optimizer"] > parts["gradients"] > 0
    assert "peak_rss" in parts or "cuda_peak" in parts


def test_human_bytes():
    assert memory.human(1536) == "1.5 KiB" and memory.human(3 * 2**30) == "3.0 GiB"


def test_timer_and_throughput():
    import time

    with Timer("cpu") as t:
        time.sleep(0.02)
    assert t.seconds >= 0.02  # a timer that read the clock once, or in the wrong order, fails here
    calls, sleeps = [], iter([0.2, 0.005, 0.25])  # the warm-up call is not timed; the fastest timed call wins

    def fn():
        calls.append(1)
        time.sleep(next(sleeps))
    assert 0.005 <= best_of(fn, repeats=2, warmup=1) < 0.2 and len(calls) == 3


def test_records_are_flat_and_round_trip(tmp_path):
    rec = Recorder("00_orientation", {"model_name": "tiny-opt", "seed": 0}, device="cpu")
    rec.add("perplexity", torch.tensor(12.5), "ppl", method="dense", dataset="shakespeare")
    rec.add("bytes", 1024, "B", part="weights")
    path = tmp_path / "run" / "00_orientation.results.json"
    msg = rec.save(str(path))
    assert "2 records written" in msg and str(tmp_path) not in msg
    data = json.loads(path.read_text())
    versions = data[0].pop("versions")
    assert versions["python"].startswith("3.") and versions["torch"] == torch.__version__
    assert data[0] == {"notebook": "00_orientation", "metric": "perplexity", "value": 12.5,
                       "unit": "ppl", "method": "dense", "dataset": "shakespeare", "device": "cpu",
                       "params": {"model_name": "tiny-opt", "seed": 0}}
    data[0]["versions"] = versions
    assert gather(path.parent) == data
    assert list(to_frame(data, raw=True).columns) == ["notebook", "metric", "method", "dataset", "part",
                                                     "value", "unit"]
    assert to_frame(data)["value"].tolist() == ["12.5 ppl", "1.0 KiB"]
    assert "not written" in Recorder("x", {}).save("")


def test_format_value_scales_units():
    assert format_value(2.5e11, "FLOP/s") == "250 GFLOP/s"
    assert format_value(3 * 2**20, "B") == "3.0 MiB"
    assert format_value(None, "s") == "n/a"


def test_median_of_skips_its_warm_up_and_ignores_one_slow_call():
    import time

    from peakllm.core.timing import median_of

    sleeps = iter([0.3, 0.005, 0.3, 0.005])  # warm-up, then one slow call between two fast ones

    def fn():
        time.sleep(next(sleeps))
    assert 0.005 <= median_of(fn, repeats=3, warmup=1) < 0.2
