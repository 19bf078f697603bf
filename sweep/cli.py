"""The `gansweep` command line.

    gansweep presets                                                   # what can run, and its cost
    gansweep plan --preset paper                                       # counts and cost
    gansweep run --preset mini --set epochs=4                          # a Ray Tune sweep
    gansweep resume runs/mini-...   /   gansweep status runs/mini-...
    gansweep report runs/mini-...                                      # figures + HTML
    gansweep trial --family ebgan --n-layer-g 3 --n-layer-d 2 --epochs 1   # one trial, no Ray
    gansweep score --images samples.npy                                # metrics as JSON
    gansweep classifier train                                          # the fixed scorer

Every subcommand's help (description, examples, options) is in SUBCOMMANDS and
build_parser below; `trial`'s options are the config's fields, documented by
their comments in sweep/plan/config.py.

Bad input (a typo, a missing file, a malformed sweep.yaml, a missing dataset)
is one line on stderr and exit status 2; nothing is written.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

from sweep.plan.config import AXES, CHOICES, FIELD_TYPES, SETTINGS, TrialConfig
from sweep.errors import Interrupted, UserError
from sweep.runner.trackers import TRACKERS

EXIT_USAGE = 2
log = logging.getLogger("gansweep")


class LazyHelp(str):
    """A help text computed only when help is shown: the family and arch choices come from the
    registries, whose import costs torch's (seconds), which no other use of the parser should pay."""

    def __new__(cls, make):
        text = super().__new__(cls, "(computed when shown)")
        text.make = make
        return text


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):
        return action.help.make() if isinstance(action.help, LazyHelp) else action.help


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        where = self.prog.removeprefix("gansweep").strip()  # main prints the "gansweep: " prefix
        raise UserError(f"{where + ': ' if where else ''}{message} (see {self.prog} --help)")


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def flag(name: str) -> str:
    """A config field's command-line flag, in the kebab-case of every other flag: nLayerG ->
    --n-layer-g, batch_size -> --batch-size (the field's own spelling stays an alias)."""
    return "--" + re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).lower().replace("_", "-")


def _flags(name: str) -> list[str]:
    """The flag of a field, then its old spelling when that differs."""
    return list(dict.fromkeys([flag(name), f"--{name}"]))


def _verbosity(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true",
                   help="more detail: gansweep's debug lines, and Ray's own warnings and worker logs")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (no progress lines)")


def _add_data_args(p: argparse.ArgumentParser, download: bool = True) -> None:
    p.add_argument("--data-root", metavar="DIR", help="folder holding MNIST/raw (default: $GANSWEEP_DATA, "
                                       "else ~/.cache/gansweep)")
    if download:
        p.add_argument("--download", action="store_true", help="download MNIST if it is missing")


def _add_plugin_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a .py file (or module) that registers families or archs (models/registry.py); repeatable. "
                        "A run records its plugins, and resume loads them again")


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="sweep file (default: ./sweep.yaml when there is one, else the copy shipped with gansweep; "
                        "`gansweep init` writes an editable copy)")
    _add_plugin_arg(p)


def _add_gflops_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gflops", type=float, default=20.0,
                   help="sustained GFLOP/s of one trial slot, for the time estimate (default 20, "
                        "about one CPU core; `gansweep bench` measures it)")


def _add_preset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="mini", metavar="NAME", help="which preset of the sweep file (default: mini; "
                                                    "`gansweep presets` lists them)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of every point, e.g. --set epochs=4 --set n_eval=2000 "
                        "(any setting of `gansweep trial --help`, validated like the sweep file); repeatable")
    p.add_argument("--seeds", default=None, metavar="LIST",
                   help="the seeds to repeat every grid point with, e.g. 0,1,2 (default: the preset's `seeds`)")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="run N points of the preset's grid, a seeded sample stratified by model and axis value "
                        "(sweep/plan/subset.py); overrides the preset's own `sample`")
    p.add_argument("--sample-seed", type=int, default=None, metavar="S",
                   help="seed of the sample (default: the preset's `sample_seed`, else 0)")


def _add_pack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", default="auto", metavar="K",
                   help="grid points per Tune trial, trained as stacked models of one shape (sweep/plan/packs.py): "
                        "a number, or auto (1 on CPU; on a GPU 1 up to 512 points, beyond, packs that keep Tune "
                        "near 512 trials). Fixed for a run once it starts")
    p.add_argument("--keep-weights", action="store_true",
                   help="keep each ok point's final G weights in RUN_DIR/weights/ (never optimizer state)")


def _field_help(name: str, default) -> str:
    """A config field's help: its comment in sweep/plan/config.py, its choices, its default."""
    from sweep.plan.config import BOUNDS, CHOICES, field_docs

    text = field_docs()[name]
    if name in CHOICES:
        text += f" {{{', '.join(CHOICES[name])}}}"
    elif name in BOUNDS:
        lo, hi = BOUNDS[name]
        text += f" [{lo:g}, {'inf' if hi is None else format(hi, 'g')}]"
    return f"{text} (default: {default})".replace("%", "%%")


