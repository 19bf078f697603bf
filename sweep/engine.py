"""The Ray Tune engine: one grid point per Tune trial, one results table per run.

    gansweep run --preset mini            # local Ray instance, ./runs/<name>
    gansweep resume runs/<name>           # after the driver died
    gansweep status runs/<name>           # counts and results so far; starts nothing

A run directory (RUN_DIR) holds:
    gansweep.json      the manifest: preset, runtime options, versions, sessions
    sweep.yaml         the sweep file as it was when the run started (resume re-reads it)
    results.parquet    one row per grid point (sweep/results.py), refreshed as trials end
    curves.parquet     one row per (grid point, epoch)
    samples/           the last evaluated samples of every finished trial (64 x 32 x 32 uint8)
    tune/              Ray Tune's experiment (state, trial dirs, checkpoints, TensorBoard logs);
                       on a cluster it lives on shared storage named by --storage instead.

The trainable is thin (seed, build, loop, report; sweep/trial.py does the work);
MNIST and the classifier go to the object store once through
`tune.with_parameters`. Every epoch reports its metrics with a checkpoint, so a
retried or resumed trial continues from its last epoch instead of restarting.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.metrics import SCORE_KEYS
from sweep import __version__
from sweep.config import TrialConfig
from sweep.errors import UserError
from sweep.grid import Preset, estimate_flops, load_preset
from sweep.results import (MANIFEST, MANIFEST_FORMAT, RESULTS, read_curves, read_manifest, read_results,
                           read_run_results, write_atomic, write_curves, write_manifest, write_results)
from sweep.trial import METRIC_KEYS

FLUSH_EVERY_S = 5.0  # results tables are rewritten at most this often (and at the end)
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class Runtime:
    """How a sweep runs (not what it computes): never changes a score's meaning."""

    cpus_per_trial: float = 1.0  # CPUs reserved per trial; also torch's thread count
    gpus_per_trial: float = 0.0  # GPU fraction per trial (e.g. 0.25 packs 4 trials a GPU)
    max_concurrent: int = 0  # at most this many trials at once (0: as resources allow)
    max_failures: int = 2  # retries of a failing trial, each from its last checkpoint
    address: str | None = None  # an existing Ray cluster ("auto", "ray://...", host:port)
    num_cpus: int | None = None  # CPUs of the local Ray instance (None: all)
    data_root: str | None = None  # where MNIST is read (see sweep/data.py)

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_trial))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- trainable
# Per worker process, built once and reused by every trial the (reused) actor runs.
_SCORERS: dict = {}
_DATASETS: dict = {}


def _dataset(images, n_train: int, device: str) -> torch.Tensor:
    """MNIST in model space on the trial's device, converted once per worker and size."""
    from sweep.trial import prepare_data

    key = (n_train, device)
    if key not in _DATASETS:
        _DATASETS.clear()  # one size at a time: a preset uses one n_train
        # a private, writable copy of the read-only object-store array
        _DATASETS[key] = prepare_data(torch.from_numpy(images[:n_train].copy()), n_train, device)
    return _DATASETS[key]


def _scorer(device: str, clf_state: dict, clf_sha: str, ref_mean, ref_cov):
    from models.classifier import DIGIT_THRESHOLD, MnistCNN
    from models.metrics import FeatureStats, Scorer

    key = (device, clf_sha)
    if key not in _SCORERS:
        clf = MnistCNN()
        clf.load_state_dict(clf_state)
        _SCORERS[key] = Scorer(clf.to(device), FeatureStats(ref_mean, ref_cov), clf_sha, DIGIT_THRESHOLD)
    return _SCORERS[key]


