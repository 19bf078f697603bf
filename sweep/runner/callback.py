"""The Tune callback of a sweep: forwards Tune's hooks to the run's ledger, nothing more.

Tune pickles the callback into its experiment state and unpickles it on
`Tuner.restore`, so it holds nothing: the run directory and the session's
options come from `configure`, set by sweep/runner/engine.py for this driver process
(a run directory copied elsewhere and resumed there must write there), and
`setup` rebuilds the ledger from that RUN_DIR.

Imports Ray: import it only after sweep/runner/cluster.py has set Ray's environment.
"""
from __future__ import annotations

import time
from pathlib import Path

from ray.tune import Callback

from sweep.record.ledger import Ledger, TrialState, error_line, point_reports
from sweep.record.schema import TUNE_ERROR, TUNE_TERMINATED
from sweep.runner.signals import STOP
from sweep.runner.worker import SAMPLES_DIR, SAMPLES_FILE, WEIGHTS_DIR

PROGRESS_EVERY_S = 10.0
_OPTIONS: dict = {"run_dir": None, "quiet": False}


def configure(run_dir: Path, quiet: bool) -> None:
    """This driver session's run directory and options."""
    _OPTIONS.update(run_dir=Path(run_dir), quiet=quiet)


def trial_states(trials, ledger: Ledger) -> dict[str, TrialState]:
    """point_id -> what the ledger needs of it, from the Tune trial of its pack (whose last
    report carries each of its points' last report)."""
    out = {}
    for t in trials:
        last = {p["point_id"]: p for p in point_reports(t.last_result or {})}
        error = error_line(t.error_file) if t.status == TUNE_ERROR else ""
        for pid in ledger.points_of(t.config):
            out[pid] = TrialState(t.status, last.get(pid, {}), t.trial_id, error)
    return out


class LedgerCallback(Callback):
    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        pass

    def setup(self, **info):
        self.ledger = Ledger.open(_OPTIONS["run_dir"])
        self.quiet = _OPTIONS["quiet"]
        self.last_progress = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.ledger.ingest(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.checkpoint is not None:
            point_ids = self.ledger.points_of(trial.config)
            try:
                with trial.checkpoint.as_directory() as d:
                    for pid in point_ids:
                        src = Path(d) / SAMPLES_DIR / f"{pid}.npy"
                        if not src.exists() and len(point_ids) == 1:  # a checkpoint from before packs
                            src = Path(d) / SAMPLES_FILE
                        self.ledger.save_samples(pid, src)
                        self.ledger.save_weights(pid, Path(d) / WEIGHTS_DIR / f"{pid}.pt")
            except OSError:
                pass  # samples are a convenience; the ledger warns about its own failures
            # Its checkpoints are emptied once the tables record every point of it finished.
            self.ledger.finished_trials[trial.trial_id] = (str(trial.path), point_ids)
        self.ledger.dirty = True
        self._flush_if_due(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ledger.dirty = True
        self._flush_if_due(trials)

    def on_step_end(self, iteration, trials, **info):
        STOP.forward_to_tune()  # a signal arrived: Tune stops after this step
        self._flush_if_due(trials)
        now = time.time()
        if not self.quiet and now - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = now
            print(self.ledger.progress_line(trial_states(trials, self.ledger)), flush=True)

    def _flush_if_due(self, trials) -> None:
        # Tune calls on_step_end many times a second: gather the trials' states only to write
        if self.ledger.flush_due:
            self.ledger.flush(trial_states(trials, self.ledger))

    def on_experiment_end(self, trials, **info):
        # trials that finished in an earlier session (a killed driver never emptied theirs)
        for t in trials:
            if t.status == TUNE_TERMINATED:
                self.ledger.finished_trials.setdefault(t.trial_id, (str(t.path), self.ledger.points_of(t.config)))
        states = trial_states(trials, self.ledger)
        self.ledger.flush(states)
        if not self.quiet:
            print(self.ledger.progress_line(states), flush=True)
