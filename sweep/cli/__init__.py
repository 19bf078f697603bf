"""The `gansweep` command line: one module per command, each with its help, arguments and action.

    gansweep presets                                                   # what can run, and its cost
    gansweep plan --preset paper                                       # counts and cost
    gansweep run --preset mini --set epochs=4                          # a Ray Tune sweep
    gansweep resume runs/mini-...   /   gansweep status runs/mini-...
    gansweep report runs/mini-...                                      # figures + HTML
    gansweep compare runs/before runs/after                            # two runs side by side
    gansweep trial --family ebgan --n-layer-g 3 --n-layer-d 2 --epochs 1   # one trial, no Ray
    gansweep score --images samples.npy                                # metrics as JSON
    gansweep classifier train                                          # the fixed scorer

A command module (sweep/cli/<command>.py) holds WHAT (its one-line help), EXAMPLES,
add_arguments(parser) and run(args) -> exit status; COMMANDS lists them in the order
`gansweep --help` shows. Bad input (a typo, a missing file, a malformed sweep.yaml, a
missing dataset) is one line on stderr and exit status 2; nothing is written. Progress and
warnings go through the "gansweep" logger (common.setup_logging: -q, -v).

Command modules import what they run inside run(), not at their top: `gansweep --help` imports
every command's module, and stays at 0.5 s because none of them loads torch (1.2 s) or Ray
(1-2 s) to print its help. Everywhere else imports sit at the top of a module, or say why not
on a `# lazy:` line (tests/test_layout.py).
"""
from __future__ import annotations

import faulthandler
import importlib
import os
import signal
import sys

from sweep.cli.common import Parser, add_verbosity, setup_logging
from sweep.errors import Interrupted, UserError

EXIT_USAGE = 2
COMMANDS = ("presets", "init", "plan", "run", "resume", "slurm", "status", "report", "compare", "trial", "score",
            "classifier", "rescore", "bench")


def command(name: str):
    """The module of a command (sweep/cli/<name>.py)."""
    return importlib.import_module(f"sweep.cli.{name}")


class _Subcommands(dict):
    """name -> (what it does, examples), read from the command modules."""

    def __init__(self):
        super().__init__((name, (command(name).WHAT, command(name).EXAMPLES)) for name in COMMANDS)


SUBCOMMANDS = _Subcommands()


def build_parser():
    from sweep import __version__

    ap = Parser(prog="gansweep", description="GAN / EBGAN hyperparameter studies on MNIST with Ray Tune:\nthe EBGAN "
                                             "paper's grid search (Zhao et al. 2017, section 4.1), scored and reported.",
                epilog="start here:\n  gansweep presets\n  gansweep plan --preset mini\n  gansweep run --preset mini\n"
                       "  gansweep report runs/<the run's name>\n\n`gansweep COMMAND --help` explains each command.")
    ap.add_argument("--version", action="version", version=f"gansweep {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for name in COMMANDS:
        mod = command(name)
        p = sub.add_parser(name, help=mod.WHAT, description=mod.WHAT[0].upper() + mod.WHAT[1:] + ".",
                           epilog="examples:\n" + "\n".join(f"  {e}" for e in mod.EXAMPLES))
        add_verbosity(p)
        mod.add_arguments(p)
    return ap


# Errors of bad input raised outside sweep/ (module, class): one line and exit status 2, as UserError.
INPUT_ERRORS = (("models.classifier", "ClassifierError"), ("models.registry", "PluginError"),
                ("sweep.train.data", "DataError"))


def _is_input_error(e: BaseException) -> bool:
    """Whether e is bad input. Checked without importing the errors' modules (models.classifier
    imports torch: 3 s of CPU, which a refused command or `status` never needs): an error of a
    class whose module was never imported cannot have been raised."""
    kinds = [UserError] + [getattr(sys.modules[m], name) for m, name in INPUT_ERRORS if m in sys.modules]
    return isinstance(e, tuple(kinds))


def main(argv: list[str] | None = None) -> int:
    # `kill -USR2 PID` prints where every thread of a gansweep that seems hung is, on its stderr, and
    # it goes on (a driver waiting on storage, say; its Ray workers' stacks: `py-spy dump --pid`).
    faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)  # (Tune takes SIGUSR1: stop)
    try:
        a = build_parser().parse_args(argv)
        setup_logging(a.verbose, a.quiet)
        return command(a.command).run(a)
    except Interrupted as e:  # a sweep stopped by a signal, its tables consistent
        print(f"gansweep: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("gansweep: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gansweep plan | head`: the reader left; nothing to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as e:
        if not _is_input_error(e):
            raise
        print(f"gansweep: {e}", file=sys.stderr)
        return EXIT_USAGE
