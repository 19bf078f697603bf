"""Every use of Ray's private API in gansweep, in one place (Ray is pinned: ray[tune]==2.60.0).

Each function here reaches into a part of Ray or Tune that is not public, says why, and what it
touches; the rest of gansweep calls these functions and never Ray's internals itself
(tests/test_layout.py checks it). INTERNALS lists every private name used, and
tests/test_ray_private.py checks that each still exists in the installed Ray, so that an upgrade
breaks there, loudly, instead of somewhere silently. What each patch buys is measured in
docs/performance.md and docs/reliability.md.

Patches of the driver (patch_driver, before ray.init) and of a private instance's start-up
(lean_local_instance); readers of Tune's objects and files (checkpoint_names, trial_actor,
set_session_config, forget_live_trials); the W&B integration's key setup (wandb_set_api_key).
"""
from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager

# (module, attribute) of every private name used below
INTERNALS = (
    ("ray._common.usage.usage_lib", "usage_stats_enabled"),
    ("ray.air._internal.usage", "tag_callbacks"),
    ("ray.tune.execution.experiment_state", "_ExperimentCheckpointManager"),
    ("ray.tune.execution.class_cache", "DEFAULT_ENV_VARS"),
    ("ray._private.parameter", "RayParams"),
    ("ray._private.node", "Node"),
    ("ray.train._internal.checkpoint_manager", "_delete_fs_path"),
    ("ray._private.worker", "print_to_stdstream"),
    ("ray.tune.tuner", "Tuner"),
    ("ray.tune.search.basic_variant", "BasicVariantGenerator"),
    ("ray.air.integrations.wandb", "_set_api_key"),
    ("ray.train._internal.syncer", "DEFAULT_SYNC_TIMEOUT"),
)
# attributes of Tune's objects read or set below (checked on real objects by the tests)
OBJECT_ATTRIBUTES = {
    "_ExperimentCheckpointManager": ("on_trial_checkpoint", "_last_sync_time", "_should_force_sync_up"),
    "RayParams": ("no_monitor", "include_log_monitor"),
    "Node": ("start_api_server",),
    "Tuner": ("_local_tuner",),
    "BasicVariantGenerator": ("_live_trials", "max_concurrent"),
    "Trial": ("temporary_state", "storage"),
}


def patch_driver(quiet: bool) -> None:
    """The driver's patches, before ray.init; quiet (not --verbose) adds the console's."""
    skip_callback_census()
    throttle_forced_state_copies()
    plain_trial_workers()
    tolerate_deleted_checkpoints()
    if quiet:
        one_line_cluster_errors()


def skip_callback_census() -> None:
    """Tune counts the callbacks it is given for Ray's usage statistics, importing Ray's MLflow and
    W&B integrations (and so mlflow and wandb) to do it: 1.3 s of the driver's CPU at every run
    where both are installed, even with no tracker asked for. With usage statistics off the count
    goes nowhere, so it is skipped."""
    from ray._common.usage import usage_lib
    from ray.air._internal import usage

    if not usage_lib.usage_stats_enabled() and hasattr(usage, "tag_callbacks"):
        usage.tag_callbacks = lambda callbacks: False


FORCED_STATE_COPY_EVERY_S = 2.0  # Tune's forced experiment-state copies: at most this often


