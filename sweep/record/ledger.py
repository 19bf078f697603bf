"""The run's truth: planned grid points + trial reports -> results rows and curves. No Ray.

    ledger = Ledger.open(run_dir)            # the plan, the curves so far, Tune's logs merged
    ledger.ingest(report)                    # one epoch of one point (what the trial loop reports)
    rows = ledger.rows({point_id: TrialState(...)})
    problems = check_tables(results, curves, plan)   # what `gansweep status --check` runs

The Tune callback (sweep/runner/callback.py) only forwards Tune's hooks here, and
`gansweep trial` builds its summary with the same `summarize`, so the rules
below are the only place that decides what a row says:

  1. every planned point has exactly one results row, and no other point has one;
  2. a row is `ok` only if epochs_done == epochs and its final scores are finite;
  3. a `diverged` row carries a reason;
  4. a point that did not finish is `pending` (never started, or stopped part-way)
     or `error`; only finished rows (ok, diverged) carry final and best scores;
  5. epochs_done never exceeds the point's epochs;
  6. curves hold each (point, epoch) at most once, only for planned points, and a
     finished point's curve is exactly its scored epochs, ending at epochs_done,
     whose I' is the row's.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from models.metrics import SCORE_KEYS
from sweep.plan.config import FIELD_NAMES, LEGACY_DEFAULTS, TrialConfig, resolve, setting_defaults
from models.registry import add_plugin_sources
from sweep.plan.grid import Overrides, estimate_flops, load_preset
from sweep.plan.subset import SAMPLER_VERSION
from sweep.plan.packs import make_packs, trial_label
from sweep.errors import UserError
from sweep.record.results import (CURVES, CURVES_CSV, RESULTS, RESULTS_CSV, read_curves, read_manifest, read_results,
                           tune_path_of, write_atomic, write_curves, write_results)
from sweep.record.schema import (CURVE_COLUMNS, CURVE_KEYS, DIVERGED, ERROR, FINISHED, METRIC_KEYS, OK, PACK_POINTS,
                          PENDING, RESTORED_HISTORY, RESULT_COLUMNS, STATUSES, TRIAL_KEYS, TUNE_ERROR,
                          TUNE_NOT_CREATED, TUNE_RUNNING, TUNE_TERMINATED)

FLUSH_EVERY_S = 5.0  # results tables are rewritten at most this often (and at the end)
SAMPLES_DIR, WEIGHTS_DIR = "samples", "weights"  # RUN_DIR/<dir>/<point_id>.npy / .pt


def plan(run_dir: Path) -> tuple[TrialConfig, ...]:
    """The grid points a run directory was started with (its own copy of the sweep file, and
    the sample it drew, which the manifest records whether the file or --sample asked for it, and
    the --set / --seeds overrides it was started with)."""
    m = read_manifest(run_dir)
    add_plugin_sources(m.get("plugins") or [])  # its families and archs, before its points are rebuilt
    sample = m.get("sample")  # runs before --sample have no key: the file decides
    n, seed = (sample["n"], sample["seed"]) if sample else (None, None)
    sampler = sample.get("sampler", 1) if sample else SAMPLER_VERSION  # version 1 recorded none
    if sampler > SAMPLER_VERSION:
        raise UserError(f"{run_dir}: its sample was drawn by sampler version {sampler}, newer than this "
                        f"gansweep's {SAMPLER_VERSION}; upgrade gansweep to resume or check it")
    preset = load_preset(Path(run_dir) / "sweep.yaml", m["preset"], sample=n, sample_seed=seed, sampler=sampler,
                         overrides=Overrides.from_record(m.get("overrides")))
    if "sample" in m and sample is None and preset.sample is not None:
        raise UserError(f"{run_dir}: its sweep.yaml samples preset {m['preset']!r} but the run did not")
    return preset.trials


def changed_defaults(manifest: dict) -> dict:
    """Settings whose default changed since the run started -> the default it started with
    (a manifest written before gansweep recorded its defaults: LEGACY_DEFAULTS)."""
    recorded = manifest.get("setting_defaults", LEGACY_DEFAULTS)
    now = setting_defaults()
    return {k: v for k, v in recorded.items() if k in now and now[k] != v}


def check_defaults(run_dir: Path, manifest: dict, trials: tuple[TrialConfig, ...]) -> None:
    """Refuse to resume a run whose unfinished points would now train otherwise than its finished
    ones did: a default they took has changed since the run started (e.g. d_batch, which GANs
    trained as `separate` before the setting existed). One run, one meaning per point."""
    changed = changed_defaults(manifest)
    if not changed:
        return
    try:
        table = read_results(run_dir)
        done = set(table.loc[table["status"].isin(FINISHED), "point_id"])
    except Exception:  # no readable table: every point counts as unfinished
        done = set()
    for name, then in changed.items():
        now = setting_defaults()[name]
        stale = [t for t in trials if t.point_id not in done
                 and getattr(t, name) == resolve(t.family, name, now) != resolve(t.family, name, then)]
        if stale:
            raise UserError(
                f"{run_dir}: started by a gansweep whose default {name} was {then!r} (now {now!r}); "
                f"{len(stale)} unfinished points such as {stale[0].point_id} would train with "
                f"{getattr(stale[0], name)!r}, not as its finished ones did: finish it with the gansweep "
                f"that started it (commit {manifest.get('git_commit', 'unknown')}), or start a new run")


def pack_size(manifest: dict) -> int:
    """Points per Tune trial of a run (runs started before packs had one)."""
    return int(manifest["runtime"].get("pack", 1))


# --------------------------------------------------------------------------- one point
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
               device=last.get("device") or "", trial_id=trial.trial_id if trial is not None else "",
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


# --------------------------------------------------------------------------- recovery
def curve_row(report: dict) -> tuple[tuple[str, int], dict]:
    key = (report["point_id"], int(report["epoch"]))
    return key, {"point_id": key[0], **{k: report.get(k) for k in CURVE_KEYS}}


def restored_curve_rows(report: dict) -> list[tuple[tuple[str, int], dict]]:
    """The curve rows a report carries from the checkpoint its trial was restored from.

    A worker killed right after saving a checkpoint can leave Tune restoring it although
    that epoch's report never reached the driver: the first report after a restore
    carries the restored history, so no epoch goes missing from the curves.
    """
    if RESTORED_HISTORY not in report:
        return []
    pid = report["point_id"]
    return [curve_row({**h, "point_id": pid}) for h in json.loads(report[RESTORED_HISTORY])]


def logged_reports(tune_path: str) -> list[tuple[Path, list[dict]]]:
    """(trial folder, its reports in order) from every trial's result.json (local storage only;
    a line cut short by a killed driver is skipped)."""
    if "://" in tune_path:
        return []
    out = []
    for log in sorted(Path(tune_path).glob("*/result.json")):
        reports = []
        for line in log.read_text(errors="replace").splitlines():
            try:
                reports.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        out.append((log.parent, reports))
    return out


def curves_from_reports(logged: list[tuple[Path, list[dict]]]) -> dict[tuple[str, int], dict]:
    """(point_id, epoch) -> curve row; a retried or resumed trial may log an epoch twice:
    the later line wins."""
    out: dict[tuple[str, int], dict] = {}
    for _, reports in logged:
        for r in reports:
            try:
                points = [(curve_row(p), restored_curve_rows(p)) for p in point_reports(r)]
            except (KeyError, TypeError, ValueError):  # not a report of ours (ValueError: bad JSON)
                continue
            for (key, row), restored in points:
                for k, old in restored:
                    out.setdefault(k, old)
                out[key] = row
    return out


def curves_from_tune_logs(tune_path: str) -> dict[tuple[str, int], dict]:
    """(point_id, epoch) -> curve row, from every trial's result.json."""
    return curves_from_reports(logged_reports(tune_path))


