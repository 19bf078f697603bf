"""`gansweep` with the driver killed at one chosen moment, for the tests of a finished point's files.

    python tests/fault_driver.py samples run --preset p ...   # like `gansweep run --preset p ...`

The driver SIGKILLs itself when the ledger is about to keep the first finished trial's samples
(`samples`) or, its samples kept, its G weights (`weights`): after its last report was recorded,
before its files are all written. So that a resume restores that trial from its final checkpoint
(what a kill at this moment under load can leave, ray 2.60), Tune's experiment state is saved,
naming that checkpoint, just before Tune ends a trial: every run killed here is killed the same way.
Test-only: it patches Ray's TuneController (private API) and gansweep's Ledger in this process.
"""
from __future__ import annotations

import os
import signal
import sys


def _kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def install(where: str) -> None:
    """The patches, applied once Ray's environment is set and Ray started (cluster.ray_init)."""
    import sweep.runner.cluster as cluster
    from sweep.record.ledger import Ledger

    ray_init = cluster.ray_init

    def ray_init_then_patch(rt):
        out = ray_init(rt)
        from ray.tune.execution.tune_controller import TuneController

        own_stop = TuneController.stop_trial

        def stop_trial(self, trial):
            if trial.status == "RUNNING":  # its last report and checkpoint are in; on_trial_complete follows
                self.checkpoint(force=True, wait=True)
            return own_stop(self, trial)

        TuneController.stop_trial = stop_trial
        return out

    cluster.ray_init = ray_init_then_patch
    if where == "samples":
        Ledger.save_samples = _kill
    elif where == "weights":
        Ledger.save_weights = _kill
    else:
        raise SystemExit(f"fault_driver: unknown moment {where!r} (samples, weights)")


if __name__ == "__main__":
    install(sys.argv[1])
    from sweep.cli import main

    sys.exit(main(sys.argv[2:]))
