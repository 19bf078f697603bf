"""What a results row says about one grid point: the rules that decide it, in one place.

    status, reason = judge(cfg, tune_status, last_report)
    row = point_row(cfg, TrialState(...), curve, manifest)      # every RESULT_COLUMNS key

The ledger (sweep/record/ledger.py) builds every row with point_row, and `gansweep trial`
its summary with `summarize`, so a row means the same wherever it was written:

  1. every planned point has exactly one results row, and no other point has one;
  2. a row is `ok` only if epochs_done == epochs and its final scores are finite;
  3. a `diverged` row carries a reason;
  4. a point that did not finish is `pending` (never started, or stopped part-way)
     or `error`; only finished rows (ok, diverged) carry final and best scores;
  5. epochs_done never exceeds the point's epochs;
  6. curves hold each (point, epoch) at most once, only for planned points, and a
     finished point's curve is exactly its scored epochs, ending at epochs_done,
     whose I' is the row's.

sweep/record/rules.py checks tables against them (`gansweep status --check`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from models.metric_names import SCORE_KEYS
from sweep.plan.config import TrialConfig
from sweep.record.schema import (DIVERGED, ERROR, FINISHED, METRIC_KEYS, OK, PACK_POINTS, PENDING,
                                 RESULT_COLUMNS, TRIAL_KEYS, TUNE_ERROR, TUNE_NOT_CREATED, TUNE_TERMINATED)


def epoch_report(metrics: dict) -> dict:
    """One epoch's metrics from `run_trial` -> a report: `outcome` and `diverged_reason`
    replace the loop's `diverged` key (Tune's loggers want flat, typed values)."""
    report = {k: v for k, v in metrics.items() if k != "diverged"}
    report.update(outcome=DIVERGED if "diverged" in metrics else OK,
                  diverged_reason=metrics.get("diverged", ""))
    return report


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def judge(cfg: TrialConfig, tune_status: str, last: dict) -> tuple[str, str]:
    """(status, diverged_reason) of a point from Tune's state and its last report.

    The one place a status is decided (rules 2-4 of the module docstring).
    """
    if tune_status == TUNE_ERROR:
        return ERROR, ""
    if tune_status != TUNE_TERMINATED or not last:
        return PENDING, ""
    if last.get("outcome") == DIVERGED:
        return DIVERGED, last.get("diverged_reason") or "diverged (no reason recorded)"
    if int(last.get("epoch") or 0) < cfg.epochs:
        return PENDING, ""  # Tune stopped it part-way (an interrupted sweep): not finished
    bad = [k for k in SCORE_KEYS if not _finite(last.get(k))]
    if bad:
        return DIVERGED, f"non-finite scores ({', '.join(bad)})"
    return OK, ""


def best_epoch(curve: list[dict]) -> dict:
    """The report of the epoch with the highest finite I' ({} if none was scored)."""
    scored = [r for r in curve if _finite(r.get("i_prime"))]
    return max(scored, key=lambda r: r["i_prime"]) if scored else {}


def _float(v) -> float:
    return float(v) if v is not None else math.nan


def point_metrics(status: str, last: dict, curve: list[dict]) -> dict:
    """epochs_done, the final METRIC_KEYS, best_epoch and best_ METRIC_KEYS of one point.
    Only finished points carry scores (rule 4): an unfinished one's are NaN."""
    finished = status in FINISHED
    best = best_epoch(curve) if finished else {}
    out = {"epochs_done": int(last.get("epoch") or 0)}
    out.update({k: _float(last.get(k)) if finished else math.nan for k in METRIC_KEYS})
    out["best_epoch"] = int(best.get("epoch", 0))
    out.update({f"best_{k}": _float(best.get(k)) for k in METRIC_KEYS})
    return out


def summarize(cfg: TrialConfig, history: list[dict]) -> dict:
    """The results-row view of one finished `run_trial` (as `gansweep trial` writes it)."""
    reports = [epoch_report(h) for h in history]
    last = reports[-1] if reports else {}
    status, reason = judge(cfg, TUNE_TERMINATED, last)
    return {"status": status, **point_metrics(status, last, reports), "diverged_reason": reason,
            "train_seconds": float(last.get("train_seconds", 0.0)),
            "eval_seconds": float(last.get("eval_seconds", 0.0))}


@dataclass(frozen=True)
class TrialState:
    """What the ledger needs of one Tune trial (sweep/runner/callback.py reads it off Ray's Trial)."""

    tune_status: str  # PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    last_result: dict  # the trial's last report ({} before its first)
    trial_id: str = ""
    error: str = ""  # last line of the trial's error file, for ERROR


def point_row(cfg: TrialConfig, trial: TrialState | None, curve: list[dict], manifest: dict) -> dict:
    """The results row of one planned point, with every RESULT_COLUMNS key."""
    tune_status = trial.tune_status if trial is not None else TUNE_NOT_CREATED
    last = trial.last_result if trial is not None else {}
    status, reason = judge(cfg, tune_status, last)
    row = {"point_id": cfg.point_id, **cfg.as_dict(), "status": status, "tune_status": tune_status}
    row.update(point_metrics(status, last, curve))
    row.update(train_seconds=float(last.get("train_seconds") or 0.0),
               eval_seconds=float(last.get("eval_seconds") or 0.0),
               wall_seconds=float(last.get("time_total_s") or 0.0),
               diverged_reason=reason, error=trial.error if status == ERROR else "",
               device=last.get("device") or "", node=last.get("node") or "", trial_id=trial.trial_id if trial is not None else "",
               classifier_sha256=manifest["classifier_sha256"],
               gansweep_version=manifest["gansweep_version"], git_commit=manifest["git_commit"],
               run_name=manifest["name"], preset=manifest["preset"])
    return {k: row[k] for k in RESULT_COLUMNS}


def scored_epochs(cfg: TrialConfig, status: str, epochs_done: int) -> list[int]:
    """The epochs a finished point reports: every eval_every-th, its last, and the one it
    diverged in."""
    eps = [e for e in range(1, epochs_done + 1) if e % cfg.eval_every == 0 or e == cfg.epochs]
    if status == DIVERGED and epochs_done and (not eps or eps[-1] != epochs_done):
        eps.append(epochs_done)
    return eps


def point_reports(report: dict) -> list[dict]:
    """The point reports inside one Tune report of a pack, each with the trial's shared keys
    (a report of gansweep before packs is one point's report)."""
    if PACK_POINTS not in report:
        return [report] if "point_id" in report else []
    shared = {k: report[k] for k in TRIAL_KEYS if k in report}
    return [{**shared, **p} for p in json.loads(report[PACK_POINTS])]


def _plain(v):
    """numpy scalars -> Python values (Tune's loggers want plain JSON types)."""
    return v.item() if hasattr(v, "item") else v
