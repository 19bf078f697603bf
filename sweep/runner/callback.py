"""The Tune callback of a sweep: forwards Tune's hooks to the run's ledger, nothing more.

The engine builds it for every session with that session's RunDir (sweep/record/rundir.py):
Tune pickles callbacks into its experiment state, so this one pickles nothing, and a resumed
tuner is handed a new one (a run directory copied elsewhere and resumed there writes there).
`setup` opens the ledger of that run. Progress lines go to the "gansweep" logger (-q hides them).

Imports Ray: import it only after sweep/runner/cluster.py has set Ray's environment.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ray.tune import Callback

from sweep.errors import EXIT_IDLE
from sweep.plan.packs import trial_label
from sweep.record.layout import WEIGHTS_DIR
from sweep.record.ledger import Ledger
from sweep.record.recovery import ERROR_FILE, NO_MESSAGE, error_line, error_line_of
from sweep.record.rows import TrialState, point_reports
from sweep.record.rundir import RunDir
from sweep.record.schema import OK, TUNE_ERROR, TUNE_TERMINATED
from sweep.record.store import store_fault
from sweep.runner.checkpoint import checkpoint_samples
from sweep.runner.nodes import NodeWatch
from sweep.runner.ray_private import trial_actor, trial_file
from sweep.runner.signals import STOP, is_disk_full, stop_for_full_disk, stop_for_storage
from sweep.runner.stalls import StallWatch

PROGRESS_EVERY_S = 10.0
# The sweep stops (resumable) once its object storage has refused every push of the record this long:
# a blip costs a warning, an endpoint that is down does not let the sweep run on with nothing saved.
STORE_DOWN_S = 60.0
FAILURES_LOG = "failures.log"  # RUN_DIR/failures.log: every failed attempt's points and traceback
log = logging.getLogger("gansweep")


def record_failure(path: Path, trial, points: tuple[str, ...], what: str) -> None:
    """Append a failed attempt and its traceback (Tune's error file) to the run's failures log;
    a log that cannot be written (a full disk) costs only the log."""
    try:
        text = Path(trial.error_file).read_text(errors="replace") if trial.error_file else what
        with open(path, "a") as f:
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} trial {trial.trial_id} attempt {trial.num_failures}: "
                    f"{', '.join(points)}\n{text.rstrip()}\n")
    except OSError:
        pass


_ERROR_LINES: dict[tuple[str, int], str] = {}  # (trial id, failures) -> its error line, read once


def trial_error_line(trial) -> str:
    """The last line of a trial's error file (error_line), wherever Tune keeps it: the driver's staging
    folder in this session, else the trial's folder in storage. A run resumed from a bucket in a fresh
    folder has no staging copy of an earlier session's error: it read "error (no message recorded)"."""
    key = (trial.trial_id, trial.num_failures)
    if key in _ERROR_LINES:
        return _ERROR_LINES[key]
    line = error_line(trial.error_file)
    if line == NO_MESSAGE:
        text = trial_file(trial, ERROR_FILE)
        line = error_line_of(text.decode(errors="replace")) if text is not None else line
    _ERROR_LINES[key] = line
    return line


def _who(trial, points: tuple[str, ...]) -> str:
    """How a console line names a trial: its point, or its pack and how many points it holds."""
    label = trial_label(trial.config)
    return f"point {label}" if points == (label,) else f"trial {label} ({len(points)} points)"


def trial_states(trials, ledger: Ledger) -> dict[str, TrialState]:
    """point_id -> what the ledger needs of it, from the Tune trial of its pack (whose last
    report carries each of its points' last report)."""
    out = {}
    for t in trials:
        last = {p["point_id"]: p for p in point_reports(t.last_result or {})}
        error = trial_error_line(t) if t.status == TUNE_ERROR else ""
        for pid in ledger.points_of(t.config):
            out[pid] = TrialState(t.status, last.get(pid, {}), t.trial_id, error)
    return out


class LedgerCallback(Callback):
    def __init__(self, run: RunDir, stalls: StallWatch | None = None, nodes: NodeWatch | None = None):
        self.run, self.stalls, self.nodes = run, stalls, nodes

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.run = self.stalls = self.nodes = None  # a callback Tune restored from its state: the engine replaces it

    def setup(self, **info):
        self.ledger = Ledger.open(self.run)
        self.last_progress = 0.0

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.stalls is not None:
            self.stalls.started(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.ledger.ingest(result)
        if self.stalls is not None:
            self.stalls.reported(trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.stalls is not None:
            self.stalls.ended(trial)
        if trial.checkpoint is not None and self._keep_files(trial):
            # Its checkpoints are emptied once the tables record every point of it finished.
            self.ledger.finished_trials[trial.trial_id] = (str(trial.path), self.ledger.points_of(trial.config))
        self.ledger.dirty = True
        self._flush_if_due(trials)

    def _keep_files(self, trial) -> bool:
        """Write the kept files of a trial's ok points from its last checkpoint, before Tune ends the
        trial (Ray 2.60's stop_trial calls on_trial_complete while the trial is still RUNNING: no
        table can record its points finished before this returns). False if any could not be kept:
        the checkpoint then stays, for `gansweep resume` to keep them from."""
        point_ids = self.ledger.points_of(trial.config)
        ok = [p["point_id"] for p in point_reports(trial.last_result or {}) if p.get("outcome") == OK]
        try:
            with trial.checkpoint.as_directory() as d:
                samples = checkpoint_samples(Path(d), point_ids)
                kept = [self.ledger.save_samples(pid, s) for pid, s in samples.items()]
                if self.run.keeps_weights:
                    kept += [self.ledger.save_weights(pid, Path(d) / WEIGHTS_DIR / f"{pid}.pt") for pid in ok]
        except (OSError, ValueError) as e:  # ValueError: a damaged samples file
            log.warning("could not read the checkpoint of %s: %s", _who(trial, point_ids), e)
            return False
        # A run in object storage: the files go up now, before Tune records the trial finished in its
        # own state (which it copies to the store by itself): a driver killed before the next table push
        # left a bucket whose Tune state said TERMINATED and that lacked the point's samples.
        self.run.sync([p for pid in point_ids for p in self.run.kept_paths(pid)])
        return all(kept) and all(pid in samples or pid in self.ledger.finished_before for pid in ok)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._failure(trial, "retrying from its last checkpoint")
        if self.stalls is not None:
            self.stalls.started(trial)  # its retry starts the clock again

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.stalls is not None:
            self.stalls.ended(trial)
        self._failure(trial, f"its points are `error`; `gansweep resume {self.run.path}` retries them "
                             "(--restart-errored: from scratch)")
        self.ledger.dirty = True
        self._flush_if_due(trials)

    def _stop_stalled(self, trial, silent: float, limit: float) -> None:
        """Kill a stalled trial's worker: Tune counts a failure and retries it from its checkpoint."""
        import ray

        points = self.ledger.points_of(trial.config)
        self.stalls.stalls += 1
        self.stalls.started(trial)  # one kill per stall: the retry gets a new limit's worth of time
        actor = trial_actor(trial)
        log.warning("%s stalled: nothing reported for %.0fs (limit %.0fs); its worker is stopped and Tune "
                    "retries it from its last checkpoint", _who(trial, points), silent, limit)
        record_failure(self.run.path / FAILURES_LOG, trial, points, f"stalled: nothing reported for {silent:.0f}s")
        if actor is not None:
            ray.kill(actor, no_restart=True)

    def _stop_idle(self, idle: float) -> None:
        """No trial could start for the idle limit: stop cleanly, saying what they ask for and what the
        cluster has (sweep/runner/stalls.py)."""
        import ray

        asks = self.run.manifest["runtime"]
        has = ray.cluster_resources() if ray.is_initialized() else {}
        log.error("no trial has run for %.0fs while points wait to train: each trial asks for %g CPU / %g GPU, the "
                  "cluster has %g CPU / %g GPU in all", idle, asks["cpus_per_trial"], asks["gpus_per_trial"],
                  has.get("CPU", 0), has.get("GPU", 0))
        STOP.fault(f"no trial could start for {idle:.0f}s", EXIT_IDLE)

    def _failure(self, trial, then: str) -> None:
        """One line on the console per failed attempt; its traceback goes to RUN_DIR/failures.log."""
        points = self.ledger.points_of(trial.config)
        allowed = int(self.run.manifest["runtime"].get("max_failures", 0)) + 1
        what = trial_error_line(trial)
        who = _who(trial, points)
        if is_disk_full(what):  # retrying cannot help: stop as a signal would, keep what is recorded
            stop_for_full_disk(self.run.tune_path)
            then = "the sweep stops"
        elif (fault := store_fault(what)) is not None:  # nor can it while the storage is out of reach
            stop_for_storage(self.run.tune_path, fault)
            what, then = f"storage unreachable ({fault})", "the sweep stops"
        log.warning("%s failed, attempt %d of %d: %s; %s", who, trial.num_failures, allowed, what, then)
        record_failure(self.run.path / FAILURES_LOG, trial, points, what)

    def on_step_end(self, iteration, trials, **info):
        if self.ledger.disk_full:
            stop_for_full_disk(self.run.path)
        down = self.run.store_down_since
        if down is not None and time.time() - down >= STORE_DOWN_S:  # the record could not be pushed for long
            stop_for_storage(self.run.store.uri, self.run.store_fault)
        if self.stalls is not None and not STOP.requested:
            for trial, silent, limit in self.stalls.overdue(trials):
                self._stop_stalled(trial, silent, limit)
            idle = self.stalls.idle(trials)
            if idle is not None:
                self._stop_idle(idle)
        if self.nodes is not None:
            self.nodes.check()
        STOP.forward_to_tune()  # a signal (or a full disk) arrived: Tune stops after this step
        self._flush_if_due(trials)
        now = time.time()
        if now - self.last_progress >= PROGRESS_EVERY_S and log.isEnabledFor(logging.INFO):
            self.last_progress = now
            log.info("%s", self.ledger.progress_line(trial_states(trials, self.ledger)))

    def _flush_if_due(self, trials) -> None:
        # Tune calls on_step_end many times a second: gather the trials' states only to write
        if self.ledger.flush_due:
            self.ledger.flush(trial_states(trials, self.ledger), final=False)

    def on_experiment_end(self, trials, **info):
        # trials that finished in an earlier session (a killed driver never emptied theirs)
        for t in trials:
            if t.status == TUNE_TERMINATED:
                self.ledger.finished_trials.setdefault(t.trial_id, (str(t.path), self.ledger.points_of(t.config)))
        states = trial_states(trials, self.ledger)
        self.ledger.flush(states)
        log.info("%s", self.ledger.progress_line(states))
