"""Run and resume a sweep with Ray Tune: one pack of grid points per Tune trial, one results table per run.

    gansweep run --preset mini            # local Ray instance, ./runs/<name>
    gansweep resume runs/<name>           # after the driver died or was stopped
    gansweep status runs/<name> --check   # counts, results so far, the ledger's rules; starts nothing

What a run directory holds is in sweep/record/rundir.py; every command builds its RunDir
once and hands it on. A Tune trial trains a pack of up to --pack K points of one shape
(sweep/plan/packs.py; a pack of one is a plain trial). The pieces: sweep/runner/worker.py
runs a pack inside a Tune worker, sweep/record/ledger.py turns its reports into rows,
sweep/runner/callback.py connects the two, sweep/runner/cluster.py starts Ray,
sweep/runner/signals.py stops it cleanly. Progress goes to the "gansweep" logger.
"""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path

from models.classifier import load_classifier
from sweep.errors import EXIT_DISK_FULL, Interrupted, UserError
from sweep.plan.disk import check_free_space
from sweep.plan.grid import Preset, estimate_flops, source_name
from sweep.plan.packs import Pack, make_packs, trial_label
from sweep.record.heal import heal
from sweep.record.layout import MANIFEST
from sweep.record.lease import Lease
from sweep.record.ledger import Ledger
from sweep.record.progress import banked_compute, counts_words, fmt_s, interrupted_line, session_summary
from sweep.record.results import new_manifest
from sweep.record.rules import name_points
from sweep.record.rundir import RunDir
from sweep.record.schema import PENDING
from sweep.record.store import RecordStore, Storage, is_uri, store_fault
from sweep.runner import cluster, trackers
from sweep.runner.cluster import Runtime
from sweep.runner.lock import RunLock
from sweep.runner.nodes import NodeWatch
from sweep.runner.ray_private import set_session_config
from sweep.runner.rebuild import prepare_rebuild
from sweep.runner.signals import STOP, is_disk_full, stop_for_full_disk, stop_for_lost_lease, stop_for_storage
from sweep.runner.stalls import StallWatch
from sweep.train.data import load_mnist
from sweep.train.scoring import load_reference

log = logging.getLogger("gansweep")

# Tune's log lines about a stop it was asked for: the engine says it in one line instead.
_TUNE_STOP_NOISE = ("Stop signal received", "Trials did not complete", "Experiment has been interrupted")


def _prepare(packs: tuple[Pack, ...], rt: Runtime, device: str, download: bool, finished: dict,
             seeds: dict | None = None):
    """MNIST, classifier and FID reference read on the driver, then Ray started.

    Returns (trainable, classifier sha256, scores of the real MNIST test set). Data and
    classifier are read before Ray starts, so a missing dataset or a bad classifier
    fails before anything is started or written.
    """
    mnist = load_mnist(rt.data_root, download=download)
    clf, sha = load_classifier()
    ref, reference_scores = load_reference(clf, sha, mnist.test_images)
    cluster.ray_init(rt)
    # lazy: imports Ray (1-2 s), which loads only once the run's checks have passed
    from sweep.runner.worker import make_trainable

    n = max(t.n_train for p in packs for t in p.points)
    fn = make_trainable(mnist.train_images[:n].numpy(), clf, sha, ref, rt.threads, device, finished,
                        rt.cpus_per_trial, rt.gpus_per_trial,
                        {p.pack_id: [t.as_dict() for t in p.points] for p in packs}, rt.keep_weights, seeds)
    return fn, sha, reference_scores


def _callbacks(run: RunDir, rt: Runtime, stalls: StallWatch) -> list:
    """This session's Tune callbacks, each handed the run: the ledger's (with the stall and node watches), Tune's
    JSON and TensorBoard loggers, and the trackers. Tune pickles callbacks into its experiment
    state; ours pickle nothing, and a resumed tuner gets this list anew (`_restored`)."""
    from ray.tune.logger import JsonLoggerCallback

    # lazy: imports Ray (1-2 s), which loads only once the run's checks have passed
    from sweep.runner.callback import LedgerCallback

    nodes = NodeWatch.from_environment() if rt.address else None  # a cluster's nodes may come and go
    return [JsonLoggerCallback(), trackers.tensorboard_callback(run), LedgerCallback(run, stalls, nodes),
            *(trackers.make_tracker(name, run) for name in rt.trackers)]


