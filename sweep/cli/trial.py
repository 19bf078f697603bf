"""`gansweep trial`: one grid point trained and scored without Ray; its options are the config's fields.

    gansweep trial --family ebgan --n-layer-g 3 --n-layer-d 2 --epochs 1
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from datetime import datetime
from pathlib import Path

from sweep.cli.common import LazyHelp, add_data_args, add_plugin_arg, device_of, field_help, flag, flags, log, parse_bool
from sweep.errors import UserError
from sweep.plan.config import AXES, FIELD_TYPES, SETTINGS, TrialConfig

WHAT = "train and score one grid point, without Ray"
EXAMPLES = ["gansweep trial --family ebgan --n-layer-g 3 --n-layer-d 2 --epochs 1",
            "gansweep trial --family gan --arch dcgan --n-layer-g 4 --n-layer-d 4 --size-g 64 --size-d 64"]


def add_arguments(p) -> None:
    # the declared defaults (an instance would hold energy_norm resolved for its own family)
    defaults = {f.name: f.default for f in dataclasses.fields(TrialConfig)}
    types = {"int": int, "float": float, "bool": parse_bool, "str": str}
    axes = p.add_argument_group("grid axes (Table 1 of the paper)")
    settings = p.add_argument_group("settings the paper leaves open")
    for name in AXES + ("seed",) + SETTINGS:
        group = axes if name in AXES or name == "seed" else settings
        group.add_argument(*flags(name), dest=name, type=types[FIELD_TYPES[name]], default=defaults[name],
                           metavar=FIELD_TYPES[name].upper(),
                           help=LazyHelp(lambda n=name: field_help(n, defaults[n])))
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--n-eval-progress", type=int, default=1000, metavar="N",
                   help="score the epochs before the last on the first N of the --n-eval samples, and the last "
                        "epoch on all of them (default 1000: scoring 10,000 samples each epoch took 5 times as "
                        "long as training a Table 1 point; 0: every scored epoch on all --n-eval)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=None, help="output folder (default: runs/trial-<time>)")
    add_plugin_arg(p)
    add_data_args(p)


def run(a) -> int:
    import torch

    from models.registry import add_plugin_sources
    from sweep.record.rows import summarize
    from sweep.record.schema import OK
    from sweep.train.data import load_mnist
    from sweep.train.loop import run_stack, score_end_again
    from sweep.train.scoring import build_scorer

    add_plugin_sources(a.plugin)
    try:
        cfg = TrialConfig(**{n: getattr(a, n) for n in AXES + ("seed",) + SETTINGS})
    except ValueError as e:
        name, _, why = str(e).partition(": ")
        raise UserError(f"trial: {flag(name)}: {why}") from None
    if a.n_eval_progress < 0:
        raise UserError(f"trial: --n-eval-progress {a.n_eval_progress}: expected 0 (off) or a number of samples")
    # the epochs before the last: scored on a prefix of the same fixed noise (sweep/train/point.py eval_noise)
    progress = a.n_eval_progress if 0 < a.n_eval_progress < cfg.n_eval else cfg.n_eval
    device = device_of(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out or f"runs/trial-{datetime.now():%Y%m%d-%H%M%S}")
    mnist = load_mnist(a.data_root, a.download)
    scorer, _ = build_scorer(mnist.test_images, device)
    log.info("%s on %s, %d epoch(s) of %d images, scored on %s samples%s", cfg.point_id, device, cfg.epochs,
             cfg.n_train, f"{progress:,}", "" if progress == cfg.n_eval else f" (the last epoch on {cfg.n_eval:,})")
    t0 = time.time()

    def on_epoch(reported, _ckpt):
        log_epoch(reported[0])

    run, = run_stack([cfg.replace(n_eval=progress)], mnist.train_images, scorer, device, on_epoch=on_epoch)
    if progress < cfg.n_eval and run.outcome().status == OK and run.history:  # a diverged end stays as it was
        log.info("  scoring the last epoch again on %s samples ...", f"{cfg.n_eval:,}")
        log_epoch(score_end_again(run, scorer, cfg.n_eval))
    outcome = run.outcome()
    summary = {"point_id": cfg.point_id, **cfg.as_dict(), "n_eval_progress": progress,
               **summarize(cfg, outcome.history), "wall_seconds": time.time() - t0, "device": device,
               "classifier_sha256": scorer.classifier_sha256}
    write_outputs(out, summary, outcome)
    log.info("%s: I' %.3f, IS %.2f, FID %.2f in %.1fs -> %s", outcome.status, summary["i_prime"],
             summary["inception_score"], summary["fid"], summary["wall_seconds"], out)
    return 0


def log_epoch(m: dict) -> None:
    log.info("  epoch %d: I' %.3f  IS %.2f  FID %.2f  classes %d  digits %.0f%%  loss_d %.4f  loss_g %.4f  "
             "(%.1fs train, %.1fs score)", m["epoch"], m["i_prime"], m["inception_score"], m["fid"],
             m["classes_covered"], 100 * m["digit_share"], m["loss_d"], m["loss_g"], m["train_seconds"],
             m["eval_seconds"])


def write_outputs(out: Path, summary: dict, outcome) -> None:
    """metrics.json (the row's view), curves.csv (one row per scored epoch), samples.png."""
    import pandas as pd

    from analysis.samples import save_sample_grid
    from sweep.record.layout import CURVES_CSV
    from sweep.record.results import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
    write_atomic(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(clean, indent=2)))
    write_atomic(out / CURVES_CSV, lambda p: pd.DataFrame(outcome.history).to_csv(p, index=False))
    if outcome.samples is not None:
        save_sample_grid(outcome.samples, out / "samples.png")
