"""Run and resume a sweep with Ray Tune: one pack of grid points per Tune trial, one results table per run.

    gansweep run --preset mini            # local Ray instance, ./runs/<name>
    gansweep resume runs/<name>           # after the driver died or was stopped
    gansweep status runs/<name> --check   # counts, results so far, the ledger's rules; starts nothing

A run directory (RUN_DIR) holds:
    gansweep.json      the manifest: preset, runtime options, versions, sessions (the one file
                       that cannot be rebuilt; every table below can, by `resume`)
    .gansweep.lock     held by the one `run` / `resume` writing the run (sweep/runner/lock.py)
    sweep.yaml         the sweep file as it was when the run started (resume re-reads it)
    results.parquet    one row per grid point (sweep/record/schema.py), refreshed as trials end
    curves.parquet     one row per (grid point, scored epoch)
    samples/           the last evaluated samples of every finished point (64 x 32 x 32 uint8)
    weights/           with --keep-weights, every ok point's final G weights (a state_dict)
    tune/              Ray Tune's experiment (state, trial dirs, their logs; checkpoints while a
                       pack trains, emptied once its points are in the tables); on a cluster it
                       lives on shared storage named by --storage instead.

A Tune trial trains a pack of up to --pack K points of one shape (sweep/plan/packs.py; a pack
of one is a plain trial). The pieces: sweep/runner/worker.py runs a pack inside a Tune worker, sweep/record/ledger.py
turns its reports into rows (the rules a row obeys are there), sweep/runner/callback.py
connects the two, sweep/runner/cluster.py starts Ray, sweep/runner/signals.py stops it cleanly.
"""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from sweep.runner import cluster, trackers
from sweep.runner.cluster import Runtime
from sweep.errors import Interrupted, UserError
from sweep.plan.grid import Preset, estimate_flops
from sweep.runner.lock import RunLock
from sweep.plan.packs import Pack, make_packs, trial_label
from sweep.record.ledger import (Ledger, banked_compute, check_defaults, finished_reports, fmt_s, heal, interrupted_line,
                          plan, session_summary)
from sweep.record.results import (MANIFEST, RESULTS, new_manifest, read_manifest, read_run_results, tune_path_of,
                           write_manifest)
from sweep.runner.signals import STOP

# Tune's log lines about a stop it was asked for: the engine says it in one line instead.
_TUNE_STOP_NOISE = ("Stop signal received", "Trials did not complete", "Experiment has been interrupted")


def _prepare(packs: tuple[Pack, ...], rt: Runtime, device: str, download: bool, finished: dict):
    """MNIST, classifier and FID reference read on the driver, then Ray started.

    Returns (trainable, classifier sha256, scores of the real MNIST test set). Data and
    classifier are read before Ray starts, so a missing dataset or a bad classifier
    fails before anything is started or written.
    """
    from models.classifier import load_classifier
    from sweep.train.data import load_mnist
    from sweep.train.scoring import load_reference

    mnist = load_mnist(rt.data_root, download=download)
    clf, sha = load_classifier()
    ref, reference_scores = load_reference(clf, sha, mnist.test_images)
    cluster.ray_init(rt)
    from sweep.runner.worker import make_trainable

    n = max(t.n_train for p in packs for t in p.points)
    fn = make_trainable(mnist.train_images[:n].numpy(), clf, sha, ref, rt.threads, device, finished,
                        rt.cpus_per_trial, rt.gpus_per_trial,
                        {p.pack_id: [t.as_dict() for t in p.points] for p in packs}, rt.keep_weights)
    return fn, sha, reference_scores


