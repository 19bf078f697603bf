"""The Tune callback of a sweep: forwards Tune's hooks to the run's ledger, nothing more.

Tune pickles the callback into its experiment state and unpickles it on
`Tuner.restore`, so it holds only the run directory; `setup` rebuilds the
ledger from RUN_DIR, and the driver's session options (quiet) come from
`configure`, set by sweep/engine.py for this process, not from the pickle.

Imports Ray: import it only after sweep/cluster.py has set Ray's environment.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ray.tune import Callback

from sweep.config import TrialConfig
from sweep.ledger import Ledger, TrialState
from sweep.schema import TUNE_ERROR
from sweep.signals import STOP
from sweep.worker import SAMPLES_FILE

PROGRESS_EVERY_S = 10.0
_OPTIONS = {"quiet": False}


def configure(quiet: bool) -> None:
    """This driver session's options (a restored callback keeps its first session's)."""
    _OPTIONS["quiet"] = quiet


def _error_line(trial) -> str:
    path = trial.error_file
    if not path or not os.path.exists(path):
        return "error (no message recorded)"
    lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    return (lines[-1] if lines else "error")[:300]


def trial_states(trials) -> dict[str, TrialState]:
    """point_id -> what the ledger needs of each of Tune's trials."""
    return {TrialConfig(**t.config["point"]).point_id:
            TrialState(t.status, t.last_result or {}, t.trial_id, _error_line(t) if t.status == TUNE_ERROR else "")
            for t in trials}


class LedgerCallback(Callback):
    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    def __getstate__(self):
        return {"run_dir": self.run_dir}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def setup(self, **info):
        self.ledger = Ledger.open(Path(self.run_dir))
        self.quiet = _OPTIONS["quiet"]
        self.last_progress = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.ledger.ingest(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.checkpoint is not None:
            try:
                with trial.checkpoint.as_directory() as d:
                    self.ledger.save_samples(TrialConfig(**trial.config["point"]).point_id,
                                             Path(d) / SAMPLES_FILE)
            except OSError:
                pass  # samples are a convenience; the ledger warns about its own failures
        self.ledger.dirty = True
        self.ledger.maybe_flush(trial_states(trials))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ledger.dirty = True
        self.ledger.maybe_flush(trial_states(trials))

    def on_step_end(self, iteration, trials, **info):
        STOP.forward_to_tune()  # a signal arrived: Tune stops after this step
        self.ledger.maybe_flush(trial_states(trials))
        now = time.time()
        if not self.quiet and now - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = now
            print(self.ledger.progress_line(trial_states(trials)), flush=True)

    def on_experiment_end(self, trials, **info):
        states = trial_states(trials)
        self.ledger.flush(states)
        if not self.quiet:
            print(self.ledger.progress_line(states), flush=True)
