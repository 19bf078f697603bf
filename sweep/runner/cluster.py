"""Where a sweep runs: the runtime options, Ray's start-up and shutdown, storage checks.

A private single-machine Ray instance (the default) listens on loopback only; a
cluster run (`--address`) joins an existing Ray cluster, whose nodes must all
reach the run's storage. Ray is imported only inside functions, after
`set_environment` has set the variables it reads at import time.
"""
from __future__ import annotations

import json
import logging
import os
import pickletools
import signal
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import UserError
from sweep.record.store import RecordStore, is_uri
from sweep.runner import ray_private
from sweep.runner.signals import STOP


@dataclass(frozen=True)
class Runtime:
    """How a sweep runs (not what it computes): never changes a score's meaning."""

    cpus_per_trial: float = 1.0  # CPUs reserved per trial; also torch's thread count
    gpus_per_trial: float = 0.0  # GPU fraction per trial (e.g. 0.25 packs 4 trials a GPU)
    max_concurrent: int = 0  # at most this many trials at once (0: as resources allow)
    max_failures: int = 2  # retries of a failing trial, each from its last checkpoint
    address: str | None = None  # an existing Ray cluster ("auto", "ray://...", host:port)
    num_cpus: int | None = None  # CPUs of the local Ray instance (None: all)
    data_root: str | None = None  # where MNIST is read (see sweep/train/data.py)
    pack: int = 1  # grid points per Tune trial (sweep/plan/packs.py); fixed for a run once it starts
    keep_weights: bool = False  # keep every ok point's final G weights in RUN_DIR/weights/
    trackers: tuple[str, ...] = ()  # also log every point to these: wandb, mlflow (sweep/runner/trackers.py)
    stall_timeout: float | None = None  # seconds without a report that stall a trial (0: off; None: by rate)

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_trial))

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_trial > 0 else "cpu"


def set_environment(rt: Runtime) -> None:
    """Ray's and Tune's switches, set before Ray is imported.

    * Ray binds its gRPC servers to every interface unless the node IP is the
      loopback address, and `ray.init` replaces 127.0.0.1 with the machine's external
      address unless multi-node support is off; this is Ray's own switch for that (its
      default on macOS and Windows). A cluster run (--address) leaves it.
    * Tune's auto loggers are off (the callbacks are chosen in sweep/runner/engine.py), and its
      console tables are replaced by the ledger's one-line progress.
    * Tune's own SIGINT handler is off: sweep/runner/signals.py handles SIGINT, SIGTERM and
      SIGHUP alike and asks Tune to stop through the same path.
    * Tune's traceback per failed trial attempt is off (but with --verbose): the callback says
      one line per failure and keeps the traceback in RUN_DIR/failures.log; so are Ray's for
      failed results that a stopped sweep never fetched.
    * Ray's usage statistics are off unless RAY_USAGE_STATS_ENABLED says otherwise: a sweep
      reports to nobody (and see sweep/runner/ray_private.py).
    * A new local instance starts no idle workers ahead of the driver's first task: Tune's trial
      actors start their own, so the prestarted ones (one per CPU) only imported Ray and idled.
    """
    if rt.address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    verbose = logging.getLogger("gansweep").isEnabledFor(logging.DEBUG)
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "1" if verbose else "0"
    # a trial stopped mid-failure leaves results nobody fetches: Ray would print each one's traceback
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "0" if verbose else "1"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if rt.address is None:
        os.environ.setdefault("RAY_prestart_worker_first_driver", "0")


