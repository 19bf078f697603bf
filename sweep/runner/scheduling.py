"""Which Tune trial starts next and on which worker: every slot busy, even when trials are shorter than a worker's start.

Tune hands an idle reused actor to a pending trial that already has an actor starting
for it, and removes that starting actor: its FIFO scheduler names the first pending
trial on every step, and any idle actor takes an arbitrary pending trial. When trials
finish faster than a Ray worker starts (seconds: imports, MNIST and the classifier from
the object store), the one actor that runs keeps taking the trials the others were
started for, and each new worker is killed as soon as it is up, again and again:
measured, one slot of two ran all 512 trials of `gansweep bench --scale` while 59
workers were started and killed (wall 318 s against 218 s when both slots ran), and
tests/test_reliability.py shows it with a worker that starts 3 s late.

So, on a local Ray instance (whose size is known), at most one live trial per slot:
an idle actor then always finds a trial that no starting actor waits for. On a cluster
(`--address`, possibly autoscaling) Tune's default stays, unless --max-concurrent says.

Imports Ray: import it only after sweep/runner/cluster.py has set Ray's environment.
"""
from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from sweep.runner.ray_private import forget_live_trials


class EverySlotScheduler(FIFOScheduler):
    """FIFO order without taking a trial from the actor being started for it."""

    def choose_trial_to_run(self, tune_controller):
        # Pending trials start in order through Tune's own queue, each on an idle actor if one
        # is cached, else on a new one; paused trials (a gansweep run never pauses) only here.
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PAUSED:
                return trial
        return None


class SlotGenerator(BasicVariantGenerator):
    """Tune's grid generator, at most max_concurrent live trials (0: no limit). A resumed experiment
    restores the generator's saved state, limit included: the limit of this session is kept, and
    the trials it counted live are forgotten.

    The generator's state and the experiment state are saved in two files and copied to storage
    one after the other, so a driver killed in between leaves a generator that counts live a trial
    the experiment records finished. Nothing completes that trial again: at the limit, the
    generator handed out no new trial and the resumed sweep waited forever (a run in S3 with
    --max-concurrent 1: running 0, pending 4, for 300 s, tests/test_storage.py). Tune runs every
    restored unfinished trial again in any case; the limit counts the trials made from here on."""

    def set_state(self, state):
        limit = self.max_concurrent
        super().set_state(state)
        self.max_concurrent = limit
        forget_live_trials(self)


def live_trial_limit(max_concurrent: int, slots: int, cluster: bool) -> int:
    """--max-concurrent if given; else one live trial per slot on a local instance, none on a cluster."""
    return max_concurrent or (0 if cluster else slots)


def tune_choices(max_concurrent: int, slots: int, cluster: bool) -> dict:
    """The TuneConfig fields of this module: the generator and the scheduler."""
    return {"search_alg": SlotGenerator(max_concurrent=live_trial_limit(max_concurrent, slots, cluster)),
            "scheduler": EverySlotScheduler()}
