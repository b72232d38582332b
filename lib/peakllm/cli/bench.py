"""``python -m peakllm bench``: SparseGPT and GPTQ timed on one layer at the papers' shapes
(random weights; ``peakllm.compress.bench``), its records saved to ``runs/bench/<device>.json``."""
from __future__ import annotations


def add(sub) -> None:
    be = sub.add_parser("bench", help="time SparseGPT and GPTQ on one layer at the papers' shapes (random weights)")
    be.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps or cpu")
    be.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="dtype of the weights (the Hessian and the sweep stay fp32)")
    be.add_argument("--repeats", type=int, default=3, help="timed runs per layer and method (the median is kept)")
    be.add_argument("--models", default=None, help="comma-separated, from: OPT-125M, OPT-1.3B, switch-base expert")
    be.add_argument("--out", default=None, help="records file (default runs/bench/<device>.json)")
    be.set_defaults(func=main)


def main(a) -> int:
    from ..compress import bench
    from ..core.checks import as_list
    from ..core.hardware import resolve_device
    from ..core.paths import REPO
    from ..core.records import Recorder

    models = as_list("models", a.models) if a.models else None
    dev = resolve_device(a.device)
    rec = Recorder("bench", {"models": models, "dtype": a.dtype, "repeats": a.repeats}, device=dev.type)
    rows = bench.run(models, device=dev, dtype=a.dtype, repeats=a.repeats, rec=rec)
    print(bench.table(rows).round(3).to_string())
    print(rec.save(str(a.out or REPO / "runs" / "bench" / f"{dev.type}.json")))
    return 0
