"""`gansweep compare RUN_A RUN_B` (or `RUN --by SETTING`): two runs, or one run's two halves, side by side."""
from __future__ import annotations

from pathlib import Path

from sweep.cli.common import log, run_dir_of
from sweep.errors import UserError

WHAT = ("two runs side by side: each model's I' histograms overlaid, failure and digit shares, "
        "a Mann-Whitney test of B against A")
EXAMPLES = ["gansweep compare runs/mini-before runs/mini-after",
            "gansweep compare runs/d-batch --by d_batch=separate,joint",
            "gansweep compare runs/d-batch-dcgan-seeds --by d_batch=joint,separate --within nLayerD,lr"]


def add_arguments(p) -> None:
    p.add_argument("run_a", metavar="RUN_A", help="the run to compare against (drawn outlined)")
    p.add_argument("run_b", metavar="RUN_B", nargs="?", help="the run compared (drawn filled)")
    p.add_argument("--by", metavar="SETTING[=A,B]", default=None,
                   help="instead of RUN_B: split RUN_A by a setting it varies, e.g. --by d_batch=separate,joint "
                        "(without values: its two values in sorted order)")
    p.add_argument("--within", metavar="AXES", default=None,
                   help="also compare inside every cell of these axes or settings, e.g. --within nLayerD,lr "
                        "(one row per model and cell)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_B/compare-<RUN_A's name>, "
                                               "or RUN_A/compare-<SETTING>)")


def run(a) -> int:
    from analysis.compare import build_compare, format_table, runs_sides, split_sides

    from sweep.plan.config import AXES, SETTINGS

    if (a.run_b is None) == (a.by is None):
        raise UserError("compare: give RUN_B, or --by SETTING to split RUN_A (not both)")
    within = tuple(a.within.split(",")) if a.within else ()
    unknown = [w for w in within if w not in AXES + ("seed",) + SETTINGS]
    if unknown:
        raise UserError(f"--within {a.within}: {unknown[0]!r} is not an axis or setting")
    run_a = run_dir_of(a.run_a).path  # a path, or a run in object storage as its working copy
    if a.by is not None:
        side_a, side_b, real = split_sides(run_a, a.by)
        out = Path(a.out) if a.out else run_a / f"compare-{a.by.partition('=')[0]}"
    else:
        run_b = run_dir_of(a.run_b).path
        side_a, side_b, real = runs_sides(run_a, run_b)
        out = Path(a.out) if a.out else run_b / f"compare-{run_a.resolve().name}"
    page, table = build_compare(side_a, side_b, out, real, within)
    print(format_table(table, side_a.label, side_b.label))
    log.info("compare: %s", page)
    return 0
