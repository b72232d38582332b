"""Upstream workarounds, in one place (peakllm.compat)."""
import logging
import types

from peakllm import compat


def test_compat_workarounds_do_what_they_say():
    cc = compat.compile_config("cpu")
    assert cc._compile_all_devices is True and cc.mode == "default"
    assert compat.compile_config("cuda").mode == "reduce-overhead"
    layer = types.SimpleNamespace(support_avx512bf16_for_cpu=True)
    model = types.SimpleNamespace(modules=lambda: [layer, object()])
    compat.keep_bnb_cpu_layout(model)
    assert layer.support_avx512bf16_for_cpu is False
    log = logging.getLogger("bitsandbytes.autograd._functions")
    before = log.level
    try:
        compat.silence_bitsandbytes()
        assert log.level == logging.ERROR
    finally:
        log.setLevel(before)
    gather, scatter = compat.fsdp_collectives()  # the classes FSDP2's public hooks take subclasses of
    from torch.distributed.fsdp import FSDPModule

    assert {gather.__name__, scatter.__name__} == {"DefaultAllGather", "DefaultReduceScatter"}
    assert hasattr(FSDPModule, "set_custom_all_gather") and hasattr(FSDPModule, "set_custom_reduce_scatter")
    assert all(callable(getattr(c, "allocate", None)) for c in (gather, scatter))  # the method subclasses keep