# (what it does, examples) of every subcommand: its help line, and the head and foot of its --help
SUBCOMMANDS = {
    "presets": ("list the sweep file's presets: description, trials, estimated cost",
                ["gansweep presets", "gansweep presets --config my.yaml"]),
    "init": ("write an editable copy of the shipped sweep file",
             ["gansweep init                 # ./sweep.yaml", "gansweep init studies/lsgan.yaml"]),
    "plan": ("trial counts per model, FLOPs, estimated time and disk use of a preset (runs nothing)",
             ["gansweep plan --preset paper", "gansweep plan --preset mini --set epochs=4 --seeds 0,1",
              "gansweep plan --preset paper --sample 100"]),
    "run": ("run a preset as a Ray Tune sweep; results land in RUN_DIR as they finish",
            ["gansweep run --preset mini", "gansweep run --preset paper --gpus-per-trial 0.25 --pack auto",
             "gansweep run --preset mini --set epochs=4 --tracker mlflow"]),
    "resume": ("carry on a sweep whose driver stopped, with its recorded preset, overrides and sample",
               ["gansweep resume runs/mini-20261124-101500", "gansweep resume runs/mini-... --restart-errored"]),
    "status": ("counts by state and results so far of a run (starts nothing)",
               ["gansweep status runs/mini-20261124-101500 --check"]),
    "report": ("figures, tables and report.html of a run (the paper's Figures 2-4, and more)",
               ["gansweep report runs/mini-20261124-101500", "gansweep report runs/paper-... --relative"]),
    "trial": ("train and score one grid point, without Ray",
              ["gansweep trial --family ebgan --n-layer-g 3 --n-layer-d 2 --epochs 1",
               "gansweep trial --family gan --arch dcgan --n-layer-g 4 --n-layer-d 4 --size-g 64 --size-d 64"]),
    "score": ("score an array of images with the fixed classifier (I', IS, FID, classes, digit share as JSON)",
              ["gansweep score --images samples.npy"]),
    "classifier": ("train or check the fixed MNIST classifier behind every score",
                   ["gansweep classifier check", "gansweep classifier train --out my_cnn.pt"]),
    "compare": ("two runs side by side: each model's I' histograms overlaid, failure and digit shares, "
                "a Mann-Whitney test of B against A",
                ["gansweep compare runs/mini-before runs/mini-after",
                 "gansweep compare runs/d-batch --by d_batch=separate,joint"]),
    "rescore": ("score a run's kept generators again with another sampling setting",
                ["gansweep rescore runs/mini-... --sample-bn train"]),
    "bench": ("measure the harness against the machine and a plain loop (or Tune at paper scale)",
              ["gansweep bench --out bench.json", "gansweep bench --scale --pack 14"]),
}