def _run_config(run: RunDir, rt: Runtime, stalls: StallWatch):
    from ray import tune

    storage_path, name = run.manifest["tune_path"].rsplit("/", 1)
    return tune.RunConfig(
        name=name, storage_path=storage_path, verbose=0, callbacks=_callbacks(run, rt, stalls),
        # num_to_keep=1 rewrites the whole experiment state on every checkpoint: keep 2.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=rt.max_failures))


def _restored(tuner, run: RunDir, rt: Runtime, stalls: StallWatch, slots: int):
    """A restored Tuner with this session's callbacks (Tune restores the run config it pickled,
    whose callbacks hold nothing of this session, e.g. where the run directory is now), and this
    session's generator and scheduler (sweep/runner/scheduling.py: its slots, not the first session's)."""
    # lazy: imports Ray (1-2 s), which loads only once the run's checks have passed
    from sweep.runner.scheduling import tune_choices

    set_session_config(tuner, _callbacks(run, rt, stalls), tune_choices(rt.max_concurrent, slots, rt.address is not None))
    return tuner


def _trial_dirname(trial) -> str:
    return f"{trial_label(trial.config)}-{trial.trial_id}"


def _pack_flops(pack: Pack) -> float:
    return sum(estimate_flops(t) for t in pack.points)


def run_sweep(preset: Preset, config_file: Path, storage: Storage, name: str, rt: Runtime, *,
              shared_storage: bool = False, download: bool = False, disk_check: bool = True) -> dict:
    """Start a new sweep `name` in storage; returns the session summary (wall, overhead, counts).
    disk_check: refuse when the run's disks have less free space than its estimated peak use."""
    t0 = time.time()
    run_dir, tune_path = storage.run_dir(name), storage.tune_path(name)
    if (run_dir / MANIFEST).exists():
        raise UserError(f"{run_dir} already holds a run: `gansweep resume {run_dir}` continues it, "
                        "or pick another --name")
    # object storage: the URI (reached before anything is made); a folder: every node of a cluster must see it
    cluster.check_storage(storage.root, rt.address, shared_storage)
    packs = make_packs(preset.trials, rt.pack)
    if disk_check:
        check_free_space([p for p in (str(run_dir), tune_path) if not is_uri(p)], packs, rt.keep_weights, None)
    with _session(rt), ExitStack() as held:
        # Data and classifier first: a missing dataset or a bad classifier (or a signal
        # during start-up) leaves no half-made run directory behind.
        trainable_fn, sha, reference_scores = _prepare(packs, rt, rt.device, download, {})
        _stop_if_requested(f"{run_dir} was not created")
        if storage.remote:  # one driver per run in object storage, wherever it runs
            held.enter_context(Lease(storage.run_uri(name), "run", stop_for_lost_lease))
        run_dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(RunLock(run_dir, "run"))  # until the session ends (or the process dies)
        if (run_dir / MANIFEST).exists():  # another `run --name` got here first
            raise UserError(f"{run_dir} already holds a run: `gansweep resume {run_dir}` continues it, "
                            "or pick another --name")
        shutil.copyfile(config_file, run_dir / "sweep.yaml")
        run = RunDir(run_dir, new_manifest(run_dir.name, preset, tune_path, asdict(rt), rt.device, sha,
                                           reference_scores), preset.trials, packs)
        run.save_manifest(run.manifest)
        Ledger(run).flush({})  # every point pending from the start

        slots = cluster.slots(rt, len(run.packs))
        stalls = StallWatch(run.packs, rt.stall_timeout)
        tuner = _new_tuner(run, rt, trainable_fn, stalls, slots)

        overridden = preset.overrides.describe()
        log.info("run %s : preset %s of %s%s, %s, %d at a time, %g CPU / %g GPU each", run_dir, preset.name,
                 source_name(config_file), f" with {overridden}" if overridden else "",
                 _trials_phrase(preset.trials, run.packs), slots, rt.cpus_per_trial, rt.gpus_per_trial)
        t_fit = time.time()
        _fit(tuner, run)
        return _finish_session(run, t0, t_fit, 0.0, slots, stalls.stalls)


def _new_tuner(run: RunDir, rt: Runtime, trainable_fn, stalls: StallWatch, slots: int):
    """A new Tune experiment of every pack of the run, the longest first (the sweep's tail is then
    short trials, not one long straggler), started by sweep/runner/scheduling.py's rules."""
    from ray import tune

    # lazy: imports Ray (1-2 s), which loads only once the run's checks have passed
    from sweep.runner.scheduling import tune_choices

    order = sorted(run.packs, key=_pack_flops, reverse=True)
    return tune.Tuner(
        trainable_fn, param_space={"pack": tune.grid_search([p.pack_id for p in order])},
        tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=_trial_dirname,
                                    **tune_choices(rt.max_concurrent, slots, rt.address is not None)),
        run_config=_run_config(run, rt, stalls))


