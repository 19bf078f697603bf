"""`gansweep rescore RUN_DIR --sample-bn MODE`: a run's kept generators scored again, drawn another way."""
from __future__ import annotations

from pathlib import Path

from sweep.cli.common import add_data_args, log
from sweep.plan.config import CHOICES

WHAT = "score a run's kept generators again with another sampling setting"
EXAMPLES = ["gansweep rescore runs/mini-... --sample-bn train"]


def add_arguments(p) -> None:
    p.add_argument("run_dir")
    p.add_argument("--sample-bn", required=True, choices=CHOICES["sample_bn"],
                   help="G's batch norm when drawing the samples (see the sample_bn setting)")
    add_data_args(p, download=False)


def run(a) -> int:
    from analysis.rescore import rescore, summary

    table = rescore(Path(a.run_dir), a.sample_bn, a.data_root)
    print(summary(table))
    log.info("%d points -> %s", len(table), Path(a.run_dir) / f"rescore-sample_bn-{a.sample_bn}.csv")
    return 0