def _sub(sub, name: str) -> argparse.ArgumentParser:
    what, examples = SUBCOMMANDS[name]
    p = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".",
                       epilog="examples:\n" + "\n".join(f"  {e}" for e in examples))
    _verbosity(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    from sweep import __version__

    ap = _Parser(prog="gansweep", description="GAN / EBGAN hyperparameter studies on MNIST with Ray Tune:\nthe EBGAN "
                                              "paper's grid search (Zhao et al. 2017, section 4.1), scored and reported.",
                 epilog="start here:\n  gansweep presets\n  gansweep plan --preset mini\n  gansweep run --preset mini\n"
                        "  gansweep report runs/<the run's name>\n\n`gansweep COMMAND --help` explains each command.")
    ap.add_argument("--version", action="version", version=f"gansweep {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    pr = _sub(sub, "presets")
    _add_config_arg(pr)
    _add_gflops_arg(pr)

    it = _sub(sub, "init")
    it.add_argument("file", nargs="?", default="sweep.yaml", help="where to write it (default: ./sweep.yaml)")
    it.add_argument("--force", action="store_true", help="overwrite FILE if it exists")

    pl = _sub(sub, "plan")
    _add_preset_args(pl)
    _add_pack_args(pl)
    _add_gflops_arg(pl)
    _add_config_arg(pl)

    r = _sub(sub, "run")
    _add_preset_args(r)
    r.add_argument("--name", default=None, metavar="NAME", help="run name (default: <preset>-<time>)")
    r.add_argument("--storage", default="runs", metavar="PATH", help="where runs live: a path, NFS path, s3:// or gs://")
    r.add_argument("--address", default=None, metavar="ADDR", help="join an existing Ray cluster (e.g. auto)")
    r.add_argument("--shared-storage", action="store_true",
                   help="assert that a --storage path is visible from every node")
    r.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="N", help="CPUs reserved per trial (default 1)")
    r.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="F", help="e.g. 0.25: four trials per GPU (default 0)")
    r.add_argument("--max-concurrent", type=int, default=0, metavar="N", help="at most this many trials at once "
                                                                 "(default 0: as many as resources allow)")
    r.add_argument("--max-failures", type=int, default=2, metavar="N", help="retries per trial, from its checkpoint (default 2)")
    r.add_argument("--num-cpus", type=int, default=None, metavar="N", help="CPUs of the local Ray instance (default: all)")
    r.add_argument("--tracker", action="append", default=[], choices=TRACKERS,
                   help="also log every point to an experiment tracker (sweep/runner/trackers.py; repeatable): wandb reads "
                        "WANDB_PROJECT / WANDB_MODE, mlflow MLFLOW_TRACKING_URI (default: RUN_DIR/mlruns); "
                        "needs pip install 'gansweep[wandb]' or '[mlflow]'")
    _add_pack_args(r)
    _add_config_arg(r)
    _add_data_args(r)

    rs = _sub(sub, "resume")
    rs.add_argument("run_dir")
    errored = rs.add_mutually_exclusive_group()
    errored.add_argument("--skip-errored", action="store_true", help="do not retry errored trials")
    errored.add_argument("--restart-errored", action="store_true",
                         help="retry errored trials from scratch, not from their last checkpoint")
    rs.add_argument("--address", default=None, metavar="ADDR", help="join an existing Ray cluster (e.g. auto)")
    rs.add_argument("--num-cpus", type=int, default=None, metavar="N", help="CPUs of the local Ray instance (default: all)")
    _add_data_args(rs)

    st = _sub(sub, "status")
    st.add_argument("run_dir")
    st.add_argument("--check", action="store_true",
                    help="also check the tables against the ledger's rules (sweep/record/ledger.py); "
                         "exit 1 naming the offending points if one is broken")

    rp = _sub(sub, "report")
    rp.add_argument("run_dir")
    rp.add_argument("--out", default=None, help="output folder (default: RUN_DIR/report)")
    rp.add_argument("--relative", action="store_true",
                    help="draw histogram x axes as I' / I'(real MNIST test set) of the run's scorer, so runs "
                         "scored by other classifiers or prob_eps can be placed, not only shaped")

    cp = _sub(sub, "compare")
    cp.add_argument("run_a", metavar="RUN_A", help="the run to compare against (drawn outlined)")
    cp.add_argument("run_b", metavar="RUN_B", nargs="?", help="the run compared (drawn filled)")
    cp.add_argument("--by", metavar="SETTING[=A,B]", default=None,
                    help="instead of RUN_B: split RUN_A by a setting it varies, e.g. --by d_batch=separate,joint "
                         "(without values: its two values in sorted order)")
    cp.add_argument("--out", default=None, help="output folder (default: RUN_B/compare-<RUN_A's name>, "
                                                "or RUN_A/compare-<SETTING>)")

    t = _sub(sub, "trial")
    # the declared defaults (an instance would hold energy_norm resolved for its own family)
    defaults = {f.name: f.default for f in dataclasses.fields(TrialConfig)}
    types = {"int": int, "float": float, "bool": _bool, "str": str}
    axes = t.add_argument_group("grid axes (Table 1 of the paper)")
    settings = t.add_argument_group("settings the paper leaves open")
    for name in AXES + ("seed",) + SETTINGS:
        group = axes if name in AXES or name == "seed" else settings
        group.add_argument(*_flags(name), dest=name, type=types[FIELD_TYPES[name]], default=defaults[name],
                           metavar=FIELD_TYPES[name].upper(),
                           help=LazyHelp(lambda n=name: _field_help(n, defaults[n])))
    t.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--out", default=None, help="output folder (default: runs/trial-<time>)")
    _add_plugin_arg(t)
    _add_data_args(t)

    s = _sub(sub, "score")
    s.add_argument("--images", required=True, help=".npy of N x 28 x 28 or N x 32 x 32; uint8 "
                                                   "0..255 or float in [-1, 1]")
    _add_data_args(s)

    c = _sub(sub, "classifier")
    csub = c.add_subparsers(dest="action", required=True, parser_class=_Parser, metavar="ACTION")
    ct = csub.add_parser("train", help="train on the full MNIST training set, with outlier exposure",
                         description="Train the classifier on the full MNIST training set, with outlier exposure.")
    ct.add_argument("--epochs", type=int, default=None, help="passes over the training digits (default: "
                                                             "TRAIN_EPOCHS of models/classifier.py, "
                                                             "which made the committed weights)")
    ct.add_argument("--out", default=None, help="weights file (default: the committed one)")
    _add_data_args(ct)
    cc = csub.add_parser("check", help="accuracy, and scores of real digits and of every outlier kind",
                         description="Accuracy, and scores of real digits and of every outlier kind "
                                     "(noise, garbage, one class): what the instrument says about inputs "
                                     "that must score badly.")
    cc.add_argument("--weights", default=None,
                    help="another classifier file to check (default: the committed, pinned one)")
    cc.add_argument("--json", default=None, help="also write the rows to this JSON file")
    _add_data_args(cc)

    rc = _sub(sub, "rescore")
    rc.add_argument("run_dir")
    rc.add_argument("--sample-bn", required=True, choices=CHOICES["sample_bn"],
                    help="G's batch norm when drawing the samples (see the sample_bn setting)")
    _add_data_args(rc, download=False)

    b = _sub(sub, "bench")
    b.add_argument("--out", default="bench.json", help="where to write the results as JSON (default: bench.json)")
    b.add_argument("--scale", action="store_true",
                   help="instead: the whole paper plan through the engine with the work cut to nothing "
                        "(sweep/runner/scale.py; about 10 minutes on 2 cores)")
    b.add_argument("--pack", default="14", help="with --scale: points per Tune trial (default: 14, what --pack "
                                                  "auto picks for the paper preset on a GPU)")
    b.add_argument("--work", default=None, help="with --scale: folder for its runs (default: a temporary one)")
    _add_config_arg(b)
    _add_data_args(b)
    return ap


