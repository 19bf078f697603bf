"""Tables that heal: results and curves are views of Tune's records, so a missing or unreadable
one (a full disk, a cut-short copy) is rebuilt from them; the manifest never is.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from sweep.errors import UserError
from sweep.record.ledger import Ledger
from sweep.record.progress import count
from sweep.record.recovery import curve_row, curves_from_reports, logged_reports, states_from_reports
from sweep.record.layout import CURVES, CURVES_CSV, RESULTS, RESULTS_CSV
from sweep.record.results import read_curves
from sweep.record.rundir import RunDir
from sweep.record.schema import DIVERGED, OK
from sweep.record.store import is_uri


def _readable(path: Path) -> str:
    """'' if a table file reads, else why not ('missing', or the reader's error type)."""
    if not path.is_file():
        return "missing"
    try:
        pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        return ""
    except Exception as e:  # pyarrow and pandas raise several types for damaged files
        return type(e).__name__


def damaged_tables(run_dir: Path) -> dict[str, str]:
    """name -> why, for each derived table of a run that is missing or unreadable."""
    return {name: why for name in (RESULTS, RESULTS_CSV, CURVES, CURVES_CSV)
            if (why := _readable(Path(run_dir) / name))}


def damage_phrase(name: str, why: str, verb: str = "was") -> str:
    """'results.parquet was unreadable (ArrowInvalid)' / 'curves.parquet is missing'."""
    return f"{name} {verb} {'missing' if why == 'missing' else f'unreadable ({why})'}"


def heal(run: RunDir) -> list[str]:
    """Rebuild the derived tables of a run that are missing or unreadable; one line per table.

    results and curves are views of Tune's records: the curves come back from every
    trial's result.json, the rows from each trial's last report (the same rows the
    callback writes). Nothing trains; the manifest (not derivable) is never touched.
    """
    damaged = damaged_tables(run.path)
    if not damaged:
        return []
    tune_path = run.tune_path
    if is_uri(tune_path) or not Path(tune_path).is_dir():
        where = "on remote storage" if is_uri(tune_path) else "missing"
        raise UserError(f"{run.path}: {', '.join(damaged)} cannot be read, and Tune's records are {where} "
                        f"({tune_path}): nothing was changed; restore the tables from a copy")
    curves = {} if CURVES in damaged else {k: r for k, r in (curve_row(x) for x in
                                                            read_curves(run.path).to_dict("records"))}
    logged = logged_reports(tune_path)  # read once: the curves and the rows both come from it
    curves.update(curves_from_reports(logged))
    ledger = Ledger(run, curves, finished_before=set())
    rows = ledger.flush(states_from_reports(logged, run.plan))
    if ledger.dirty:
        raise UserError(f"{run.path}: {', '.join(damaged)} cannot be rewritten (see the warning above)")
    c = count(rows)
    return [f"{damage_phrase(name, why)}: rebuilt from Tune's records ({len(rows)} rows, "
            f"{c[OK] + c[DIVERGED]} finished)" for name, why in damaged.items()]
