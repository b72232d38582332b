"""Scale-out (peakllm.train.distributed): gloo ranks on the CPU, launch commands."""
import pytest

from peakllm.train import distributed


@pytest.mark.slow  # ~30 s: three launches of torch.distributed processes
def test_two_gloo_ranks_follow_the_single_process_loss(tmp_path):
    kw = dict(steps=3, batch_size=4, seq_len=32)
    one = distributed.launch("single", 1, out=tmp_path / "one.json", **kw)
    for strategy in ("ddp", "fsdp"):
        two = distributed.launch(strategy, 2, out=tmp_path / f"{strategy}.json", **kw)
        assert two["world_size"] == 2 and two["backend"] == "gloo"
        assert max(abs(a - b) for a, b in zip(one["losses"], two["losses"])) < 1e-4
    full, shard = one["state_bytes_per_rank"][0], two["state_bytes_per_rank"]
    assert all(abs(s["total"] - full["total"] / 2) < 0.01 * full["total"] for s in shard)
    assert two["comm_bytes_per_step"]["reduce_scatter"] == full["gradients"]


def test_launch_checks_its_arguments():
    with pytest.raises(ValueError, match="strategy"):
        distributed.launch_command("zero3")
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        distributed.launch_command("ddp", nproc=8, nnodes=2)
    cmd = distributed.launch_command("fsdp", nproc=8, nnodes=2, rdzv_endpoint="node0:29500", steps=5)
    assert "--rdzv-endpoint=node0:29500" in cmd and cmd[-2:] == ["--steps", "5"]


@pytest.mark.parametrize("device,nproc,gpus,want", [
    ("auto", 2, 0, "cpu"), ("auto", 2, 1, "cpu"), ("auto", 2, 2, "cuda"), ("auto", 1, 1, "cuda"),
    ("cpu", 2, 8, "cpu"), ("cuda", 2, 4, "cuda"),
])
def test_the_ranks_run_where_there_is_one_gpu_per_rank_else_on_gloo(device, nproc, gpus, want):
    where, why = distributed.ranks_device(device, nproc, gpus)
    assert where == want
    assert ("gloo" in why) == (want == "cpu") and ("NCCL" in why) == (want == "cuda")


def test_explicit_cuda_with_too_few_gpus_fails_naming_nproc():
    with pytest.raises(ValueError, match="nproc=2 exceeds the 1 GPU"):
        distributed.ranks_device("cuda", 2, 1)