# --------------------------------------------------------------------------- commands
def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if not (name == "cpu" or name.startswith("cuda")):
        raise UserError(f"--device {name}: expected auto, cpu or cuda[:N]")
    return name


def cmd_trial(a) -> int:
    import torch

    from sweep.train.data import load_mnist
    from sweep.record.ledger import summarize
    from sweep.train.scoring import build_scorer
    from sweep.train.loop import run_trial

    from models.registry import add_plugin_sources

    add_plugin_sources(a.plugin)
    fields = {n: getattr(a, n) for n in AXES + ("seed",) + SETTINGS}
    try:
        cfg = TrialConfig(**fields)
    except ValueError as e:
        name, _, why = str(e).partition(": ")
        raise UserError(f"trial: {flag(name)}: {why}") from None
    device = _device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out or f"runs/trial-{datetime.now():%Y%m%d-%H%M%S}")
    mnist = load_mnist(a.data_root, a.download)
    scorer, _ = build_scorer(mnist.test_images, device)
    print(f"[gansweep] {cfg.point_id} on {device}, {cfg.epochs} epoch(s) of {cfg.n_train} images",
          flush=True)
    t0 = time.time()

    def on_epoch(m, _ckpt):
        print(f"  epoch {m['epoch']}: I' {m['i_prime']:.3f}  IS {m['inception_score']:.2f}  "
              f"FID {m['fid']:.2f}  classes {m['classes_covered']}  digits {m['digit_share']:.0%}  "
              f"loss_d {m['loss_d']:.4f}  "
              f"loss_g {m['loss_g']:.4f}  ({m['train_seconds']:.1f}s train, "
              f"{m['eval_seconds']:.1f}s score)", flush=True)

    outcome = run_trial(cfg, mnist.train_images, scorer, device, on_epoch=on_epoch)
    summary = {"point_id": cfg.point_id, **cfg.as_dict(), **summarize(cfg, outcome.history),
               "wall_seconds": time.time() - t0, "device": device,
               "classifier_sha256": scorer.classifier_sha256}
    _write_trial_outputs(out, summary, outcome)
    print(f"[gansweep] {outcome.status}: I' {summary['i_prime']:.3f}, IS "
          f"{summary['inception_score']:.2f}, FID {summary['fid']:.2f} in "
          f"{summary['wall_seconds']:.1f}s -> {out}", flush=True)
    return 0


def _write_trial_outputs(out: Path, summary: dict, outcome) -> None:
    import pandas as pd

    from sweep.record.results import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
    write_atomic(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(clean, indent=2)))
    write_atomic(out / "curves.csv", lambda p: pd.DataFrame(outcome.history).to_csv(p, index=False))
    if outcome.samples is not None:
        save_sample_grid(outcome.samples, out / "samples.png")


def save_sample_grid(samples_u8, path: Path, nrow: int = 8) -> None:
    """(N, 32, 32) uint8 -> one PNG grid, written atomically."""
    import torch
    from torchvision.utils import save_image

    from sweep.record.results import write_atomic

    x = torch.as_tensor(samples_u8).float().div(255).unsqueeze(1)  # (N, 1, 32, 32) in [0, 1]
    write_atomic(path, lambda p: save_image(x, p, nrow=nrow, padding=2, pad_value=1.0, format="png"))