def resume_sweep(run_dir: Path, rt_overrides: dict | None = None, *, skip_errored: bool = False,
                 restart_errored: bool = False, download: bool = False, disk_check: bool = True,
                 store: RecordStore | None = None) -> dict:
    """Carry on a run: finished points stay, unfinished ones continue from their checkpoints.

    Errored trials are retried from their last checkpoint, or from scratch with
    restart_errored (e.g. when that checkpoint is damaged), or left as they are
    with skip_errored. The run directory's manifest is read once and its plan built once.
    store: a run in object storage, whose record is pulled into run_dir (its working copy) first.
    """
    t0 = time.time()
    run = RunDir(run_dir)
    if store is None:
        run.manifest  # a foreign or damaged directory fails here, before the lock is taken
    else:
        store.check()  # a URI that holds no run fails here, before the working copy is made
    with ExitStack() as held:
        if store is not None:  # one driver per run in object storage, wherever it runs; then its copy here
            held.enter_context(Lease(store.uri, "resume", stop_for_lost_lease))
            run_dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(RunLock(run_dir, "resume"))
        if store is not None:
            log.info("pulled %d files of %s into %s", store.pull(run_dir), store.uri, run_dir)
            run.use_store(store)
        return _resume(run, t0, rt_overrides, skip_errored, restart_errored, download, disk_check)


def _resume(run: RunDir, t0: float, rt_overrides: dict | None, skip_errored: bool,
            restart_errored: bool, download: bool, disk_check: bool) -> dict:
    run.check_defaults()  # before anything is written
    for line in heal(run):  # results/curves that a full disk or a cut copy damaged
        log.info("%s", line)
    manifest = run.manifest
    rt = Runtime(**{**manifest["runtime"], **(rt_overrides or {})})
    tune_path = run.tune_path
    banked = banked_compute(run.path)
    finished, lacking = run.finished_points()  # ok points that lack their kept files are not finished
    if lacking:  # the kept-files rule (sweep/record/rules.py): such points train again
        log.info("%d ok point(s) lack their kept files (samples/%s): %s; they train again, from their "
                 "pack's newest checkpoint where it still reads, else from scratch", len(lacking),
                 ", weights/" if run.keeps_weights else "", name_points(lacking))
    if all(pid in finished for pack in run.packs for pid in pack.point_ids):
        # Nothing to train: no Ray instance (about 10 s and 15 CPU-s) to find that out. The
        # session is recorded all the same (healed tables, a copied run's first resume).
        log.info("every point of %s is finished: nothing to resume", run.path)
        return _finish_session(run, t0, time.time(), banked, 1, 0)
    if disk_check:  # what the unfinished points still need
        todo = [p for p in run.packs if any(pid not in finished for pid in p.point_ids)]
        check_free_space([p for p in (str(run.path), tune_path) if not is_uri(p)], todo, rt.keep_weights, None)
    problem = cluster.experiment_state_problem(tune_path)
    if problem is not None:
        problem = f"Tune's experiment state is {problem}"
    elif lacking:  # Tune would not run again the trials it recorded finished
        problem = f"{len(lacking)} ok point(s) must train again"
    with _session(rt):
        rebuild = None
        if problem is not None:  # the tables are the truth; Tune's state was only a cache
            rebuild = prepare_rebuild(run, finished, problem)
            log.info("%s", rebuild.line())
        trainable_fn, sha, _ = _prepare(run.packs, rt, manifest["device"], download, finished,
                                        rebuild.seeds if rebuild else None)
        if sha != manifest["classifier_sha256"]:
            raise UserError(f"the classifier changed since this run started (sha256 {sha[:12]} vs "
                            f"{manifest['classifier_sha256'][:12]}): its scores would not be comparable")
        _stop_if_requested(f"nothing was resumed in {run.path}")
        from ray import tune

        slots = cluster.slots(rt, len(run.packs))
        stalls = StallWatch(run.packs, rt.stall_timeout)
        if rebuild is not None:
            tuner = _new_tuner(run, rt, trainable_fn, stalls, slots)
        else:
            tuner = _restored(tune.Tuner.restore(tune_path, trainable=trainable_fn, resume_unfinished=True,
                                                 resume_errored=not skip_errored and not restart_errored,
                                                 restart_errored=restart_errored and not skip_errored), run, rt,
                              stalls, slots)
        how = (" (errored trials skipped)" if skip_errored else
               " (errored trials restarted from scratch)" if restart_errored else "")
        log.info("resuming %s: %s, %d at a time%s", run.path, _trials_phrase(run.plan, run.packs), slots, how)
        t_fit = time.time()
        _fit(tuner, run)
        return _finish_session(run, t0, t_fit, banked, slots, stalls.stalls)