def _run_config(manifest: dict, run_dir: Path, rt: Runtime):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from sweep.runner.callback import LedgerCallback

    storage_path, name = manifest["tune_path"].rsplit("/", 1)
    callbacks = [JsonLoggerCallback(), trackers.tensorboard_callback(), LedgerCallback()]
    callbacks += [trackers.make_tracker(name, run_dir) for name in rt.trackers]
    return tune.RunConfig(
        name=name, storage_path=storage_path, verbose=0,
        callbacks=callbacks,
        # num_to_keep=1 rewrites the whole experiment state on every checkpoint: keep 2.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=rt.max_failures))


def _trial_dirname(trial) -> str:
    return f"{trial_label(trial.config)}-{trial.trial_id}"


def _pack_flops(pack: Pack) -> float:
    return sum(estimate_flops(t) for t in pack.points)


def run_sweep(preset: Preset, config_file: Path, run_dir: Path, rt: Runtime, *,
              storage: str | None = None, shared_storage: bool = False,
              download: bool = False, quiet: bool = False) -> dict:
    """Start a new sweep in run_dir; returns the session summary (wall, overhead, counts)."""
    t0 = time.time()
    if (run_dir / MANIFEST).exists():
        raise UserError(f"{run_dir} already holds a run: `gansweep resume {run_dir}` continues it, "
                        "or pick another --name")
    tune_path = f"{storage.rstrip('/')}/{run_dir.name}/tune" if storage else str((run_dir / "tune").resolve())
    if storage and "://" not in storage:
        tune_path = str(Path(tune_path).resolve())
    cluster.check_storage(tune_path if "://" in tune_path else str(Path(tune_path).parent), rt.address,
                          shared_storage)
    with _session(rt, quiet, run_dir), ExitStack() as held:
        # Data and classifier first: a missing dataset or a bad classifier (or a signal
        # during start-up) leaves no half-made run directory behind.
        packs = make_packs(preset.trials, rt.pack)
        trackers.configure(packs)
        trainable_fn, sha, reference_scores = _prepare(packs, rt, rt.device, download, {})
        _stop_if_requested(f"{run_dir} was not created")
        run_dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(RunLock(run_dir, "run"))  # until the session ends (or the process dies)
        if (run_dir / MANIFEST).exists():  # another `run --name` got here first
            raise UserError(f"{run_dir} already holds a run: `gansweep resume {run_dir}` continues it, "
                            "or pick another --name")
        shutil.copyfile(config_file, run_dir / "sweep.yaml")
        manifest = new_manifest(run_dir.name, preset, tune_path, asdict(rt), rt.device, sha, reference_scores)
        write_manifest(run_dir, manifest)
        Ledger(run_dir, preset.trials, manifest).flush({})  # every point pending from the start

        from ray import tune

        slots = cluster.slots(rt, len(packs))
        # Longest trials first: the sweep's tail is then short trials, not one long straggler.
        order = sorted(packs, key=_pack_flops, reverse=True)
        tuner = tune.Tuner(
            trainable_fn, param_space={"pack": tune.grid_search([p.pack_id for p in order])},
            tune_config=tune.TuneConfig(max_concurrent_trials=rt.max_concurrent or None, reuse_actors=True,
                                        trial_dirname_creator=_trial_dirname),
            run_config=_run_config(manifest, run_dir, rt))
        if not quiet:
            from sweep.plan.grid import source_name

            overridden = preset.overrides.describe()
            print(f"[gansweep] run {run_dir} : preset {preset.name} of {source_name(config_file)}"
                  f"{' with ' + overridden if overridden else ''}, {_trials_phrase(preset.trials, packs)}, "
                  f"{slots} at a time, {rt.cpus_per_trial:g} CPU / {rt.gpus_per_trial:g} GPU each", flush=True)
        t_fit = time.time()
        tuner.fit()
        return _finish_session(run_dir, t0, t_fit, 0.0, slots, quiet)


def resume_sweep(run_dir: Path, rt_overrides: dict | None = None, *, skip_errored: bool = False,
                 restart_errored: bool = False, download: bool = False, quiet: bool = False) -> dict:
    """Carry on a run: finished points stay, unfinished ones continue from their checkpoints.

    Errored trials are retried from their last checkpoint, or from scratch with
    restart_errored (e.g. when that checkpoint is damaged), or left as they are
    with skip_errored.
    """
    t0 = time.time()
    manifest = read_manifest(run_dir)
    with RunLock(run_dir, "resume"):
        return _resume(run_dir, manifest, t0, rt_overrides, skip_errored, restart_errored, download, quiet)


def _resume(run_dir: Path, manifest: dict, t0: float, rt_overrides: dict | None, skip_errored: bool,
            restart_errored: bool, download: bool, quiet: bool) -> dict:
    preset_trials = plan(run_dir)
    check_defaults(run_dir, manifest, preset_trials)  # before anything is written
    for line in heal(run_dir):  # results/curves that a full disk or a cut copy damaged
        print(f"[gansweep] {line}", flush=True)
    rt = Runtime(**{**manifest["runtime"], **(rt_overrides or {})})
    packs = make_packs(preset_trials, rt.pack)
    trackers.configure(packs)
    tune_path = tune_path_of(run_dir, manifest)
    cluster.check_experiment_state(tune_path, run_dir)
    banked = banked_compute(run_dir)
    with _session(rt, quiet, run_dir):
        trainable_fn, sha, _ = _prepare(packs, rt, manifest["device"], download, finished_reports(run_dir))
        if sha != manifest["classifier_sha256"]:
            raise UserError(f"the classifier changed since this run started (sha256 {sha[:12]} vs "
                            f"{manifest['classifier_sha256'][:12]}): its scores would not be comparable")
        _stop_if_requested(f"nothing was resumed in {run_dir}")
        from ray import tune

        slots = cluster.slots(rt, len(packs))
        tuner = tune.Tuner.restore(tune_path, trainable=trainable_fn, resume_unfinished=True,
                                   resume_errored=not skip_errored and not restart_errored,
                                   restart_errored=restart_errored and not skip_errored)
        if not quiet:
            how = (" (errored trials skipped)" if skip_errored else
                   " (errored trials restarted from scratch)" if restart_errored else "")
            print(f"[gansweep] resuming {run_dir}: {_trials_phrase(preset_trials, packs)}, {slots} at a time{how}",
                  flush=True)
        t_fit = time.time()
        tuner.fit()
        return _finish_session(run_dir, t0, t_fit, banked, slots, quiet)


def _trials_phrase(points: tuple, packs: tuple[Pack, ...]) -> str:
    if len(packs) == len(points):
        return f"{len(points)} trials"
    return f"{len(points)} points in {len(packs)} trials (packs of up to {max(len(p.points) for p in packs)})"


@contextmanager
def _session(rt: Runtime, quiet: bool, run_dir: Path):
    """Signals handled, Tune's stop messages quieted, the callback configured; on the way
    out, Ray shut down (before our last line, so no native noise follows it)."""
    cluster.set_environment(rt)
    STOP.install()
    tune_log = logging.getLogger("ray.tune.tune")
    quiet_stop = logging.Filter()
    quiet_stop.filter = lambda rec: not str(rec.msg).startswith(_TUNE_STOP_NOISE)
    tune_log.addFilter(quiet_stop)
    import sweep.runner.callback

    sweep.runner.callback.configure(run_dir, quiet)
    try:
        yield
    finally:
        try:
            cluster.shutdown()
        finally:
            tune_log.removeFilter(quiet_stop)
            STOP.restore()


def _stop_if_requested(what: str) -> None:
    if STOP.requested:
        raise Interrupted(f"{STOP.name}: stopped during start-up; {what}", STOP.exit_status)


def _finish_session(run_dir: Path, t0: float, t_fit: float, banked_before: float, slots: int,
                    quiet: bool) -> dict:
    """Record the session in the manifest; print how it ended (a stopped one raises Interrupted)."""
    summary, df = session_summary(run_dir, t0, t_fit, banked_before, slots, STOP.name)
    manifest = read_manifest(run_dir)
    manifest["sessions"].append(summary)
    write_manifest(run_dir, manifest)
    if STOP.requested:
        raise Interrupted(interrupted_line(run_dir, df, STOP.name), STOP.exit_status)
    if not quiet:
        print(f"[gansweep] done in {fmt_s(summary['wall_seconds'])}: {summary['counts']}; harness overhead "
              f"{summary['overhead_share']:.1%} of {slots} slot(s) x wall (training + scoring "
              f"{summary['compute_seconds']:.0f}s, start-up {summary['startup_seconds']:.0f}s)", flush=True)
        print(f"[gansweep] results: {run_dir / RESULTS}", flush=True)
    return summary


def sweep_status(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """(manifest, results table) of a run, read from disk; starts nothing."""
    return read_run_results(run_dir)