def load_images(path: str):
    """A user's .npy of images -> (N, 1, 32, 32) float in [-1, 1], validated."""
    import numpy as np
    import torch

    from sweep.train.data import to_model_space

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--images {path}: no such file")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"--images {path}: not a readable .npy array ({str(e)[:80]})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.shape[1:] not in ((28, 28), (32, 32)):
        raise UserError(f"--images {path}: expected shape N x 28 x 28 or N x 32 x 32, got "
                        f"{' x '.join(map(str, getattr(arr, 'shape', ())))}")
    if arr.shape[0] < 2:
        raise UserError(f"--images {path}: need at least 2 images, got {arr.shape[0]}")
    if arr.dtype == np.uint8:
        return to_model_space(torch.from_numpy(arr))
    if arr.dtype.kind != "f":
        raise UserError(f"--images {path}: dtype {arr.dtype} not supported; use uint8 (0..255) "
                        "or float in [-1, 1]")
    if not np.isfinite(arr).all():
        raise UserError(f"--images {path}: contains NaN or inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1.0001 or hi > 1.0001:
        raise UserError(f"--images {path}: float images must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]")
    x = torch.from_numpy(arr.astype(np.float32)).clamp(-1, 1)
    if x.shape[-1] == 28:
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    return x.unsqueeze(1)


def cmd_score(a) -> int:
    from sweep.train.data import load_mnist
    from sweep.train.scoring import build_scorer

    images = load_images(a.images)  # validate before the slow loads
    mnist = load_mnist(a.data_root, a.download)
    scorer, _ = build_scorer(mnist.test_images)
    metrics = scorer.score(images)
    print(json.dumps({"n": int(images.shape[0]), **metrics,
                      "digit_threshold": scorer.digit_threshold,
                      "classifier_sha256": scorer.classifier_sha256}))
    return 0


def cmd_classifier(a) -> int:
    import torch

    from models.classifier import (TRAIN_EPOCHS, WEIGHTS_PATH, accuracy, digit_threshold,
                                   file_sha256, train_classifier)
    from sweep.train.data import load_mnist, to_model_space
    from sweep.record.results import write_atomic
    from sweep.train.scoring import (REFERENCE_PATH, build_scorer, check_scorer, compute_reference,
                               images_sha256, save_reference)

    # validate before the slow loads
    if a.action == "check" and a.weights and not Path(a.weights).is_file():
        raise UserError(f"--weights {a.weights}: no such file")
    if a.action == "train" and a.epochs is not None and a.epochs < 1:
        raise UserError("gansweep classifier train: --epochs must be >= 1")
    mnist = load_mnist(a.data_root, a.download)
    test_x = to_model_space(mnist.test_images)
    if a.action == "check":
        weights = Path(a.weights) if a.weights else None
        scorer, _ = build_scorer(mnist.test_images, weights=weights)
        acc = accuracy(scorer.classifier, test_x, mnist.test_labels)
        rows = check_scorer(scorer, mnist)
        print(f"classifier {weights or WEIGHTS_PATH}\nsha256 {scorer.classifier_sha256}\n"
              f"test accuracy {acc:.2%}; digit test: top probability >= {scorer.digit_threshold:.4f}")
        print(format_check(rows))
        if a.json:
            doc = {"weights": str(weights or WEIGHTS_PATH), "sha256": scorer.classifier_sha256,
                   "test_accuracy": acc, "digit_threshold": scorer.digit_threshold, "sets": rows}
            write_atomic(Path(a.json), lambda p: Path(p).write_text(json.dumps(doc, indent=2)))
        return 0
    out = Path(a.out) if a.out else WEIGHTS_PATH
    model, acc = train_classifier(to_model_space(mnist.train_images), mnist.train_labels, test_x,
                                  mnist.test_labels, epochs=a.epochs or TRAIN_EPOCHS)
    threshold = digit_threshold(model, test_x)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda p: torch.save(model.state_dict(), p))
    sha = file_sha256(out)
    if out == WEIGHTS_PATH:  # pin the FID reference of the new weights beside them
        ref, scores = compute_reference(model, mnist.test_images, threshold)
        save_reference(REFERENCE_PATH, ref, scores, sha, images_sha256(mnist.test_images))
    print(f"test accuracy {acc:.4%}; wrote {out}\nsha256 {sha}\ndigit threshold {threshold!r}\n"
          "(to pin them, set WEIGHTS_SHA256 and DIGIT_THRESHOLD in models/classifier.py)")
    return 0


def format_check(rows: list[dict]) -> str:
    """The rows of `classifier check` as an aligned text table."""
    lines = [f"{'set':<22} {'group':<20} {'n':>5} {'I_':>7} {'IS':>6} {'FID':>9} {'classes':>7} "
             f"{'digit_share':>11}"]
    for r in rows:
        lines.append(f"{r['set']:<22} {r['group']:<20} {r['n']:>5} {r['i_prime']:>7.3f} "
                     f"{r['inception_score']:>6.2f} {r['fid']:>9.1f} {r['classes_covered']:>7} "
                     f"{r['digit_share']:>11.3f}")
    return "\n".join(lines)