def _fit(tuner, run: RunDir) -> None:
    """tuner.fit(), except that a full disk ends it as a signal would: Tune then fails in places of
    its own (its experiment state, a trial's error file cut short), and the tables say the rest."""
    try:
        tuner.fit()
    except Exception as e:
        if is_disk_full(e):
            stop_for_full_disk(run.tune_path)
        if not STOP.fault_name:
            raise
        log.debug("after the stop, Tune raised %s: %s", type(e).__name__, e)


def _trials_phrase(points: tuple, packs: tuple[Pack, ...]) -> str:
    if len(packs) == len(points):
        return f"{len(points)} trials"
    return f"{len(points)} points in {len(packs)} trials (packs of up to {max(len(p.points) for p in packs)})"


@contextmanager
def _session(rt: Runtime):
    """Signals handled and Tune's stop messages quieted; on the way out, Ray shut down (before
    our last line, so no native noise follows it)."""
    cluster.set_environment(rt)
    STOP.install()
    tune_log = logging.getLogger("ray.tune.tune")
    quiet_stop = logging.Filter()
    quiet_stop.filter = lambda rec: not str(rec.msg).startswith(_TUNE_STOP_NOISE)
    tune_log.addFilter(quiet_stop)
    state_log = logging.getLogger("ray.tune.execution.experiment_state")
    state_log.addFilter(_state_save_failed)
    import ray  # noqa: F401  (after set_environment: Ray's handlers, which every Ray logger reaches)

    ray_handlers = logging.getLogger("ray").handlers[:]
    for handler in ray_handlers:
        handler.addFilter(_storage_unreachable)
    try:
        yield
    finally:
        try:
            cluster.shutdown()
        finally:
            tune_log.removeFilter(quiet_stop)
            state_log.removeFilter(_state_save_failed)
            for handler in ray_handlers:
                handler.removeFilter(_storage_unreachable)
            STOP.restore()


def _state_save_failed(record: logging.LogRecord) -> bool:
    """Tune failing to save its experiment state for want of space stops the sweep (one line at the
    end, no traceback); its other messages pass."""
    if record.levelno >= logging.ERROR and is_disk_full(f"{record.getMessage()} {record.exc_info}"):
        STOP.fault(STOP.fault_name or "disk full (Tune could not save its experiment state)", EXIT_DISK_FULL)
        return False
    return True


def _storage_unreachable(record: logging.LogRecord) -> bool:
    """Any Ray error that says the object storage cannot be reached (Tune saving its state or a
    checkpoint, Ray making a trial's folder: each logs its own traceback) stops the sweep, and the
    sweep's one line says it instead; Ray's other messages pass."""
    fault = store_fault(f"{record.getMessage()} {record.exc_info}") if record.levelno >= logging.ERROR else None
    if fault is None:
        return True
    stop_for_storage("Ray Tune's storage", fault)
    return False


def _stop_if_requested(what: str) -> None:
    if STOP.requested:
        raise Interrupted(f"{STOP.name}: stopped during start-up; {what}", STOP.exit_status)


def _finish_session(run: RunDir, t0: float, t_fit: float, banked_before: float, slots: int, stalls: int) -> dict:
    """Record the session in the manifest; log how it ended (a stopped one raises Interrupted)."""
    summary, df = session_summary(run.path, t0, t_fit, banked_before, slots, STOP.name)
    summary["stalls"] = stalls
    manifest = dict(run.manifest)
    manifest["sessions"] = [*manifest["sessions"], summary]
    try:
        run.save_manifest(manifest)
    except OSError as e:  # a full disk: the session goes unrecorded, the rest is kept
        if not is_disk_full(e):
            raise
        log.warning("could not record this session in %s: %s", run.manifest_file, e)
    if STOP.requested and (df["status"] == PENDING).any():  # a stop after the last point is no stop
        where = run.store.uri if run.store is not None else run.path  # what `resume` takes from any folder
        raise Interrupted(interrupted_line(where, df, STOP.name), STOP.exit_status)
    log.info("done in %s: %s; harness overhead %.1f%% of %d slot(s) x wall (training + scoring %.0fs, "
             "start-up %.0fs)", fmt_s(summary["wall_seconds"]), counts_words(summary["counts"]), 100 * summary["overhead_share"],
             slots, summary["compute_seconds"], summary["startup_seconds"])
    log.info("results: %s", run.results_file)
    return summary
