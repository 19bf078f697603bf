"""`gansweep status RUN_DIR [--check]`: counts and results so far; starts nothing."""
from __future__ import annotations

from sweep.cli.common import run_dir_of
from sweep.errors import UserError

WHAT = "counts by state and results so far of a run (starts nothing)"
EXAMPLES = ["gansweep status runs/mini-20261124-101500 --check", "gansweep status s3://bucket/gansweep/mini-... --finished"]
EXIT_PENDING = 3  # --finished: some points are still pending


def add_arguments(p) -> None:
    p.add_argument("run_dir")
    p.add_argument("--check", action="store_true",
                   help="also check the tables against the ledger's rules; exit 1 naming the offending "
                        "points if one is broken")
    p.add_argument("--finished", action="store_true",
                   help="exit 0 when no point is pending, else 3 (for scripts, e.g. the Slurm chain's)")


def run(a) -> int:
    from analysis.status import status_lines
    from sweep.record.schema import PENDING
    from sweep.record.heal import damaged_tables
    from sweep.record.results import read_checked_results

    run_dir = run_dir_of(a.run_dir)
    run_dir.manifest  # a directory that is no run says so first
    df = read_checked_results(run_dir.path)
    print("\n".join(status_lines(run_dir, df, damaged_tables(run_dir.path))))
    status = check(run_dir, df) if a.check else 0
    if a.finished and status == 0 and (df["status"] == PENDING).any():
        return EXIT_PENDING
    return status


def check(run_dir, results) -> int:
    """The ledger's rules on the tables: 0 when they hold, 1 naming the broken ones."""
    from sweep.record.results import read_curves
    from sweep.record.rules import check_run

    try:
        curves = read_curves(run_dir.path)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise UserError(f"{run_dir.path}: cannot check: curves.parquet is unreadable ({type(e).__name__}); "
                        f"`gansweep resume {run_dir.path}` rebuilds it") from None
    problems = check_run(run_dir, results, curves)
    if problems:
        print(f"  check: {len(problems)} rule(s) of the ledger broken:")
        for p in problems:
            print(f"    - {p}")
        return 1
    print(f"  check: all {len(results)} rows keep the ledger's rules")
    return 0