def _pack_size(a, n_points: int, device: str) -> int:
    from sweep.plan.packs import auto_pack_size, parse_pack

    return parse_pack(a.pack) or auto_pack_size(n_points, device)


def cmd_presets(a) -> int:
    from sweep.plan.grid import estimate_flops, load_file, load_preset, slot_hours, source_name

    path = _sweep_file(a)
    names = list(load_file(path)["presets"])
    print(f"presets of {source_name(path)}\n(cost: slot-hours at {a.gflops:g} GFLOP/s per slot; `gansweep plan --preset NAME` "
          "for the details):")
    rows = []
    for name in names:
        p = load_preset(path, name)
        hours = slot_hours(sum(estimate_flops(t) for t in p.trials), a.gflops)
        rows.append((name, f"{len(p.trials):,}", f"{hours:,.1f}", p.description))
    import shutil
    import textwrap

    w = [max(len(r[i]) for r in rows + [("preset", "trials", "slot-h", "")]) for i in range(3)]
    indent = " " * (2 + w[0] + 2 + w[1] + 2 + w[2] + 2)
    width = max(shutil.get_terminal_size((100, 24)).columns, len(indent) + 40)
    print(f"  {'preset':<{w[0]}}  {'trials':>{w[1]}}  {'slot-h':>{w[2]}}  description")
    for r in rows:
        head = f"  {r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  "
        print(textwrap.fill(r[3] or "-", width, initial_indent=head, subsequent_indent=indent))
    return 0


def cmd_init(a) -> int:
    from sweep.plan.grid import PACKAGED_SWEEP, SCHEMA_FILE
    from sweep.record.results import write_atomic

    out = Path(a.file)
    if out.exists() and not a.force:
        raise UserError(f"init: {out} exists; pass --force to overwrite it, or name another file")
    if out.is_dir() or not out.parent.is_dir():
        raise UserError(f"init: {out}: not a file in an existing folder")
    # The header's schema line points at the installed schema, so editors validate this copy too.
    text = re.sub(r"^# yaml-language-server: \$schema=.*$", f"# yaml-language-server: $schema={SCHEMA_FILE.resolve()}",
                  PACKAGED_SWEEP.read_text(), count=1, flags=re.M)
    write_atomic(out, lambda p: Path(p).write_text(text))
    here = out.resolve() == Path("sweep.yaml").resolve()
    print(f"[gansweep] wrote {out}: edit it; " + ("plan and run read it from this folder" if here else
                                                 f"pass --config {out} to plan and run"))
    return 0


def _sweep_file(a) -> Path:
    """The sweep file a command reads (--config, ./sweep.yaml or the shipped one), with --plugin's
    families and archs registered first, since the file may name them."""
    from models.registry import add_plugin_sources
    from sweep.plan.grid import sweep_file

    add_plugin_sources(a.plugin)
    return sweep_file(a.config)


def _preset(a):
    """The preset a plan or run asks for: its sweep file, plugins, --set, --seeds and --sample."""
    from sweep.plan.grid import load_preset, parse_overrides

    overrides = parse_overrides(a.overrides, a.seeds)  # the command line first: its errors are the cheapest
    path = _sweep_file(a)
    return path, load_preset(path, a.preset, a.sample, a.sample_seed, overrides=overrides)


def cmd_plan(a) -> int:
    from sweep.plan.disk import estimate_disk, fmt_bytes
    from sweep.plan.grid import estimate_flops, slot_hours
    from sweep.plan.packs import make_packs

    path, preset = _preset(a)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # what --pack auto picks on this machine
    k = _pack_size(a, len(preset.trials), device)
    packs = make_packs(preset.trials, k)
    counts = preset.counts()
    flops = {}
    for t in preset.trials:
        flops[t.model] = flops.get(t.model, 0.0) + estimate_flops(t)
    total = sum(flops.values())
    from sweep.plan.grid import source_name

    print(f"preset {preset.name} of {source_name(path)}: {preset.description}")
    overridden = preset.overrides.describe()
    print(f"points: {preset.scope}" + (f"; overridden: {overridden}" if overridden else ""))
    print(f"{'model':<15} {'trials':>7} {'TFLOP':>10}")
    for model, n in counts.items():
        print(f"{model:<15} {n:>7} {flops[model] / 1e12:>10.1f}")
    print(f"{'total':<15} {len(preset.trials):>7} {total / 1e12:>10.1f}")
    hours = slot_hours(total, a.gflops)
    print(f"estimated cost: {hours:.1f} slot-hours at {a.gflops:g} GFLOP/s per slot "
          f"(settings: {json.dumps(preset.settings)})")
    biggest = max(len(p.points) for p in packs)
    print(f"Tune trials: {len(packs)} (--pack {a.pack}{' on ' + device if a.pack == 'auto' else ''}: packs of up to "
          f"{biggest} point{'s' if biggest > 1 else ''})")
    disk = estimate_disk(packs, a.keep_weights)
    print(f"disk: peak {fmt_bytes(disk['peak'])} while {disk['slots']} trials run at once (their checkpoints: "
          f"weights and optimizer state), final {fmt_bytes(disk['final'])} ({fmt_bytes(disk['final_per_point'])} "
          f"a point: samples, tables, Tune's logs{', G weights' if a.keep_weights else ''})")
    return 0