def throttle_forced_state_copies() -> None:
    """Tune forces a copy of its whole experiment state (every trial's last result and checkpoint
    list, 38 KB a trial at --pack 14) whenever any trial has saved num_to_keep checkpoints since
    the last copy, so that the state on storage keeps up with the checkpoints it deletes. A pack
    saves one checkpoint per stack and epoch: at 512 trials of `gansweep bench --scale` the copies
    came once or twice a trial and took 42% of the driver's CPU, growing with the square of the
    trial count. Here a forced copy waits until the last one is FORCED_STATE_COPY_EVERY_S old (the
    trial's count stays due, so its next checkpoint asks again), and Tune's own period (10 s or
    more) goes on. Trials whose epochs take longer than that, as real ones do, are not affected;
    a state that names a deleted checkpoint is found at resume and rebuilt from the tables
    (`experiment_state_problem`), as before."""

    from ray.tune.execution import experiment_state

    manager = experiment_state._ExperimentCheckpointManager
    if getattr(manager.on_trial_checkpoint, "gansweep", False):
        return
    tune_own = manager.on_trial_checkpoint

    def on_trial_checkpoint(self, trial) -> None:
        tune_own(self, trial)
        last = self._last_sync_time
        if self._should_force_sync_up and last is not None and time.monotonic() - last < FORCED_STATE_COPY_EVERY_S:
            self._should_force_sync_up = False

    on_trial_checkpoint.gansweep = True
    manager.on_trial_checkpoint = on_trial_checkpoint


def tolerate_deleted_checkpoints() -> None:
    """Tune deletes a trial's checkpoints beyond num_to_keep by the names its checkpoint manager
    holds; after a killed driver those names can be older than the disk (the experiment state on
    storage lags the deletions, `_deleted_checkpoint` below), so on resume Tune deletes a
    checkpoint that is already gone. Its deleter then raises FileNotFoundError before its own
    try (ray.train._internal.storage._is_directory), and the trial's save is logged as an ERROR
    with a traceback on the user's console (seen in CI: "Error handling checkpoint ..."), its
    experiment-state bookkeeping skipped. A checkpoint that is gone is deleted: nothing to do."""
    from ray.train._internal import checkpoint_manager

    tune_own = getattr(checkpoint_manager, "_delete_fs_path", None)
    if tune_own is None or getattr(tune_own, "gansweep", False):
        return

    def delete_fs_path(fs, fs_path):
        import pyarrow.fs

        if fs.get_file_info(fs_path).type == pyarrow.fs.FileType.NotFound:
            return
        tune_own(fs=fs, fs_path=fs_path)

    delete_fs_path.gansweep = True
    checkpoint_manager._delete_fs_path = delete_fs_path


def one_line_cluster_errors() -> None:
    """Ray's driver prints the errors its cluster publishes (a node's raylet lost, a worker killed for
    memory) on stdout, whatever log_to_driver says: a lost node is 20 lines of its raylet's debug
    dump. A quiet driver prints each as one warning instead, its first sentence (the reason), and the
    node watch names the node (sweep/runner/nodes.py); --verbose keeps Ray's own output."""
    from ray._private import worker

    ray_own = worker.print_to_stdstream
    if getattr(ray_own, "gansweep", False):
        return

    said: set[str] = set()  # a node's loss comes once from each of its processes: one line each

    def print_to_stdstream(data, ignore_prefix: bool):
        if data.get("pid") != "raylet":
            return ray_own(data, ignore_prefix)
        for message in data.get("lines", []):
            reason = str(message).strip().split("\n", 1)[0]
            for tail in (" Last ", " Possible reasons", " This can happen"):
                reason = reason.split(tail, 1)[0]
            if reason and reason not in said:
                said.add(reason)
                logging.getLogger("gansweep").warning("Ray: %s", reason)

    print_to_stdstream.gansweep = True
    worker.print_to_stdstream = print_to_stdstream


def plain_trial_workers() -> None:
    """Tune gives every trial actor a runtime environment that sets PL_DISABLE_FORK=1, PyTorch
    Lightning's switch (ray-project/ray#28197), which no gansweep trial reads. Any runtime
    environment at all makes Ray start the actor's worker through its runtime-env set-up script
    (setup_worker.py: 0.8-1.0 CPU-s of imports here, then a shell and a second interpreter) and
    keeps it from the pooled workers that have none. Without the default, a trial's worker starts
    as Ray's plain workers do. Variables Tune propagates from the driver (AWS credentials for
    s3:// storage) still reach the trials, through the set-up script as before."""
    from ray.tune.execution import class_cache

    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict):
        defaults.pop("PL_DISABLE_FORK", None)