def trainable(config: dict, *, images, clf_state, clf_sha, ref_mean, ref_cov, threads, device,
              finished: dict):
    """One grid point inside a Tune worker: config = {"point": TrialConfig fields}.

    finished: point_id -> final report of the points RUN_DIR's tables already record
    as finished (filled on resume). Tune's experiment state is saved periodically, so
    after a driver crash it can hold an older checkpoint of a trial that had in fact
    finished; such a trial reports its recorded result instead of training again.
    """
    from ray import tune
    from ray.tune import Checkpoint

    from sweep.trial import run_trial

    started_at = time.time()  # wall clock, for the harness-overhead accounting of `gansweep bench`
    cfg = TrialConfig(**config["point"])
    if cfg.point_id in finished:
        tune.report(finished[cfg.point_id])
        return
    torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("this trial was given a GPU fraction but CUDA is not available")
    scorer = _scorer(device, clf_state, clf_sha, ref_mean, ref_cov)

    resume = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        try:
            with ckpt.as_directory() as d:
                resume = torch.load(Path(d) / "state.pt", map_location=device, weights_only=True)
        except Exception as e:  # a damaged checkpoint: say so; never start over silently
            raise RuntimeError(
                f"the checkpoint of {cfg.point_id} cannot be read ({type(e).__name__}); "
                "`gansweep resume RUN_DIR --restart-errored` retrains such trials from scratch") from None

    def as_report(metrics: dict) -> dict:
        report = {k: v for k, v in metrics.items() if k != "diverged"}
        report.update(point_id=cfg.point_id, device=device,
                      outcome="diverged" if "diverged" in metrics else "ok",
                      diverged_reason=metrics.get("diverged", ""), started_at=started_at,
                      reported_at=time.time())
        return report

    # A worker killed right after saving a checkpoint can leave Tune restoring that
    # checkpoint although the epoch's result never reached the driver (seen once in
    # ~10 runs of the worker-kill test: epochs 1, 2, 4, 5 logged). So the first report
    # after a restore carries the restored history, and the tables fill any gap from it.
    restored = [] if resume is None else [as_report(h) for h in resume["history"]]

    def on_epoch(metrics: dict, make_checkpoint) -> None:
        report = as_report(metrics)
        if restored:
            report[RESTORED_HISTORY] = json.dumps(restored)  # a string: loggers store it as is
            restored.clear()
        with tempfile.TemporaryDirectory() as d:
            state = make_checkpoint()
            torch.save(state, Path(d) / "state.pt")
            if state["samples"] is not None:
                np.save(Path(d) / "samples.npy", state["samples"].numpy())
            tune.report(report, checkpoint=Checkpoint.from_directory(d))

    if resume is not None and (resume["epoch"] >= cfg.epochs or _diverged(resume["history"])):
        # The trial had finished, but the driver died before Tune recorded it: report
        # its final metrics again instead of training anything.
        tune.report(as_report(resume["history"][-1]))
        return
    run_trial(cfg, _dataset(images, cfg.n_train, device), scorer, device, resume=resume,
              on_epoch=on_epoch)


def _diverged(history: list[dict]) -> bool:
    return bool(history) and "diverged" in history[-1]