def ray_init(rt: Runtime) -> None:
    import ray

    if ray.is_initialized():
        return
    # Ray's own log lines and the workers' output only with --verbose (sweep/cli/common.py's logging).
    verbose = logging.getLogger("gansweep").isEnabledFor(logging.DEBUG)
    ray_private.patch_driver(quiet=not verbose)
    # Ray's own processes (GCS, raylet, agents) share the driver's process group, so a
    # lost terminal's SIGHUP reaches them too and would kill the node under a sweep that
    # is trying to stop cleanly. They inherit an ignored signal across exec: ignore it
    # while they start, then sweep/runner/signals.py handles it in the driver alone.
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # In a Slurm job, SIGTERM is blocked while they start, and a blocked signal stays blocked across
    # exec: scancel (and the time limit) send SIGTERM to every process of the job, and a GCS or
    # raylet that died of it would leave the driver hung (Ray waits 60 s for its GCS) until Slurm
    # kills the job. Blocked there, the driver alone acts on it: it stops the sweep, then shuts Ray
    # down (about 4 s slower: Ray waits 1 s for each of its processes to take a SIGTERM they no
    # longer can, hence only in a job). A SIGTERM that comes meanwhile waits for the driver's own
    # handler (unblocked below).
    in_job = "SLURM_JOB_ID" in os.environ
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM} if in_job else set())
    quiet = {"log_to_driver": verbose, "logging_level": "INFO" if verbose else "ERROR"}

    try:
        if rt.address:
            ray.init(address=rt.address, **quiet)
        else:
            # A private single-machine instance: no dashboard, every port on loopback. "local": never
            # join a cluster that RAY_ADDRESS or `ray start` left on the machine (Ray's default would,
            # and then refuse num_cpus); joining one is what --address is for.
            with nullcontext() if verbose else ray_private.lean_local_instance():
                ray.init(address="local", num_cpus=rt.num_cpus, include_dashboard=False, **quiet)
    except SystemExit as e:
        # A SIGTERM taken by a thread that does not block it (torch's, say) meets Ray's own handler
        # meanwhile, sys.exit(15): a stop like any other signal's, which the engine reports
        # ("stopped during start-up") once the half-started instance is gone.
        if e.code != signal.SIGTERM or not STOP.active:
            raise
        STOP.record(signal.SIGTERM)
        ray.shutdown()
    finally:
        signal.signal(signal.SIGHUP, hup)
        if STOP.active:
            STOP.install()  # ray.init replaced the driver's SIGTERM handler: take it back
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def shutdown() -> None:
    """Stop the local Ray instance (or leave the cluster) before the interpreter exits:
    letting atexit do it can print native-code noise after our last line."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def slots(rt: Runtime, n_trials: int) -> int:
    """How many trials run at once on the Ray instance at hand."""
    import ray

    res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // rt.cpus_per_trial) if rt.cpus_per_trial > 0 else n_trials
    if rt.gpus_per_trial > 0:
        n = min(n, int(res.get("GPU", 0) // rt.gpus_per_trial))
    if rt.max_concurrent:
        n = min(n, rt.max_concurrent)
    return max(1, min(n, n_trials))


# --------------------------------------------------------------------------- storage
SHARED_FS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
             "fuse.gcsfuse", "fuse.s3fs", "fuse.juicefs", "fuse.sshfs", "wekafs")


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


def check_storage(storage: str, address: str | None, shared_storage: bool) -> None:
    """Refuse object storage that cannot be reached (sweep/record/store.py RecordStore.reach) and, on a
    cluster, a storage path that only the head node can see."""
    if is_uri(storage):
        RecordStore(storage).reach()
        return
    if address is None or shared_storage:
        return
    probe = Path(storage)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fstype = _local_fs_type(probe)
    if fstype not in SHARED_FS:
        raise UserError(
            f"--storage {storage} is on a node-local filesystem ({fstype or 'unknown'}); on a cluster "
            "every node must reach it: use an NFS path, s3:// or gs:// (or --shared-storage if it is shared)")


def experiment_state_problem(tune_path: str) -> str | None:
    """Why Tune's experiment state cannot be restored ('missing', or the reader's error on a file
    Tune's resume reads), or None. Tune's resume fails on any of them and then silently starts a new
    experiment of one empty config, so the engine asks first (and rebuilds the experiment from the
    tables instead: sweep/runner/rebuild.py).

    The files: the newest experiment state, tuner.pkl, the newest state of the trial generator (a
    pickle, despite its .json) and of the callbacks, where one was saved. Tune writes each to a
    staging folder and copies it into the run's storage; on a full disk the copy is cut short, and
    any of them can be the one cut (a cut generator state beside a whole experiment state: CI,
    2026-12-07)."""
    if is_uri(tune_path):
        return None  # remote storage: Tune reads it; nothing local to check
    p = Path(tune_path)
    states = sorted(p.glob(EXPERIMENT_STATES))
    if not (p / "tuner.pkl").exists() or not states:
        return "missing"
    try:
        state = json.loads(states[-1].read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        return f"{states[-1].name} unreadable ({type(e).__name__})"
    for pickled in (p / "tuner.pkl", *(f for pattern in SAVED_STATES for f in sorted(p.glob(pattern))[-1:])):
        why = _pickle_problem(pickled)
        if why is not None:
            return f"{pickled.name} unreadable ({why})"
    gone = _deleted_checkpoint(p, state)
    if gone is not None:
        return f"{states[-1].name}, older than the checkpoints of {gone[0]} (it names {gone[1]}, since deleted)"
    return None


# The files Tune names by session, of which its resume reads the newest (Ray is not imported here, so
# its templates are spelled again; tests/test_ray_private.py checks them against Ray): the experiment
# state (TuneController.CKPT_FILE_TMPL), and the trial generator's and the callbacks' saved states
# (BasicVariantGenerator.CKPT_FILE_TMPL, CallbackList.CKPT_FILE_TMPL)
EXPERIMENT_STATES = "experiment_state-*.json"
SAVED_STATES = ("basic-variant-state-*.json", "callback-states-*.pkl")


def _pickle_problem(path: Path) -> str | None:
    """Why a pickle file cannot be read (empty, cut short, not a pickle), or None. Walks its opcodes
    without loading it: nothing of Ray is imported, no class is looked up."""
    try:
        data = path.read_bytes()
        if not data:
            return "empty"
        for _ in pickletools.genops(data):
            pass
    except OSError as e:
        return type(e).__name__
    except ValueError as e:  # pickletools: "not enough data in stream ...", "no STOP opcode ...", bad opcode
        return f"not a whole pickle: {e}"
    return None


def _deleted_checkpoint(tune_path: Path, state: dict) -> tuple[str, str] | None:
    """(trial folder, checkpoint) of an unfinished trial whose newest checkpoint, as the experiment
    state names it, is gone from disk; None if every one is there.

    Tune writes its experiment state to a staging folder and copies it to storage in the background,
    forcing a copy only every `num_to_keep` checkpoints of a trial, while it deletes a trial's
    checkpoints beyond `num_to_keep` as soon as newer ones arrive. A driver killed in between leaves
    a state that names a deleted checkpoint: restoring the trial fails at every retry ("does not
    exist on storage anymore"), and its points would end `error` with newer checkpoints on disk.
    The names are read from the pickled checkpoint manager's bytes (no unpickling: Ray is not
    imported yet), relative to this tune folder, so a run copied elsewhere checks its own files."""
    for trial_json, meta in state.get("trial_data", []):
        try:
            if json.loads(trial_json).get("status") == "TERMINATED":
                continue  # a finished trial is not restored
            raw = bytes.fromhex(json.loads(meta)["checkpoint_manager"]["value"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # another Tune's layout: Tune reads it
        # the kept checkpoints in order, newest last (the latest is the same object, pickled as a
        # reference): only the newest matters, it is what Tune restores from
        names = ray_private.checkpoint_names(raw)
        if names:
            trial_dir, ckpt = names[-1]
            if (tune_path / trial_dir).is_dir() and not (tune_path / trial_dir / ckpt).is_dir():
                return trial_dir, ckpt
    return None