@contextmanager
def lean_local_instance():
    """While `ray.init` starts a private instance: without the three head processes a quiet
    single-machine sweep never uses.

    * the autoscaler's monitor: it scales a cluster from its config, and a private instance has
      none (it also feeds `ray status`);
    * the API server (the dashboard's head, whose dashboard is already off): Ray's job and state
      APIs, which nothing of a sweep calls;
    * the log monitor: it tails the workers' log files for a driver that prints them
      (log_to_driver), and a quiet driver does not (Ray's own test clusters, ray.cluster_utils,
      leave it out too).
    Each is a Python process that imports Ray: together 3.9 of a session's 7.8 CPU-s of start-up,
    and a third of an idle instance's CPU after (docs/performance.md). `ray.init` has no switch for
    them; the RayParams it builds and the node's start-up do, and are set while it runs. A Ray
    without them starts everything, as does --verbose (its output needs the log monitor, and a user
    who asks for Ray's lines may want `ray status`)."""
    from ray._private import node, parameter

    ray_params_init, start_api_server = parameter.RayParams.__init__, node.Node.start_api_server

    def lean_params(self, *args, **kwargs):
        ray_params_init(self, *args, **kwargs)
        self.no_monitor, self.include_log_monitor = True, False

    def no_api_server(self, **kwargs):
        self._webui_url = None  # what a node without one reports

    if not all(hasattr(parameter.RayParams(), k) for k in ("no_monitor", "include_log_monitor")):
        yield  # another Ray than the pinned one: start what it starts
        return
    parameter.RayParams.__init__, node.Node.start_api_server = lean_params, no_api_server
    try:
        yield
    finally:
        parameter.RayParams.__init__, node.Node.start_api_server = ray_params_init, start_api_server


def checkpoint_names(raw: bytes) -> list[tuple[str, str]]:
    """(trial folder, checkpoint_NNNNNN) named in a trial's pickled checkpoint manager, as Tune's
    experiment state holds it (hex of a cloudpickle), in order, newest last; read without unpickling
    (Ray is not imported yet when the engine asks, sweep/runner/cluster.py experiment_state_problem)."""
    return [(a.decode(), b.decode()) for a, b in re.findall(rb"([A-Za-z0-9._=+-]+)/(checkpoint_\d{6})", raw)]


def set_session_config(tuner, callbacks: list, tune_config: dict) -> None:
    """A restored Tuner pickled the first session's run config (its callbacks) and search algorithm;
    Tuner.restore takes neither, so this session's are set on its local tuner."""
    tuner._local_tuner.get_run_config().callbacks = callbacks
    for key, value in tune_config.items():
        setattr(tuner._local_tuner._tune_config, key, value)


def forget_live_trials(generator) -> None:
    """A restored BasicVariantGenerator counts live the trials its saved state counted
    (sweep/runner/scheduling.py SlotGenerator says why that must go)."""
    generator._live_trials = set()


def trial_actor(trial):
    """The Ray actor running a Tune trial, or None (a trial not started, or Tune's layout changed)."""
    return getattr(getattr(trial, "temporary_state", None), "ray_actor", None)


def trial_file(trial, name: str) -> bytes | None:
    """A file of a Tune trial's folder in the run's storage (a bucket too), by Tune's StorageContext;
    None if it is not there."""
    storage = getattr(trial, "storage", None)
    if storage is None or not trial.path:
        return None
    try:
        with storage.storage_filesystem.open_input_stream(f"{trial.path}/{name}") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def wandb_set_api_key() -> None:
    """Ray's W&B integration's key set-up (WANDB_API_KEY, or the key file), as its own callback does."""
    from ray.air.integrations.wandb import _set_api_key

    _set_api_key()


def sync_timeout() -> float:
    """Tune's default timeout for syncing a trial's files (seconds)."""
    from ray.train._internal.syncer import DEFAULT_SYNC_TIMEOUT

    return DEFAULT_SYNC_TIMEOUT