# --------------------------------------------------------------------------- results callback
def _make_callback_class():
    from ray.tune import Callback

    class ResultsCallback(Callback):
        """Keeps RUN_DIR's tables current, prints progress, measures harness overhead.

        Pickled into Tune's experiment state with only its constructor
        arguments; `setup` rebuilds everything else from RUN_DIR, so a resumed
        run continues the same tables.
        """

        def __init__(self, run_dir: str, slots: int, quiet: bool = False):
            self.run_dir, self.slots, self.quiet = run_dir, slots, quiet

        def __getstate__(self):
            return {"run_dir": self.run_dir, "slots": self.slots, "quiet": self.quiet}

        def __setstate__(self, state):
            self.__dict__.update(state)

        def setup(self, **info):
            rd = Path(self.run_dir)
            self.manifest = read_manifest(rd)
            self.expected = load_run_preset(rd).trials
            self.cost = {t.point_id: estimate_flops(t) for t in self.expected}  # for the ETA
            curves = read_curves(rd)
            self.curves = {(r["point_id"], int(r["epoch"])): r for r in curves.to_dict("records")}
            # After a driver crash the last few epochs may be in Tune's per-trial result.json
            # but not yet in curves.parquet: those logs are the record, so merge them in.
            self.curves.update(curves_from_tune_logs(self.manifest["tune_path"]))
            # compute seconds each point had already banked (for this session's overhead)
            self.seen_compute = {}
            for (pid, _), r in self.curves.items():
                c = _compute_s(r)
                self.seen_compute[pid] = max(self.seen_compute.get(pid, 0.0), c)
            self.session_compute = 0.0
            self.t_start = time.time()
            self.done_at_start = None
            self.last_flush = self.last_progress = 0.0
            self.dirty = True
            (rd / "samples").mkdir(exist_ok=True)
            # points finished in an earlier session keep the samples they saved then
            self.finished_before = set(finished_reports(rd))

        # Tune hooks -------------------------------------------------------
        def on_trial_result(self, iteration, trials, trial, result, **info):
            pid = result["point_id"]
            for key, row in restored_curve_rows(result):
                self.curves.setdefault(key, row)
            row = {"point_id": pid, **{k: result.get(k) for k in CURVE_KEYS}}
            self.curves[(pid, int(result["epoch"]))] = row
            c = _compute_s(row)
            self.session_compute += max(0.0, c - self.seen_compute.get(pid, 0.0))
            self.seen_compute[pid] = c
            self.dirty = True

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._save_samples(trial)
            self.dirty = True
            self._maybe_flush(trials)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.dirty = True
            self._maybe_flush(trials)

        def on_step_end(self, iteration, trials, **info):
            self._maybe_flush(trials)
            now = time.time()
            if not self.quiet and now - self.last_progress >= PROGRESS_EVERY_S:
                self.last_progress = now
                print(self.progress_line(trials), flush=True)

        def on_experiment_end(self, trials, **info):
            self.flush(trials)
            if not self.quiet:
                print(self.progress_line(trials), flush=True)

        # ------------------------------------------------------------------
        def _save_samples(self, trial):
            ckpt = trial.checkpoint
            if ckpt is None:
                return
            pid = TrialConfig(**trial.config["point"]).point_id
            if pid in self.finished_before:
                return
            try:
                with ckpt.as_directory() as d:
                    src = Path(d) / "samples.npy"
                    if src.exists():
                        dst = Path(self.run_dir) / "samples" / f"{pid}.npy"
                        write_atomic(dst, lambda p: shutil.copyfile(src, p))
            except OSError as e:  # samples are a convenience; never fail the sweep for them
                print(f"[gansweep] warning: could not copy samples of {pid}: {e}", file=sys.stderr)

        def _maybe_flush(self, trials):
            if self.dirty and time.time() - self.last_flush >= FLUSH_EVERY_S:
                self.flush(trials)

        def _curves_by_point(self) -> dict[str, list[dict]]:
            out: dict[str, list[dict]] = {}
            for (pid, _), row in self.curves.items():
                out.setdefault(pid, []).append(row)
            return out

        def rows(self, trials) -> list[dict]:
            return results_rows(self.expected, trials, self.manifest, self._curves_by_point())

        def flush(self, trials):
            rows = self.rows(trials)
            curves = pd.DataFrame(list(self.curves.values()), columns=["point_id", *CURVE_KEYS])
            try:
                write_results(pd.DataFrame(rows), Path(self.run_dir))
                write_curves(curves.sort_values(["point_id", "epoch"]), Path(self.run_dir))
            except OSError as e:
                # e.g. a full disk: the previous tables stay intact (atomic writes) and the
                # sweep goes on; the next flush tries again.
                self.last_flush = time.time()
                print(f"[gansweep] warning: could not write the results tables ({e}); "
                      "retrying at the next update", file=sys.stderr, flush=True)
                return rows
            self.last_flush, self.dirty = time.time(), False
            return rows

        def progress_line(self, trials) -> str:
            rows = self.rows(trials)
            c = _count(rows)
            finished = c["ok"] + c["diverged"] + c["error"]
            done = {r["point_id"] for r in rows if r["status"] != "pending"}
            if self.done_at_start is None:
                self.done_at_start = done
            elapsed = time.time() - self.t_start
            # ETA by counted FLOPs, not trial counts: the longest trials run first, so a
            # count-based rate would promise hours at the start of a minutes-long sweep.
            done_now = sum(self.cost[p] for p in done - self.done_at_start)
            left = sum(v for p, v in self.cost.items() if p not in done)
            eta = "?" if done_now == 0 else _fmt_s(elapsed / done_now * left)
            return (f"[gansweep] {finished}/{len(self.expected)} finished (ok {c['ok']}, "
                    f"diverged {c['diverged']}, errored {c['error']}) | running {c['running']} | "
                    f"pending {c['pending'] - c['running']} | {_fmt_s(elapsed)} elapsed | ETA {eta}")

    return ResultsCallback