def cmd_run(a) -> int:
    from sweep.runner.cluster import Runtime
    from sweep.runner.engine import run_sweep
    config_file, preset = _preset(a)
    _check_runtime(a)
    pack = _pack_size(a, len(preset.trials), "cuda" if a.gpus_per_trial > 0 else "cpu")
    name = a.name or f"{preset.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: a plain name, without '/' or a leading '.'")
    remote = "://" in a.storage
    run_dir = Path("runs" if remote else a.storage) / name
    rt = Runtime(cpus_per_trial=a.cpus_per_trial, gpus_per_trial=a.gpus_per_trial,
                 max_concurrent=a.max_concurrent, max_failures=a.max_failures, address=a.address,
                 num_cpus=a.num_cpus, data_root=a.data_root, pack=pack, keep_weights=a.keep_weights,
                 trackers=tuple(dict.fromkeys(a.tracker)))
    from sweep.runner.trackers import check_tracker

    for name in rt.trackers:
        check_tracker(name)  # installed? before anything starts
    run_sweep(preset, config_file, run_dir, rt, storage=a.storage if remote else None,
              shared_storage=a.shared_storage, download=a.download, quiet=a.quiet)
    return 0


def _check_runtime(a) -> None:
    if not a.cpus_per_trial > 0:
        raise UserError(f"--cpus-per-trial must be positive, got {a.cpus_per_trial:g}")
    if a.gpus_per_trial < 0 or (a.gpus_per_trial > 1 and a.gpus_per_trial != int(a.gpus_per_trial)):
        raise UserError(f"--gpus-per-trial must be a fraction in (0, 1] or a whole number, "
                        f"got {a.gpus_per_trial:g}")
    if a.max_concurrent < 0 or a.max_failures < 0:
        raise UserError("--max-concurrent and --max-failures must be >= 0")
    if a.num_cpus is not None and a.num_cpus < 1:
        raise UserError("--num-cpus must be >= 1")


def cmd_resume(a) -> int:
    from sweep.runner.engine import resume_sweep

    if a.num_cpus is not None and a.num_cpus < 1:
        raise UserError("--num-cpus must be >= 1")
    overrides = {k: v for k, v in (("address", a.address), ("num_cpus", a.num_cpus),
                                   ("data_root", a.data_root)) if v is not None}
    resume_sweep(Path(a.run_dir), overrides, skip_errored=a.skip_errored,
                 restart_errored=a.restart_errored, download=a.download, quiet=a.quiet)
    return 0


def cmd_status(a) -> int:
    from sweep.runner.engine import sweep_status
    from sweep.record.ledger import count, damage_phrase, damaged_tables
    from sweep.record.results import with_models
    from sweep.record.schema import FINISHED, PENDING, STATUSES

    manifest, df = sweep_status(Path(a.run_dir))
    damaged = damaged_tables(Path(a.run_dir))
    c = count(df.to_dict("records"))
    print(f"run {manifest['name']} (preset {manifest['preset']}, created {manifest['created']}): "
          f"{len(df)} grid points")
    print("  " + "  ".join(f"{s} {c[s]}" for s in STATUSES) + f"  (running {c['running']})"
          + (f"; {c['partial']} of the {c[PENDING]} pending stopped part-way and resume from their "
             "checkpoints" if c["partial"] else ""))
    done = with_models(df[df["status"].isin(FINISHED)])
    if len(done):
        from analysis.stats import draws_digits, has_digit_share

        scored = has_digit_share(done)
        print(f"  {'model':<15} {'finished':>8} {'median I_':>9} {'best I_':>8}"
              + (f" {'draw digits':>11}" if scored else ""))
        for model, g in done.groupby("model", sort=False):
            print(f"  {model:<15} {len(g):>8} {g['i_prime'].median():>9.3f} {g['i_prime'].max():>8.3f}"
                  + (f" {draws_digits(g).mean():>11.0%}" if scored else ""))
    for s in manifest.get("sessions", []):
        stopped = f", stopped by {s['stopped_by']}" if s.get("stopped_by") else ""
        print(f"  session {s['started']}: {s['wall_seconds']:.0f}s wall, overhead "
              f"{s['overhead_share']:.1%}{stopped}")
    for name, why in damaged.items():
        print(f"  {damage_phrase(name, why, 'is')}: `gansweep resume {a.run_dir}` rebuilds it from Tune's records")
    if a.check:
        return _check(Path(a.run_dir), df)
    return 0


