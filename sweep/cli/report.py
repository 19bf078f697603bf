"""`gansweep report RUN_DIR`: report.html, the figures as PNG and the tables as CSV (analysis/report.py)."""
from __future__ import annotations

from pathlib import Path

from sweep.cli.common import log, run_dir_of

WHAT = "figures, tables and report.html of a run (the paper's Figures 2-4, and more)"
EXAMPLES = ["gansweep report runs/mini-20261124-101500", "gansweep report runs/paper-... --relative"]


def add_arguments(p) -> None:
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/report)")
    p.add_argument("--relative", action="store_true",
                   help="draw histogram x axes as I' / I'(real MNIST test set) of the run's scorer, so runs "
                        "scored by other classifiers or prob_eps can be placed, not only shaped")


def run(a) -> int:
    from analysis.report import build_report

    run = run_dir_of(a.run_dir)
    out = build_report(run.path, Path(a.out) if a.out else None, relative=a.relative)
    run.sync()  # a run in object storage gets its report there too
    log.info("report: %s", out)
    return 0