RESTORED_HISTORY = "restored_history"  # report key: JSON list of the restored checkpoint's epochs
CURVE_KEYS = ("epoch", "outcome", *SCORE_KEYS, "loss_d", "loss_g", "d_real", "d_fake", "m_global",
              "k_t", "train_seconds", "eval_seconds")


def curves_from_tune_logs(tune_path: str) -> dict[tuple[str, int], dict]:
    """(point_id, epoch) -> curve row, from every trial's result.json (local storage only).

    A retried or resumed trial may log an epoch twice; the later line wins. A line
    cut short by a killed driver is skipped.
    """
    out: dict[tuple[str, int], dict] = {}
    if "://" in tune_path:
        return out
    for log in sorted(Path(tune_path).glob("*/result.json")):
        for line in log.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
                key = (r["point_id"], int(r["epoch"]))
                restored = restored_curve_rows(r)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            for k, row in restored:
                out.setdefault(k, row)
            out[key] = {"point_id": key[0], **{k: r.get(k) for k in CURVE_KEYS}}
    return out


def restored_curve_rows(result: dict) -> list[tuple[tuple[str, int], dict]]:
    """The curve rows a report carries from the checkpoint its trial was restored from."""
    if RESTORED_HISTORY not in result:
        return []
    pid = result["point_id"]
    return [((pid, int(h["epoch"])), {"point_id": pid, **{k: h.get(k) for k in CURVE_KEYS}})
            for h in json.loads(result[RESTORED_HISTORY])]


def _compute_s(row: dict) -> float:
    t = (row.get("train_seconds") or 0.0) + (row.get("eval_seconds") or 0.0)
    return 0.0 if math.isnan(t) else float(t)


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _count(rows: list[dict]) -> dict:
    c = {"ok": 0, "diverged": 0, "error": 0, "pending": 0, "running": 0}
    for r in rows:
        c[r["status"]] += 1
        c["running"] += r["tune_status"] == "RUNNING"
    return c


def _last_error_line(trial) -> str:
    path = trial.error_file
    if not path or not os.path.exists(path):
        return "error (no message recorded)"
    lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    return (lines[-1] if lines else "error")[:300]


