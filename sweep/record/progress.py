"""How far a run is: counts by status, the live progress line with its ETA, and the record
of each driver session (wall time, harness overhead) that the manifest keeps.
"""
from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from sweep.record.results import read_curves, read_results
from sweep.record.schema import DIVERGED, ERROR, OK, PENDING, STATUSES, TUNE_RUNNING


def count(rows: list[dict]) -> dict[str, int]:
    """Rows per status, plus `running` (Tune is training it now) and `partial` (pending with
    some epochs done: an interrupted point that resumes from its checkpoint)."""
    c = {s: 0 for s in STATUSES}
    c.update(running=0, partial=0)
    for r in rows:
        c[r["status"]] += 1
        c["running"] += r["tune_status"] == TUNE_RUNNING
        c["partial"] += r["status"] == PENDING and r["epochs_done"] > 0
    return c


# how a line a person reads names each status's count ("errored" for the status `error`)
STATUS_WORDS = {OK: "ok", DIVERGED: "diverged", ERROR: "errored", PENDING: "pending"}


def counts_words(counts: dict[str, int]) -> str:
    """Counts by status in words: 'ok 64, diverged 0, errored 0, pending 0'."""
    return ", ".join(f"{STATUS_WORDS[s]} {counts.get(s, 0)}" for s in STATUSES)


def fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def compute_s(row: dict) -> float:
    """Training + scoring seconds a point's report says it has spent (NaN as 0)."""
    t = (row.get("train_seconds") or 0.0) + (row.get("eval_seconds") or 0.0)
    return 0.0 if math.isnan(t) else float(t)


def banked_compute(run_dir: Path) -> float:
    """Training + scoring seconds of every point's latest epoch (what checkpoints hold)."""
    curves = read_curves(run_dir)
    if curves.empty:
        return 0.0
    per_epoch = curves["train_seconds"].fillna(0) + curves["eval_seconds"].fillna(0)
    return float(per_epoch.groupby(curves["point_id"]).max().sum())


def session_summary(run_dir: Path, t0: float, t_fit: float, banked_before: float, slots: int,
                    stopped_by: str) -> tuple[dict, pd.DataFrame]:
    """A session's record for the manifest, and the results table it ended with.

    overhead = 1 - (training + scoring seconds done this session) / (wall x slots):
    Ray start-up, scheduling, checkpoints, result tables and idle slots all count.
    """
    df = read_results(run_dir)
    wall = time.time() - t0
    compute = banked_compute(run_dir) - banked_before
    overhead = max(0.0, 1.0 - compute / (wall * slots)) if wall > 0 else 0.0
    counts = df["status"].value_counts().to_dict()
    return {"started": datetime.fromtimestamp(t0, timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(wall, 2), "startup_seconds": round(t_fit - t0, 2),
            "compute_seconds": round(compute, 2), "slots": slots, "overhead_share": round(overhead, 4),
            "counts": {k: int(counts.get(k, 0)) for k in STATUSES}, "stopped_by": stopped_by,
            "slurm_job": os.environ.get("SLURM_JOB_ID")}, df  # None outside Slurm (sweep/runner/slurm.py)


def interrupted_line(run_dir: Path, df: pd.DataFrame, signal_name: str) -> str:
    """The one line a stopped sweep ends with: how far it got and how to go on."""
    c = count(df.to_dict("records"))
    left = c[PENDING] + c[ERROR]
    return (f"{signal_name}: sweep stopped; {c[OK] + c[DIVERGED]} of {len(df)} points finished "
            f"(ok {c[OK]}, diverged {c[DIVERGED]}), {left} did not ({c['partial']} resume from an epoch "
            f"checkpoint, {c[ERROR]} errored); continue with: gansweep resume {run_dir}")