def _plain(v):
    """numpy scalars -> Python values (Tune's loggers want plain JSON types)."""
    return v.item() if hasattr(v, "item") else v


def finished_reports(run_dir: Path) -> dict[str, dict]:
    """point_id -> the final report of every point the tables record as finished.

    On resume, a trial whose point is in here reports this instead of training
    (Tune's experiment state can be older than the tables after a driver crash).
    """
    try:
        results = read_results(run_dir)
        curves = read_curves(run_dir)
    except Exception:  # no table yet (or an unreadable one): nothing is known to be finished
        return {}
    done = results[results["status"].isin(FINISHED)]
    if "epochs" in done:  # an `ok` short of its epochs (tables written before the ledger) is not finished
        done = done[(done["status"] != OK) | (done["epochs_done"] == done["epochs"])]
    if done.empty or curves.empty:
        return {}
    last = curves.sort_values("epoch").groupby("point_id").tail(1).set_index("point_id")
    out = {}
    for row in done.itertuples(index=False):
        if row.point_id in last.index and int(last.loc[row.point_id, "epoch"]) == row.epochs_done:
            rep = {k: _plain(v) for k, v in last.loc[row.point_id].items()}
            rep.update(point_id=row.point_id, epoch=int(rep["epoch"]), device=row.device,
                       diverged_reason=row.diverged_reason,
                       outcome=DIVERGED if row.status == DIVERGED else OK)
            out[row.point_id] = rep
    return out