def results_rows(expected: tuple[TrialConfig, ...], trials, manifest: dict,
                 curves: dict[str, list[dict]]) -> list[dict]:
    """One row per expected grid point, in grid order, from Tune's trials and the curves."""
    by_point = {}
    for t in trials:
        by_point[TrialConfig(**t.config["point"]).point_id] = t
    rows = []
    for cfg in expected:
        t = by_point.get(cfg.point_id)
        res = (t.last_result or {}) if t is not None else {}
        tune_status = t.status if t is not None else "NOT_CREATED"
        if tune_status == "TERMINATED":
            status = "diverged" if res.get("outcome") == "diverged" else "ok"
        elif tune_status == "ERROR":
            status = "error"
        else:
            status = "pending"
        row = {"point_id": cfg.point_id, **cfg.as_dict(), "status": status,
               "tune_status": tune_status, "epochs_done": int(res.get("epoch", 0) or 0)}
        for k in METRIC_KEYS:
            row[k] = float(res.get(k, math.nan)) if res.get(k) is not None else math.nan
        row.update(train_seconds=float(res.get("train_seconds", 0.0) or 0.0),
                   eval_seconds=float(res.get("eval_seconds", 0.0) or 0.0),
                   wall_seconds=float(res.get("time_total_s", 0.0) or 0.0),
                   diverged_reason=res.get("diverged_reason", "") or "",
                   error=_last_error_line(t) if status == "error" else "",
                   device=res.get("device", "") or "",
                   trial_id=t.trial_id if t is not None else "",
                   classifier_sha256=manifest["classifier_sha256"],
                   gansweep_version=manifest["gansweep_version"],
                   git_commit=manifest["git_commit"], run_name=manifest["name"],
                   preset=manifest["preset"])
        best = _best_epoch(curves.get(cfg.point_id, [])) if status != "pending" else {}
        row["best_epoch"] = int(best.get("epoch", 0))
        for k in METRIC_KEYS:
            v = best.get(k)
            row[f"best_{k}"] = math.nan if v is None else float(v)
        rows.append(row)
    return rows


def _best_epoch(curve_rows: list[dict]) -> dict:
    scored = [r for r in curve_rows if r.get("i_prime") is not None and not math.isnan(r["i_prime"])]
    return max(scored, key=lambda r: r["i_prime"]) if scored else {}


# --------------------------------------------------------------------------- run directory
def load_run_preset(run_dir: Path) -> Preset:
    m = read_manifest(run_dir)
    return load_preset(Path(run_dir) / "sweep.yaml", m["preset"])


def _local_fs_type(path: Path) -> str:
    """The filesystem type of the mount holding path (from /proc/mounts; '' if unknown)."""
    try:
        mounts = [ln.split() for ln in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    path = path.resolve()
    best, fstype = "", ""
    for parts in mounts:
        if len(parts) >= 3 and (str(path) == parts[1] or str(path).startswith(parts[1].rstrip("/") + "/")):
            if len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype


SHARED_FS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
             "fuse.gcsfuse", "fuse.s3fs", "fuse.juicefs", "fuse.sshfs", "wekafs")


def check_storage(storage: str, address: str | None, shared_storage: bool) -> None:
    """Refuse, on a cluster, a storage path that only the head node can see."""
    if "://" in storage or address is None or shared_storage:
        return
    probe = Path(storage)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fstype = _local_fs_type(probe)
    if fstype not in SHARED_FS:
        raise UserError(
            f"--storage {storage} is on a node-local filesystem ({fstype or 'unknown'}); on a cluster "
            "every node must reach it: use an NFS path, s3:// or gs:// (or --shared-storage if it is shared)")


