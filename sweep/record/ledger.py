"""The run's truth: planned grid points + trial reports -> results rows and curves. No Ray.

    ledger = Ledger.open(RunDir(path))        # the plan, the curves so far, Tune's logs merged
    ledger.ingest(report)                     # one epoch of some points of a pack (a Tune report)
    rows = ledger.flush({point_id: TrialState(...)})   # both tables, written atomically

The Tune callback (sweep/runner/callback.py) only forwards Tune's hooks here; every row is
built by sweep/record/rows.py, whose docstring states the rules a row obeys.

A finished point is written ahead, in this order, so that a driver killed anywhere loses nothing:
  1. its reports: Tune's result.json and the trial's last checkpoint (Tune, before it ends the trial);
  2. its kept files: samples/<id>.npy and, with --keep-weights, weights/<id>.pt, each written
     atomically and flushed to the disk (fsync) from that checkpoint (save_samples, save_weights,
     when Tune ends the trial);
  3. its row, `ok`: a row is `ok` only once its kept files are on disk (`_files_kept`; until then
     it is still RUNNING, so a file that could not be written leaves the point unfinished);
  4. the trial's checkpoint is emptied, once the tables on disk record all its points finished
     and each of its files was written.
A driver killed before 3 leaves the point unfinished in the tables: resume restores its trial from
that checkpoint, which still holds its final state, samples and weights (sweep/runner/worker.py).
A point whose files went missing after 3 breaks the kept-files rule (sweep/record/rules.py
check_files): resume trains it again (sweep/runner/engine.py).
"""
from __future__ import annotations

import errno
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.plan.grid import estimate_flops
from sweep.plan.packs import trial_label
from sweep.record.progress import compute_s, count, fmt_s
from sweep.record.recovery import curve_row, curves_from_tune_logs, restored_curve_rows
from sweep.record.results import read_curves, write_atomic, write_curves, write_results
from sweep.record.rows import TrialState, point_reports, point_row
from sweep.record.rundir import RunDir
from sweep.record.schema import CURVE_COLUMNS, DIVERGED, ERROR, FINISHED, OK, PENDING, RESULT_COLUMNS, TUNE_RUNNING
from sweep.record.store import is_uri

FLUSH_EVERY_S = 5.0  # results tables are rewritten at most this often (and at the end)
# ... and at most 1/FLUSH_SPAN of the driver's time: writing the paper plan's 7,168 rows and their
# curves (parquet and CSV) takes about 0.5 s of CPU that a 2-core machine's workers would otherwise get.
FLUSH_SPAN = 10
# The CSV copies, during a session, at most this often (and always at its end): pandas' CSV writer
# took two thirds of a flush, a fifth of the driver's CPU at the paper plan's 7,168 rows.
CSV_EVERY_S = 60.0
log = logging.getLogger("gansweep")