# --------------------------------------------------------------------------- the ledger
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


def fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _compute_s(row: dict) -> float:
    t = (row.get("train_seconds") or 0.0) + (row.get("eval_seconds") or 0.0)
    return 0.0 if math.isnan(t) else float(t)


class Ledger:
    """Rows and curves of one run directory, kept current from trial reports."""

    def __init__(self, run_dir: Path, planned: tuple[TrialConfig, ...], manifest: dict,
                 curves: dict[tuple[str, int], dict] | None = None, finished_before: set[str] | None = None):
        self.run_dir, self.planned, self.manifest = Path(run_dir), planned, manifest
        self.pack_points = {p.pack_id: p.point_ids for p in make_packs(planned, pack_size(manifest))}
        self.curves: dict[tuple[str, int], dict] = dict(curves or {})
        self.cost = {t.point_id: estimate_flops(t) for t in planned}  # for the ETA
        # compute seconds each point had banked before this session (for its overhead)
        self.seen_compute: dict[str, float] = {}
        for (pid, _), r in self.curves.items():
            self.seen_compute[pid] = max(self.seen_compute.get(pid, 0.0), _compute_s(r))
        self.session_compute = 0.0
        self.t_start = time.time()
        self.done_at_start: set[str] | None = None
        self.last_flush, self.dirty = 0.0, True
        # trial_id -> (trial folder, point ids) of completed trials whose checkpoints are not
        # emptied yet: that waits until the tables on disk record every point of it finished
        self.finished_trials: dict[str, tuple[str, tuple[str, ...]]] = {}
        # points finished in an earlier session keep the samples they saved then
        self.finished_before = set(finished_reports(self.run_dir)) if finished_before is None else finished_before

    @classmethod
    def open(cls, run_dir: Path) -> "Ledger":
        """The ledger of an existing run directory: its plan, curves.parquet, and the epochs
        Tune logged that the curves had not caught up with when the driver died."""
        manifest = read_manifest(run_dir)
        curves = {k: row for k, row in (curve_row(r) for r in read_curves(run_dir).to_dict("records"))}
        curves.update(curves_from_tune_logs(tune_path_of(run_dir, manifest)))
        return cls(run_dir, plan(run_dir), manifest, curves)

    def points_of(self, config: dict) -> tuple[str, ...]:
        """The point ids a Tune trial trains, from its config ({"pack": id}, or {"point": fields}
        in runs started before packs)."""
        label = trial_label(config)
        return (label,) if "point" in config else self.pack_points[label]

    # ---------------------------------------------------------------- reports in
    def ingest(self, report: dict) -> None:
        """One report of a Tune trial: an epoch of some of its pack's points."""
        for point in point_reports(report):
            for key, row in restored_curve_rows(point):
                self.curves.setdefault(key, row)
            key, row = curve_row(point)
            self.curves[key] = row
            c = _compute_s(row)
            self.session_compute += max(0.0, c - self.seen_compute.get(key[0], 0.0))
            self.seen_compute[key[0]] = c
        self.dirty = True

    def save_samples(self, point_id: str, src: Path) -> None:
        """Keep a finished point's last samples (a convenience: never fails the sweep)."""
        self._keep(point_id, src, SAMPLES_DIR, "npy", "samples")

    def save_weights(self, point_id: str, src: Path) -> None:
        """Keep a finished point's final G weights (--keep-weights), as a state_dict."""
        self._keep(point_id, src, WEIGHTS_DIR, "pt", "G weights")

    def _keep(self, point_id: str, src: Path, folder: str, ext: str, what: str) -> None:
        if point_id in self.finished_before or not src.exists():
            return
        try:
            (self.run_dir / folder).mkdir(exist_ok=True)
            write_atomic(self.run_dir / folder / f"{point_id}.{ext}", lambda p: shutil.copyfile(src, p))
        except OSError as e:
            print(f"[gansweep] warning: could not copy {what} of {point_id}: {e}", file=sys.stderr)

    def _empty_finished_checkpoints(self, rows: list[dict]) -> None:
        """Empty the checkpoints of trials whose points the tables now record as finished.

        Nothing resumes from them (a resumed trial of finished points reports the tables'
        result, sweep/runner/worker.py), and they are most of a sweep's disk (weights and
        optimizer state). The folders stay, empty: a driver killed before Tune saved the
        trial as finished leaves an experiment state naming them, and Tune refuses to
        restore a trial whose checkpoint folder is gone.
        """
        finished = {r["point_id"] for r in rows if r["status"] in FINISHED}
        for trial_id, (folder, point_ids) in list(self.finished_trials.items()):
            if not set(point_ids) <= finished:
                continue
            del self.finished_trials[trial_id]
            if "://" in folder:  # remote storage: Tune's num_to_keep bounds it
                continue
            for ckpt in Path(folder).glob("checkpoint_*"):
                for item in ckpt.iterdir():
                    shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)

    # ---------------------------------------------------------------- tables out
    def _curves_by_point(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for (pid, _), row in sorted(self.curves.items()):
            out.setdefault(pid, []).append(row)
        return out

    def rows(self, trials: dict[str, TrialState]) -> list[dict]:
        """One row per planned point, in plan order."""
        by_point = self._curves_by_point()
        return [point_row(cfg, trials.get(cfg.point_id), by_point.get(cfg.point_id, []), self.manifest)
                for cfg in self.planned]

    def curves_frame(self, rows: list[dict]) -> pd.DataFrame:
        """The curves table: a finished point keeps its epochs up to epochs_done (a retry from
        scratch that diverged earlier leaves no stale later epochs behind)."""
        done = {r["point_id"]: r["epochs_done"] for r in rows if r["status"] in FINISHED}
        keep = [row for (pid, ep), row in sorted(self.curves.items()) if ep <= done.get(pid, ep)]
        return pd.DataFrame(keep, columns=list(CURVE_COLUMNS))

    def flush(self, trials: dict[str, TrialState]) -> list[dict]:
        """Write results and curves (atomically); returns the rows."""
        rows = self.rows(trials)
        try:
            write_results(pd.DataFrame(rows, columns=list(RESULT_COLUMNS)), self.run_dir)
            write_curves(self.curves_frame(rows), self.run_dir)
        except OSError as e:
            # e.g. a full disk: the previous tables stay intact (atomic writes) and the
            # sweep goes on; the next flush tries again.
            self.last_flush = time.time()
            print(f"[gansweep] warning: could not write the results tables ({e}); "
                  "retrying at the next update", file=sys.stderr, flush=True)
            return rows
        self.last_flush, self.dirty = time.time(), False
        self._empty_finished_checkpoints(rows)
        return rows

    @property
    def flush_due(self) -> bool:
        """Something changed and the last write is FLUSH_EVERY_S old: checked before the
        caller gathers Tune's trial states, which costs a config per trial."""
        return self.dirty and time.time() - self.last_flush >= FLUSH_EVERY_S

    # ---------------------------------------------------------------- progress
    def progress_line(self, trials: dict[str, TrialState]) -> str:
        rows = self.rows(trials)
        c = count(rows)
        done = {r["point_id"] for r in rows if r["status"] != PENDING}
        if self.done_at_start is None:
            self.done_at_start = done
        elapsed = time.time() - self.t_start
        # ETA by counted FLOPs, not trial counts: the longest trials run first, so a
        # count-based rate would promise hours at the start of a minutes-long sweep.
        done_now = sum(self.cost[p] for p in done - self.done_at_start)
        left = sum(v for p, v in self.cost.items() if p not in done)
        eta = "?" if done_now == 0 else fmt_s(elapsed / done_now * left)
        finished = c[OK] + c[DIVERGED] + c[ERROR]
        return (f"[gansweep] {finished}/{len(self.planned)} finished (ok {c[OK]}, "
                f"diverged {c[DIVERGED]}, errored {c[ERROR]}) | running {c['running']} | "
                f"pending {c[PENDING] - c['running']} | {fmt_s(elapsed)} elapsed | ETA {eta}")


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
            "counts": {k: int(counts.get(k, 0)) for k in STATUSES}, "stopped_by": stopped_by}, df