def _check(run_dir: Path, results) -> int:
    from sweep.record.ledger import check_run
    from sweep.record.results import read_curves

    try:
        curves = read_curves(run_dir)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise UserError(f"{run_dir}: cannot check: curves.parquet is unreadable ({type(e).__name__}); "
                        f"`gansweep resume {run_dir}` rebuilds it") from None
    problems = check_run(run_dir, results, curves)
    if problems:
        print(f"  check: {len(problems)} rule(s) broken (sweep/record/ledger.py):")
        for p in problems:
            print(f"    - {p}")
        return 1
    print(f"  check: all {len(results)} rows keep the ledger's rules (sweep/record/ledger.py)")
    return 0


def cmd_rescore(a) -> int:
    from analysis.rescore import rescore, summary

    table = rescore(Path(a.run_dir), a.sample_bn, a.data_root)
    print(summary(table))
    print(f"[gansweep] {len(table)} points -> {Path(a.run_dir) / f'rescore-sample_bn-{a.sample_bn}.csv'}")
    return 0


def cmd_report(a) -> int:
    from analysis.report import build_report

    out = build_report(Path(a.run_dir), Path(a.out) if a.out else None, relative=a.relative)
    print(f"[gansweep] report: {out}")
    return 0


def cmd_compare(a) -> int:
    from analysis.compare import build_compare, format_table, runs_sides, split_sides

    if (a.run_b is None) == (a.by is None):
        raise UserError("compare: give RUN_B, or --by SETTING to split RUN_A (not both)")
    if a.by is not None:
        side_a, side_b, real = split_sides(Path(a.run_a), a.by)
        out = Path(a.out) if a.out else Path(a.run_a) / f"compare-{a.by.partition('=')[0]}"
    else:
        side_a, side_b, real = runs_sides(Path(a.run_a), Path(a.run_b))
        out = Path(a.out) if a.out else Path(a.run_b) / f"compare-{Path(a.run_a).resolve().name}"
    page, table = build_compare(side_a, side_b, out, real)
    print(format_table(table, side_a.label, side_b.label))
    print(f"[gansweep] compare: {page}")
    return 0


def cmd_bench(a) -> int:
    from sweep.runner.bench import format_table, run_bench
    from sweep.train.data import load_mnist
    from sweep.plan.grid import load_preset

    if a.scale:
        return _bench_scale(a)
    config = _sweep_file(a)
    load_preset(config, "mini")  # the sweep file must hold a valid mini preset
    load_mnist(a.data_root, a.download)  # fail (or download) now, not after minutes of benchmarking
    res = run_bench(config, a.data_root, Path(a.out),
                    log=lambda m: print(f"[gansweep bench] {m}", flush=True))
    print(format_table(res))
    print(f"[gansweep bench] wrote {a.out}")
    return 0


def _bench_scale(a) -> int:
    import tempfile

    from sweep.train.data import load_mnist
    from sweep.plan.grid import load_preset
    from sweep.plan.packs import parse_pack
    from sweep.runner.scale import format_scale, run_scale, write_json

    config = _sweep_file(a)
    load_preset(config, "paper")  # the sweep file must hold a valid paper preset
    parse_pack(a.pack)
    load_mnist(a.data_root, a.download)

    def log(m):
        print(f"[gansweep bench --scale] {m}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gansweep-scale-") as tmp:
        res = run_scale(config, Path(a.work or tmp), a.pack, a.data_root, log)
    write_json(res, Path(a.out))
    print(format_scale(res))
    log(f"wrote {a.out}")
    return 0


COMMANDS = {"presets": cmd_presets, "init": cmd_init, "bench": cmd_bench, "trial": cmd_trial, "score": cmd_score, "classifier": cmd_classifier, "plan": cmd_plan,
            "run": cmd_run, "resume": cmd_resume, "status": cmd_status, "report": cmd_report, "compare": cmd_compare,
            "rescore": cmd_rescore}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (main() may run in a process, a
    test say, that swaps sys.stderr), not to the stream it found when logging was set up."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(verbose: bool, quiet: bool) -> None:
    """gansweep's own log lines ("gansweep" logger) on stderr: info by default, debug with
    --verbose, warnings only with --quiet. --verbose also lets Ray's warnings through
    (sweep/runner/cluster.py), e.g. its slow experiment-state saves at thousands of trials."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("[gansweep] %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    from models.classifier import ClassifierError
    from models.registry import PluginError
    from sweep.train.data import DataError

    try:
        a = build_parser().parse_args(argv)
        setup_logging(a.verbose, a.quiet)
        return COMMANDS[a.command](a)
    except (UserError, DataError, ClassifierError, PluginError) as e:
        print(f"gansweep: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as e:  # a sweep stopped by a signal, its tables consistent
        print(f"gansweep: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("gansweep: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gansweep plan | head`: the reader left; nothing to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