class Ledger:
    """Rows and curves of one run directory, kept current from trial reports."""

    def __init__(self, run: RunDir, curves: dict[tuple[str, int], dict] | None = None,
                 finished_before: set[str] | None = None):
        self.run, self.planned, self.manifest = run, run.plan, run.manifest
        self.curves: dict[tuple[str, int], dict] = dict(curves or {})
        self._curves_of: dict[str, dict[int, dict]] = {}  # point_id -> epoch -> the row in self.curves
        for (pid, ep), row in self.curves.items():
            self._curves_of.setdefault(pid, {})[ep] = row
        # point_id -> (its curve's version, the TrialState it was built from, its row): a flush
        # rebuilds only the rows whose point reported or whose trial changed since the last one
        self._row_cache: dict[str, tuple[int, TrialState | None, dict]] = {}
        self._version: dict[str, int] = {}
        self._ids = [cfg.point_id for cfg in self.planned]  # a property that hashes the config: once
        self.cost = {t.point_id: estimate_flops(t) for t in self.planned}  # for the ETA
        # compute seconds each point had banked before this session (for its overhead)
        self.seen_compute: dict[str, float] = {}
        for (pid, _), r in self.curves.items():
            self.seen_compute[pid] = max(self.seen_compute.get(pid, 0.0), compute_s(r))
        self.session_compute = 0.0
        self.t_start = time.time()
        self.done_at_start: set[str] | None = None
        # The tables on disk are as new as the ledger (the engine wrote them, or a session left them): the
        # first periodic flush waits FLUSH_EVERY_S, not rebuilding 7,168 rows (2 s of the driver at the
        # paper plan) while the first workers start, and its CSVs CSV_EVERY_S.
        self.last_flush = self.last_csv = time.time()
        self.dirty, self.flush_seconds = True, 0.0
        self.disk_full = False  # a write failed for want of space (the callback stops the sweep)
        # trial_id -> (trial folder, point ids) of completed trials whose checkpoints are not
        # emptied yet: that waits until the tables on disk record every point of it finished
        self.finished_trials: dict[str, tuple[str, tuple[str, ...]]] = {}
        # points finished in an earlier session keep the files they saved then; an ok one whose files
        # are gone (`lacking`) is not counted finished: resume trains it again and its files are written
        if finished_before is None:
            reports, lacking = run.finished_points()
            self.lacking, finished_before = set(lacking), set(reports)
        else:
            self.lacking = set()
        self.finished_before = finished_before
        self.kept: set[str] = set()  # ok points whose kept files were found on disk (_files_kept)

    @classmethod
    def open(cls, run: RunDir) -> "Ledger":
        """The ledger of an existing run directory: its plan, curves.parquet, and the epochs
        Tune logged that the curves had not caught up with when the driver died."""
        curves = {k: row for k, row in (curve_row(r) for r in read_curves(run.path).to_dict("records"))}
        curves.update(curves_from_tune_logs(run.tune_path))
        return cls(run, curves)

    def points_of(self, config: dict) -> tuple[str, ...]:
        """The point ids a Tune trial trains, from its config ({"pack": id}, or {"point": fields}
        in runs started before packs)."""
        label = trial_label(config)
        return (label,) if "point" in config else self.run.pack_points[label]

    # ---------------------------------------------------------------- reports in
    def ingest(self, report: dict) -> None:
        """One report of a Tune trial: an epoch of some of its pack's points."""
        for point in point_reports(report):
            for key, row in restored_curve_rows(point):
                self._add_curve(key, row, replace=False)
            key, row = curve_row(point)
            self._add_curve(key, row, replace=True)
            c = compute_s(row)
            self.session_compute += max(0.0, c - self.seen_compute.get(key[0], 0.0))
            self.seen_compute[key[0]] = c
        self.dirty = True

    def _add_curve(self, key: tuple[str, int], row: dict, replace: bool) -> None:
        if not replace and key in self.curves:
            return
        self.curves[key] = self._curves_of.setdefault(key[0], {})[key[1]] = row
        self._version[key[0]] = self._version.get(key[0], 0) + 1

    def save_samples(self, point_id: str, samples: np.ndarray) -> bool:
        """Keep a finished point's last samples (step 2 of the module docstring); False if they could
        not be written (a warning says why; the sweep goes on, the point stays unfinished)."""
        def write(path):
            with open(path, "wb") as f:
                np.save(f, samples)
        return self._keep(point_id, write, self.run.samples_dir, "npy", "samples")

    def save_weights(self, point_id: str, src: Path) -> bool:
        """Keep a finished point's final G weights (--keep-weights), as a state_dict; False, with a
        warning naming the point, if its checkpoint holds none or they could not be written."""
        if point_id in self.finished_before:
            return True
        if not src.exists():
            log.warning("point %s: its checkpoint holds no G weights to keep (--keep-weights); "
                        "`gansweep resume %s` trains it again", point_id, self.run.path)
            return False
        return self._keep(point_id, lambda p: shutil.copyfile(src, p), self.run.weights_dir, "pt", "G weights")

    def _keep(self, point_id: str, write, folder: Path, ext: str, what: str) -> bool:
        if point_id in self.finished_before:
            return True
        try:
            folder.mkdir(exist_ok=True)
            write_atomic(folder / f"{point_id}.{ext}", write, durable=True)
        except OSError as e:
            self.disk_full |= e.errno == errno.ENOSPC
            log.warning("could not copy %s of %s: %s", what, point_id, e)
            return False
        finally:
            self._version[point_id] = self._version.get(point_id, 0) + 1  # its row looks at its files again
        return True

    def _files_kept(self, point_id: str) -> bool:
        """Step 3 of the module docstring: an ok point's kept files are on disk (looked at once
        they are, and again whenever its row is rebuilt until then)."""
        if point_id not in self.kept and all(p.exists() for p in self.run.kept_paths(point_id)):
            self.kept.add(point_id)
        return point_id in self.kept

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
            if is_uri(folder):  # remote storage: Tune's num_to_keep bounds it
                continue
            for ckpt in Path(folder).glob("checkpoint_*"):
                for item in ckpt.iterdir():
                    shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)

    # ---------------------------------------------------------------- tables out
    def rows(self, trials: dict[str, TrialState]) -> list[dict]:
        """One row per planned point, in plan order (the same dicts as before for the points whose
        curve and trial did not change: read them, never change them)."""
        out = []
        for cfg, pid in zip(self.planned, self._ids):
            state = trials.get(pid)
            version = self._version.get(pid, 0)
            cached = self._row_cache.get(pid)
            if cached is None or cached[0] != version or cached[1] != state:
                curve = [row for _, row in sorted(self._curves_of.get(pid, {}).items())]
                row = point_row(cfg, state, curve, self.manifest)
                if row["status"] == OK and not self._files_kept(pid):  # not finished before its files are
                    row = point_row(cfg, replace(state, tune_status=TUNE_RUNNING), curve, self.manifest)
                cached = self._row_cache[pid] = (version, state, row)
            out.append(cached[2])
        return out

    def curves_frame(self, rows: list[dict]) -> pd.DataFrame:
        """The curves table: a finished point keeps its epochs up to epochs_done (a retry from
        scratch that diverged earlier leaves no stale later epochs behind)."""
        done = {r["point_id"]: r["epochs_done"] for r in rows if r["status"] in FINISHED}
        keep = [row for (pid, ep), row in sorted(self.curves.items()) if ep <= done.get(pid, ep)]
        return pd.DataFrame(keep, columns=list(CURVE_COLUMNS))

    def flush(self, trials: dict[str, TrialState], final: bool = True) -> list[dict]:
        """Write results and curves (atomically); returns the rows. Their CSV copies only when final
        (the end of a session) or CSV_EVERY_S after the last ones."""
        rows = self.rows(trials)
        t0 = time.thread_time()  # the writes: a resumed session's first rows() builds every row once
        csv = final or time.time() - self.last_csv >= CSV_EVERY_S
        try:
            write_results(pd.DataFrame(rows, columns=list(RESULT_COLUMNS)), self.run.path, csv)
            write_curves(self.curves_frame(rows), self.run.path, csv)
        except OSError as e:
            # e.g. a full disk: the previous tables stay intact (atomic writes) and the
            # sweep goes on; the next flush tries again.
            self.last_flush = time.time()
            self.disk_full |= e.errno == errno.ENOSPC
            log.warning("could not write the results tables (%s); retrying at the next update", e)
            return rows
        self.last_flush, self.dirty = time.time(), False
        if csv:
            self.last_csv = self.last_flush
        self._empty_finished_checkpoints(rows)
        self.run.sync()
        self.flush_seconds = time.thread_time() - t0
        return rows

    @property
    def flush_due(self) -> bool:
        """Something changed and the last write is FLUSH_EVERY_S old (or FLUSH_SPAN times the CPU the
        last flush took): checked before the caller gathers Tune's trial states."""
        return self.dirty and time.time() - self.last_flush >= max(FLUSH_EVERY_S, FLUSH_SPAN * self.flush_seconds)

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
        return (f"{finished}/{len(self.planned)} finished (ok {c[OK]}, "
                f"diverged {c[DIVERGED]}, errored {c[ERROR]}) | running {c['running']} | "
                f"pending {c[PENDING] - c['running']} | {fmt_s(elapsed)} elapsed | ETA {eta}")