def interrupted_line(run_dir: Path, df: pd.DataFrame, signal_name: str) -> str:
    """The one line a stopped sweep ends with: how far it got and how to go on."""
    c = count(df.to_dict("records"))
    left = c[PENDING] + c[ERROR]
    return (f"{signal_name}: sweep stopped; {c[OK] + c[DIVERGED]} of {len(df)} points finished "
            f"(ok {c[OK]}, diverged {c[DIVERGED]}), {left} did not ({c['partial']} resume from an epoch "
            f"checkpoint, {c[ERROR]} errored); continue with: gansweep resume {run_dir}")


# --------------------------------------------------------------------------- healing
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


def error_line(path: Path | str | None) -> str:
    """The last line of a trial's error file (what an `error` row says)."""
    if not path or not os.path.exists(path):
        return "error (no message recorded)"
    lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    return (lines[-1] if lines else "error")[:300]


def states_from_reports(logged: list[tuple[Path, list[dict]]],
                        planned: tuple[TrialConfig, ...]) -> dict[str, TrialState]:
    """point_id -> TrialState, read back from Tune's trial folders.

    A trial whose points all ended (their last logged report is their last epoch, or a
    divergence) had ended (TERMINATED); a folder with an error file had failed (ERROR);
    anything else is PENDING. These are the rows the callback writes from Tune's own trials.
    """
    cfgs = {c.point_id: c for c in planned}
    out: dict[str, TrialState] = {}
    for folder, reports in logged:
        last: dict[str, dict] = {}  # the trial's points' last reports
        for r in reports:
            last.update((p["point_id"], p) for p in point_reports(r) if p["point_id"] in cfgs)
        if not last:
            continue
        err = folder / "error.txt"
        ended = all(p.get("outcome") == DIVERGED or int(p.get("epoch") or 0) >= cfgs[pid].epochs
                    for pid, p in last.items())
        status = TUNE_ERROR if err.exists() else TUNE_TERMINATED if ended else "PENDING"
        for pid, p in last.items():
            out[pid] = TrialState(status, p, str(p.get("trial_id", "")), error_line(err) if err.exists() else "")
    return out