def _local_only(rt: Runtime) -> None:
    """Keep a private single-machine Ray instance on the loopback interface.

    Ray binds its gRPC servers to every interface unless the node IP is the
    loopback address, and `ray.init` replaces 127.0.0.1 with the machine's
    external address unless multi-node support is off; this is Ray's own switch
    for that (its default on macOS and Windows). It must be set before Ray is
    imported, so run/resume call this first; a cluster run (--address) leaves it.
    """
    if rt.address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _ray_init(rt: Runtime) -> None:
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune's own console tables are replaced by the one-line progress of ResultsCallback
    # (the legacy reporter at verbose=0 prints nothing).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return
    if rt.address:
        ray.init(address=rt.address, log_to_driver=False, logging_level="ERROR")
    else:
        # A private single-machine instance: no dashboard, every port on loopback
        # (with _local_only above).
        ray.init(num_cpus=rt.num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")


def _slots(rt: Runtime, n_trials: int) -> int:
    import ray

    res = ray.cluster_resources()
    slots = int(res.get("CPU", 1) // rt.cpus_per_trial) if rt.cpus_per_trial > 0 else n_trials
    if rt.gpus_per_trial > 0:
        slots = min(slots, int(res.get("GPU", 0) // rt.gpus_per_trial))
    if rt.max_concurrent:
        slots = min(slots, rt.max_concurrent)
    return max(1, min(slots, n_trials))


def finished_reports(run_dir: Path) -> dict[str, dict]:
    """point_id -> the final report of every point the tables record as ok or diverged."""
    try:
        results = read_results(run_dir)
    except Exception:  # no table yet: nothing is known to be finished
        return {}
    curves = read_curves(run_dir)
    done = results[results["status"].isin(["ok", "diverged"])]
    if done.empty or curves.empty:
        return {}
    last = curves.sort_values("epoch").groupby("point_id").tail(1).set_index("point_id")
    out = {}
    for row in done.itertuples(index=False):
        if row.point_id in last.index and int(last.loc[row.point_id, "epoch"]) == row.epochs_done:
            rep = {k: _plain(v) for k, v in last.loc[row.point_id].items()}
            rep.update(point_id=row.point_id, epoch=int(rep["epoch"]), device=row.device,
                       diverged_reason=row.diverged_reason,
                       outcome="diverged" if row.status == "diverged" else "ok")
            out[row.point_id] = rep
    return out


def _plain(v):
    """numpy scalars -> Python values (Tune's loggers want plain JSON types)."""
    return v.item() if hasattr(v, "item") else v


def _prepare_trainable(preset: Preset, rt: Runtime, device: str, download: bool = False,
                       finished: dict | None = None):
    """MNIST, classifier and FID reference statistics, loaded once on the driver; starts Ray.

    Returns (trainable, classifier sha256, scores of the real MNIST test set).
    Data and classifier are read before Ray starts, so a missing dataset or a bad
    classifier fails before anything is started or written.
    """
    from ray import tune

    from models.classifier import load_classifier
    from sweep.data import load_mnist
    from sweep.scoring import load_reference

    mnist = load_mnist(rt.data_root, download=download)
    clf, sha = load_classifier()
    ref, reference_scores = load_reference(clf, sha, mnist.test_images)
    _ray_init(rt)
    n = max(t.n_train for t in preset.trials)
    # numpy, not a tensor: the object store hands numpy arrays to workers without a copy
    fn = tune.with_parameters(trainable, images=mnist.train_images[:n].numpy(),
                              clf_state=clf.state_dict(), clf_sha=sha, ref_mean=ref.mean,
                              ref_cov=ref.cov, threads=rt.threads, device=device,
                              finished=finished or {})
    resources = {"cpu": rt.cpus_per_trial, "gpu": rt.gpus_per_trial}
    return tune.with_resources(fn, resources), sha, reference_scores


def _run_config(run_dir: Path, manifest: dict, rt: Runtime, slots: int, quiet: bool):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback, TBXLoggerCallback

    tune_path = manifest["tune_path"]
    storage_path, name = tune_path.rsplit("/", 1)
    return tune.RunConfig(
        name=name, storage_path=storage_path, verbose=0,
        callbacks=[JsonLoggerCallback(), TBXLoggerCallback(),
                   _make_callback_class()(str(run_dir.resolve()), slots, quiet)],
        # num_to_keep=1 rewrites the whole experiment state on every checkpoint (see the
        # project notes): keep 2.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=rt.max_failures),
    )


def run_sweep(preset: Preset, config_file: Path, run_dir: Path, rt: Runtime, *,
              storage: str | None = None, shared_storage: bool = False,
              download: bool = False, quiet: bool = False) -> dict:
    """Start a new sweep in run_dir; returns the session summary (wall, overhead, counts)."""
    t0 = time.time()
    _local_only(rt)
    if (run_dir / MANIFEST).exists():
        raise UserError(f"{run_dir} already holds a run: `gansweep resume {run_dir}` continues it, "
                        "or pick another --name")
    tune_path = f"{storage.rstrip('/')}/{run_dir.name}/tune" if storage else str((run_dir / "tune").resolve())
    if storage and "://" not in storage:
        tune_path = str(Path(tune_path).resolve())
    check_storage(tune_path if "://" in tune_path else str(Path(tune_path).parent), rt.address,
                  shared_storage)
    device = "cuda" if rt.gpus_per_trial > 0 else "cpu"
    # Read the data and the classifier before creating anything: a missing dataset
    # or a bad classifier must leave no half-made run directory behind.
    trainable_fn, sha, reference_scores = _prepare_trainable(preset, rt, device, download)

    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_file, run_dir / "sweep.yaml")
    manifest = {
        "format": MANIFEST_FORMAT, "name": run_dir.name, "preset": preset.name,
        "n_trials": len(preset.trials), "counts": preset.counts(), "tune_path": tune_path,
        "runtime": asdict(rt), "device": device, "classifier_sha256": sha,
        "reference_scores": reference_scores,
        "gansweep_version": __version__, "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sessions": [],
    }
    write_manifest(run_dir, manifest)
    # Pending rows for every grid point from the start: the table always has all of them.
    write_results(pd.DataFrame(results_rows(preset.trials, [], manifest, {})), run_dir)

    from ray import tune

    slots = _slots(rt, len(preset.trials))
    # Longest trials first: the sweep's tail is then short trials, not one long straggler.
    order = sorted(preset.trials, key=estimate_flops, reverse=True)
    tuner = tune.Tuner(
        trainable_fn,
        param_space={"point": tune.grid_search([t.as_dict() for t in order])},
        tune_config=tune.TuneConfig(max_concurrent_trials=rt.max_concurrent or None,
                                    reuse_actors=True, trial_dirname_creator=_trial_dirname),
        run_config=_run_config(run_dir, manifest, rt, slots, quiet),
    )
    if not quiet:
        print(f"[gansweep] run {run_dir} : preset {preset.name}, {len(preset.trials)} trials, "
              f"{slots} at a time, {rt.cpus_per_trial:g} CPU / {rt.gpus_per_trial:g} GPU each", flush=True)
    t_fit = time.time()
    tuner.fit()
    return _finish_session(run_dir, t0, t_fit, 0.0, slots, quiet)


def _trial_dirname(trial) -> str:
    return f"{TrialConfig(**trial.config['point']).point_id}-{trial.trial_id}"


def _check_experiment_state(tune_path: str, run_dir: Path) -> None:
    """Tuner.restore silently starts over when the newest state is damaged: refuse instead."""
    if "://" in tune_path:
        return  # remote storage: Tune reads it; nothing local to check
    p = Path(tune_path)
    states = sorted(p.glob("experiment_state-*.json"))
    if not (p / "tuner.pkl").exists() or not states:
        raise UserError(f"{run_dir}: Ray Tune's experiment state is missing under {p}; finished "
                        f"results are in {run_dir / RESULTS}. Start a new run to redo the rest.")
    newest = states[-1]
    try:
        json.loads(newest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        older = f"; an older state remains: move {newest.name} aside and resume again" if len(states) > 1 else \
            "; no older state exists"
        raise UserError(f"{newest}: damaged experiment state ({type(e).__name__}); nothing was "
                        f"started and {run_dir / RESULTS} is intact{older}")


def resume_sweep(run_dir: Path, rt_overrides: dict | None = None, *, skip_errored: bool = False,
                 restart_errored: bool = False, download: bool = False, quiet: bool = False) -> dict:
    """Carry on a run: finished trials stay, unfinished ones continue from their checkpoints.

    Errored trials are retried from their last checkpoint, or from scratch with
    restart_errored (e.g. when that checkpoint is damaged), or left as they are
    with skip_errored.
    """
    t0 = time.time()
    manifest = read_manifest(run_dir)
    preset = load_run_preset(run_dir)
    rt = Runtime(**{**manifest["runtime"], **(rt_overrides or {})})
    _local_only(rt)
    _check_experiment_state(manifest["tune_path"], run_dir)
    banked = banked_compute(run_dir)
    trainable_fn, sha, _ = _prepare_trainable(preset, rt, manifest["device"], download,
                                              finished=finished_reports(run_dir))
    if sha != manifest["classifier_sha256"]:
        raise UserError(f"the classifier changed since this run started (sha256 {sha[:12]} vs "
                        f"{manifest['classifier_sha256'][:12]}): its scores would not be comparable")
    from ray import tune

    slots = _slots(rt, len(preset.trials))
    tuner = tune.Tuner.restore(manifest["tune_path"], trainable=trainable_fn,
                               resume_unfinished=True,
                               resume_errored=not skip_errored and not restart_errored,
                               restart_errored=restart_errored and not skip_errored)
    if not quiet:
        how = (" (errored trials skipped)" if skip_errored else
               " (errored trials restarted from scratch)" if restart_errored else "")
        print(f"[gansweep] resuming {run_dir}: {len(preset.trials)} trials, {slots} at a time{how}",
              flush=True)
    t_fit = time.time()
    tuner.fit()
    return _finish_session(run_dir, t0, t_fit, banked, slots, quiet)


def banked_compute(run_dir: Path) -> float:
    """Training + scoring seconds of every point's latest epoch (what checkpoints hold)."""
    curves = read_curves(run_dir)
    if curves.empty:
        return 0.0
    per_epoch = curves["train_seconds"].fillna(0) + curves["eval_seconds"].fillna(0)
    return float(per_epoch.groupby(curves["point_id"]).max().sum())


def _finish_session(run_dir: Path, t0: float, t_fit: float, banked_before: float, slots: int,
                    quiet: bool) -> dict:
    """Record the session's wall time and harness overhead in the manifest and print them.

    overhead = 1 - (training + scoring seconds done this session) / (wall x slots):
    Ray start-up, scheduling, checkpoints, result tables and idle slots all count.
    """
    df = read_results(run_dir)
    wall = time.time() - t0
    compute = banked_compute(run_dir) - banked_before
    overhead = max(0.0, 1.0 - compute / (wall * slots)) if wall > 0 else 0.0
    counts = df["status"].value_counts().to_dict()
    summary = {"started": datetime.fromtimestamp(t0, timezone.utc).isoformat(timespec="seconds"),
               "wall_seconds": round(wall, 2), "startup_seconds": round(t_fit - t0, 2),
               "compute_seconds": round(compute, 2),
               "slots": slots, "overhead_share": round(overhead, 4),
               "counts": {k: int(counts.get(k, 0)) for k in ("ok", "diverged", "error", "pending")}}
    manifest = read_manifest(run_dir)
    manifest["sessions"].append(summary)
    write_manifest(run_dir, manifest)
    if not quiet:
        print(f"[gansweep] done in {_fmt_s(wall)}: {summary['counts']}; harness overhead "
              f"{overhead:.1%} of {slots} slot(s) x wall (training + scoring {compute:.0f}s, "
              f"start-up {t_fit - t0:.0f}s)", flush=True)
        print(f"[gansweep] results: {run_dir / RESULTS}", flush=True)
    return summary


def sweep_status(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """(manifest, results table) of a run, read from disk; starts nothing."""
    return read_run_results(run_dir)
