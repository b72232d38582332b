"""``python -m peakllm pretrain MODEL``: pretrain a tiny model, reproducing the shipped one
(recipes in ``peakllm.models.pretraining``), resumable from its saved training state."""
from __future__ import annotations

import sys
from pathlib import Path

from ..core.paths import REPO, relative


def add(sub) -> None:
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
    p.set_defaults(func=main)


def main(a) -> int:
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
        r = pretrain(cfg, out, overwrite=a.overwrite, state_dir=state, resume=a.resume, save_every=a.save_every)
    except KeyboardInterrupt:
        if checkpointing.state_file(state).exists():
            step = checkpointing.read_meta(state)["step"]
            print(f"\ninterrupted; `python -m peakllm pretrain {a.model_name}"
                  f"{' --out ' + a.out if a.out else ''}{' --state ' + a.state if a.state else ''} --resume` "
                  f"continues from step {step}", file=sys.stderr)
        return 130
    print(f"{a.model_name}: {r['seconds']:.0f} s, final validation loss {r['log'][-1]['val_loss']}")
    return 0