def damage_phrase(name: str, why: str, verb: str = "was") -> str:
    """'results.parquet was unreadable (ArrowInvalid)' / 'curves.parquet is missing'."""
    return f"{name} {verb} {'missing' if why == 'missing' else f'unreadable ({why})'}"


def heal(run_dir: Path) -> list[str]:
    """Rebuild the derived tables of a run that are missing or unreadable; one line per table.

    results and curves are views of Tune's records: the curves come back from every
    trial's result.json, the rows from each trial's last report (the same rows the
    callback writes). Nothing trains; the manifest (not derivable) is never touched.
    """
    damaged = damaged_tables(run_dir)
    if not damaged:
        return []
    manifest = read_manifest(run_dir)
    tune_path = tune_path_of(run_dir, manifest)
    if "://" in tune_path or not Path(tune_path).is_dir():
        where = "on remote storage" if "://" in tune_path else "missing"
        raise UserError(f"{run_dir}: {', '.join(damaged)} cannot be read, and Tune's records are {where} "
                        f"({tune_path}): nothing was changed; restore the tables from a copy")
    curves = {} if CURVES in damaged else {k: r for k, r in (curve_row(x) for x in
                                                            read_curves(run_dir).to_dict("records"))}
    logged = logged_reports(tune_path)  # read once: the curves and the rows both come from it
    curves.update(curves_from_reports(logged))
    ledger = Ledger(run_dir, plan(run_dir), manifest, curves, finished_before=set())
    rows = ledger.flush(states_from_reports(logged, ledger.planned))
    if ledger.dirty:
        raise UserError(f"{run_dir}: {', '.join(damaged)} cannot be rewritten (see the warning above)")
    c = count(rows)
    return [f"{damage_phrase(name, why)}: rebuilt from Tune's records ({len(rows)} rows, "
            f"{c[OK] + c[DIVERGED]} finished)" for name, why in damaged.items()]


# --------------------------------------------------------------------------- checks
def _row_config(row: dict) -> TrialConfig | None:
    """The config a row records beside its scores (every row carries its own; None if unusable)."""
    try:
        return TrialConfig(**{k: _plain(row[k]) for k in FIELD_NAMES if k in row})
    except (TypeError, ValueError):
        return None


def check_tables(results: pd.DataFrame, curves: pd.DataFrame,
                 planned: tuple[TrialConfig, ...] | None = None) -> list[str]:
    """Every broken rule of the module docstring, one line each naming the point(s); [] if none.

    Each row is checked against the config it records; `planned` (the run's sweep file)
    adds rule 1's "every planned point, and only those".
    """
    problems: list[str] = []

    def names(ids) -> str:
        ids = sorted(map(str, ids))
        return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")

    def rule(what: str, bad) -> None:
        if len(bad):
            problems.append(f"{len(bad)} {what}: {names(bad)}")

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


def check_run(run_dir: Path, results: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    """check_tables of a run directory, against its plan when its sweep file is there."""
    planned = plan(run_dir) if (Path(run_dir) / "sweep.yaml").is_file() else None
    return check_tables(results, curves, planned)
