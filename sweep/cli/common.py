"""What every gansweep command shares: the argument parser's conventions, shared options, the
sweep file and preset a command reads, the device, and the console's log lines.

Conventions: flags are kebab-case (a config field's own spelling stays an alias); a usage
error is one line and exit status 2 (main prints the "gansweep: " prefix); a help text
computed from the registries waits until it is shown (LazyHelp), so building the parser never
imports torch.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from sweep.errors import UserError

log = logging.getLogger("gansweep")


class LazyHelp(str):
    """A help text computed only when help is shown: the family and arch choices come from the
    registries, whose import costs torch's (seconds), which no other use of the parser should pay."""

    def __new__(cls, make):
        text = super().__new__(cls, "(computed when shown)")
        text.make = make
        return text


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):
        return action.help.make() if isinstance(action.help, LazyHelp) else action.help


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        where = self.prog.removeprefix("gansweep").strip()  # main prints the "gansweep: " prefix
        raise UserError(f"{where + ': ' if where else ''}{message} (see {self.prog} --help)")


def parse_bool(text: str) -> bool:
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


def flags(name: str) -> list[str]:
    """The flag of a field, then its old spelling when that differs."""
    return list(dict.fromkeys([flag(name), f"--{name}"]))


def add_verbosity(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true",
                   help="more detail: gansweep's debug lines, and Ray's own warnings and worker logs")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (no progress lines)")


def add_data_args(p: argparse.ArgumentParser, download: bool = True) -> None:
    p.add_argument("--data-root", metavar="DIR", help="folder holding MNIST/raw (default: $GANSWEEP_DATA, "
                                       "else ~/.cache/gansweep)")
    if download:
        p.add_argument("--download", action="store_true", help="download MNIST if it is missing")


def add_plugin_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a .py file (or module) that registers families or archs (see docs/extending.md); repeatable. "
                        "A run records its plugins, and resume loads them again")


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="sweep file (default: ./sweep.yaml when there is one, else the copy shipped with gansweep; "
                        "`gansweep init` writes an editable copy)")
    add_plugin_arg(p)


def add_cost_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cost", default=None, metavar="FILE",
                   help="the cost model to estimate time with (default: the one `gansweep bench` stored for this "
                        "machine's device in ~/.cache/gansweep/cost-<cpu|cuda>.json; where there is none, 20 "
                        "GFLOP/s per slot is assumed)")
    g.add_argument("--gflops", type=float, default=None,
                   help="instead: assume one trial slot sustains this many GFLOP/s")


def cost_model_of(a, device_type: str):
    """The plan's time model (sweep/plan/cost.py): --gflops, --cost FILE, the stored one, or assumed."""
    from sweep.plan.cost import cost_model_for

    if a.gflops is not None and not a.gflops > 0:
        raise UserError(f"--gflops {a.gflops:g}: expected a number > 0")
    return cost_model_for(device_type, a.cost, a.gflops)


def add_preset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="mini", metavar="NAME", help="which preset of the sweep file (default: mini; "
                                                    "`gansweep presets` lists them)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of every point, e.g. --set epochs=4 --set n_eval=2000 "
                        "(any setting of `gansweep trial --help`, validated like the sweep file); repeatable")
    p.add_argument("--seeds", default=None, metavar="LIST",
                   help="the seeds to repeat every grid point with, e.g. 0,1,2 (default: the preset's `seeds`)")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="run N points of the preset's grid, a seeded sample stratified by model and axis value; "
                        "overrides the preset's own `sample`")
    p.add_argument("--sample-seed", type=int, default=None, metavar="S",
                   help="seed of the sample (default: the preset's `sample_seed`, else 0)")


def add_pack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", default="auto", metavar="K",
                   help="grid points per Tune trial, trained as stacked models of one shape: "
                        "a number, or auto (1 on CPU; on a GPU 1 up to 512 points, beyond, packs that keep Tune "
                        "near 512 trials). Fixed for a run once it starts")
    p.add_argument("--keep-weights", action="store_true",
                   help="keep each ok point's final G weights in RUN_DIR/weights/ (never optimizer state)")


def field_help(name: str, default) -> str:
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


def device_of(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if not (name == "cpu" or name.startswith("cuda")):
        raise UserError(f"--device {name}: expected auto, cpu or cuda[:N]")
    return name


def run_dir_of(text: str):
    """A run (a RunDir) as status and report take it: a path as given; a run in object storage
    (s3://bucket/prefix/name) as its local working copy, ./runs/<name>, refreshed from the storage
    first unless a gansweep on this machine is writing it (then that copy is the newest)."""
    from sweep.record.rundir import RunDir
    from sweep.record.store import run_argument
    from sweep.runner.lock import RunLock

    local, store = run_argument(text)
    if store is None:
        return RunDir(local)
    store.check()
    local.mkdir(parents=True, exist_ok=True)
    run = RunDir(local)
    try:
        with RunLock(local, "pull"):
            store.pull(local)
            run.use_store(store)
    except UserError:  # in use by a run or resume here: its working copy is ahead of the storage
        log.info("%s is being written on this machine: reading it, not %s", local, text)
    return run


def pack_size_of(a, n_points: int, device: str) -> int:
    from sweep.plan.packs import auto_pack_size, parse_pack

    return parse_pack(a.pack) or auto_pack_size(n_points, device)


def sweep_file_of(a) -> Path:
    """The sweep file a command reads (--config, ./sweep.yaml or the shipped one), with --plugin's
    families and archs registered first, since the file may name them."""
    from models.registry import add_plugin_sources
    from sweep.plan.grid import sweep_file

    add_plugin_sources(a.plugin)
    return sweep_file(a.config)


def preset_of(a):
    """The preset a plan or run asks for: its sweep file, plugins, --set, --seeds and --sample."""
    from sweep.plan.grid import load_preset, parse_overrides

    overrides = parse_overrides(a.overrides, a.seeds)  # the command line first: its errors are the cheapest
    path = sweep_file_of(a)
    return path, load_preset(path, a.preset, a.sample, a.sample_seed, overrides=overrides)


class _ConsoleHandler(logging.Handler):
    """gansweep's log lines: progress (info, debug) on stdout, warnings and errors on stderr, each
    written to whatever sys.stdout / sys.stderr is when the line is logged (main() may run in a
    process, a test say, that swaps them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


class LogFormatter(logging.Formatter):
    """One prefix for every line: "[gansweep] ", and "warning: " on warnings."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"[gansweep] warning: {text}" if record.levelno == logging.WARNING else f"[gansweep] {text}"


def setup_logging(verbose: bool, quiet: bool) -> None:
    """The "gansweep" logger, which every module logs to: info by default, debug with --verbose,
    warnings only with --quiet. --verbose also lets Ray's warnings through (sweep/runner/cluster.py),
    e.g. its slow experiment-state saves at thousands of trials."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _ConsoleHandler()
    handler.setFormatter(LogFormatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
