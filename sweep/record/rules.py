"""The ledger's rules (sweep/record/rows.py) checked on a run's tables: `gansweep status --check`,
and before every report (a histogram of broken rows would count unfinished runs as finished).

    problems = check_tables(results, curves, planned)    # [] when every rule holds
"""
from __future__ import annotations

import math

import pandas as pd

from models.metric_names import SCORE_KEYS
from sweep.plan.config import FIELD_NAMES, TrialConfig
from sweep.record.rows import _finite, _plain, scored_epochs
from sweep.record.schema import DIVERGED, FINISHED, OK, STATUSES


def _row_config(row: dict) -> TrialConfig | None:
    """The config a row records beside its scores (every row carries its own; None if unusable)."""
    try:
        return TrialConfig(**{k: _plain(row[k]) for k in FIELD_NAMES if k in row})
    except (TypeError, ValueError):
        return None


def name_points(ids) -> str:
    """The first three point ids in order, and how many more (how a line names many points)."""
    ids = sorted(map(str, ids))
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def check_tables(results: pd.DataFrame, curves: pd.DataFrame,
                 planned: tuple[TrialConfig, ...] | None = None) -> list[str]:
    """Every broken rule of the module docstring, one line each naming the point(s); [] if none.

    Each row is checked against the config it records; `planned` (the run's sweep file)
    adds rule 1's "every planned point, and only those".
    """
    problems: list[str] = []

    def rule(what: str, bad) -> None:
        if len(bad):
            problems.append(f"{len(bad)} {what}: {name_points(bad)}")

    # rule 1: one row per point (and per planned point)
    ids = results["point_id"].tolist()
    rule("point(s) have more than one row", sorted(set(results["point_id"][results["point_id"].duplicated()])))
    if planned is not None:
        planned_ids = {c.point_id for c in planned}
        rule("planned point(s) have no row", sorted(planned_ids - set(ids)))
        rule("row(s) are not in the plan", sorted(set(ids) - planned_ids))
    rule("row(s) have an unknown status", [p for p, s in zip(ids, results["status"]) if s not in STATUSES])
    rows = [r for r in results.to_dict("records") if r["status"] in STATUSES]
    cfgs = {r["point_id"]: _row_config(r) for r in rows}
    rule("row(s) record no valid config", [p for p, c in cfgs.items() if c is None])
    rows = [r for r in rows if cfgs[r["point_id"]] is not None]

    def finite_scores(r: dict) -> list[bool]:
        return [_finite(_plain(r[k])) for k in SCORE_KEYS if k in r]

    ok_rows = [r for r in rows if r["status"] == OK]
    rule("ok row(s) did not train every epoch",  # rule 2
         [r["point_id"] for r in ok_rows if r["epochs_done"] != cfgs[r["point_id"]].epochs])
    rule("ok row(s) have non-finite final scores", [r["point_id"] for r in ok_rows if not all(finite_scores(r))])
    rule("diverged row(s) carry no reason",  # rule 3
         [r["point_id"] for r in rows if r["status"] == DIVERGED and not r.get("diverged_reason")])
    rule("unfinished row(s) carry final scores",  # rule 4
         [r["point_id"] for r in rows if r["status"] not in FINISHED and any(finite_scores(r))])
    rule("row(s) have more epochs than planned",  # rule 5
         [r["point_id"] for r in rows if r["epochs_done"] > cfgs[r["point_id"]].epochs])

    # rule 6: the curves
    got, last_ip = {}, {}
    if len(curves):
        key = curves[["point_id", "epoch"]]
        rule("(point, epoch) pair(s) appear more than once in the curves",
             sorted({f"{p}@{e}" for p, e in key[key.duplicated()].itertuples(index=False)}))
        rule("curve point(s) have no results row", sorted(set(curves["point_id"]) - set(ids)))
        got = curves.groupby("point_id")["epoch"].apply(lambda s: sorted(int(e) for e in s)).to_dict()
        last_ip = curves.sort_values("epoch").groupby("point_id")["i_prime"].last().to_dict()
    wrong, differs = [], []
    for r in rows:
        pid = r["point_id"]
        if r["status"] not in FINISHED:
            continue
        if got.get(pid, []) != scored_epochs(cfgs[pid], r["status"], int(r["epochs_done"])):
            wrong.append(pid)
        elif r["status"] == OK and not math.isclose(last_ip.get(pid, math.nan), r["i_prime"],
                                                      rel_tol=1e-9, abs_tol=1e-12):
            differs.append(pid)
    rule("finished point(s) whose curve is not exactly their scored epochs", wrong)
    rule("ok row(s) whose I' differs from their curve's last epoch", differs)
    return problems


def check_files(run, results: pd.DataFrame) -> list[str]:
    """The kept-files rule, one line per kind of file: every ok point has its samples
    (samples/<id>.npy) and, when the run keeps weights, its final G (weights/<id>.pt). The ledger
    writes them before any table records the point finished (sweep/record/ledger.py); a point that
    breaks it lost them afterwards (a deleted file, a run copied in part, or a run of gansweep up
    to 2026-12), and `gansweep resume` trains it again. Diverged points keep samples only if they
    were scored before diverging, so the rule does not ask for theirs."""
    ok = results.loc[results["status"] == OK, "point_id"].tolist()
    problems = []
    for what, lacking in run.missing_files(ok).items():
        if lacking:
            problems.append(f"{len(lacking)} ok point(s) lack their {what} file: {name_points(lacking)}")
    return problems


def check_run(run, results: pd.DataFrame, curves: pd.DataFrame, files: bool = True) -> list[str]:
    """check_tables of a run directory (a RunDir), against its plan when its sweep file is there,
    and (files) check_files."""
    planned = run.plan if run.sweep_file.is_file() else None
    return check_tables(results, curves, planned) + (check_files(run, results) if files else [])
