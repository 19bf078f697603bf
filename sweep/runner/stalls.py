"""Stalled trials: a trial that reports nothing for too long is stopped and retried from its checkpoint.

A stuck NFS read, a deadlocked data loader or a wedged GPU driver can stop a worker without
killing it; Tune would wait for it forever. The Tune callback (sweep/runner/callback.py) tells
the watch when trials start, report and end, and asks it at every step which are overdue:

    limit = --stall-timeout SECONDS, or by default
            max(STALL_FLOOR_S, STALL_MULTIPLE x the trial's expected epoch time), the expected
            time being its epoch's FLOPs (sweep/plan/grid.py) at the slowest rate any trial of
            this session has shown; before any epoch is measured, UNMEASURED_FLOOR_S.

An overdue trial's worker is killed; Tune counts that as one of the trial's failures and
retries it from its last checkpoint (--max-failures). The session record counts stalls.

A sweep can also stall with no trial running at all: trials pending that no node can place (each
asks for a GPU the cluster lacks, say: Tune waits for it forever) or whose start hangs. When trials
are pending and none has run for IDLE_S seconds (--stall-timeout, when given, instead; 0 turns both
watches off), the sweep stops the way a signal stops it, naming what the trials ask for and what
the cluster has, and exits with EXIT_IDLE: `gansweep resume` carries on once the cluster can run them.
"""
from __future__ import annotations

import time

from sweep.plan.grid import estimate_flops

STALL_MULTIPLE = 10.0  # times the expected epoch time
STALL_FLOOR_S = 300.0  # never sooner than this
UNMEASURED_FLOOR_S = 1800.0  # before this session has timed any epoch
IDLE_S = 600.0  # trials pending and none running for this long: the sweep stops (a worker's start is seconds)


class StallWatch:
    """When each running trial of a session last showed life, and the slowest rate seen."""

    def __init__(self, packs, stall_timeout: float | None = None):
        """packs: the run's packs (their epochs' FLOPs); stall_timeout: seconds, 0 off, None: by rate."""
        self.epoch_flops = {p.pack_id: sum(estimate_flops(t) / t.epochs for t in p.points) for p in packs}
        self.timeout = stall_timeout
        self.last: dict[str, tuple[float, int]] = {}  # trial_id -> (time of its last sign of life, its epoch)
        self.slowest_rate: float | None = None  # FLOP/s, the lowest measured over a trial's epochs
        self.stalls = 0
        self.idle_since: float | None = None  # since when trials are pending and none runs

    def started(self, trial) -> None:
        self.last[trial.trial_id] = (time.time(), self.last.get(trial.trial_id, (0.0, 0))[1])

    def reported(self, trial, result: dict) -> None:
        now, epoch = time.time(), int(result.get("epoch") or 0)
        then, before = self.last.get(trial.trial_id, (now, epoch))
        flops = self.epoch_flops.get(trial.config.get("pack"), 0.0) * max(0, epoch - before)
        if flops > 0 and now > then:
            rate = flops / (now - then)
            self.slowest_rate = rate if self.slowest_rate is None else min(self.slowest_rate, rate)
        self.last[trial.trial_id] = (now, epoch)

    def ended(self, trial) -> None:
        self.last.pop(trial.trial_id, None)

    def limit(self, trial) -> float | None:
        """Seconds of silence after which this trial counts as stalled (None: never)."""
        if self.timeout is not None:
            return self.timeout or None
        if self.slowest_rate is None:
            return UNMEASURED_FLOOR_S
        expected = self.epoch_flops.get(trial.config.get("pack"), 0.0) / self.slowest_rate
        return max(STALL_FLOOR_S, STALL_MULTIPLE * expected)

    def idle(self, trials) -> float | None:
        """Seconds that trials have been pending with none running, once past the idle limit; else None."""
        statuses = [t.status for t in trials]
        if "RUNNING" in statuses or "PENDING" not in statuses:
            self.idle_since = None
            return None
        now = time.time()
        self.idle_since = self.idle_since or now
        limit = IDLE_S if self.timeout is None else self.timeout
        return now - self.idle_since if limit and now - self.idle_since > limit else None

    def overdue(self, trials) -> list[tuple[object, float, float]]:
        """(trial, seconds silent, its limit) of the running trials past their limit."""
        now, out = time.time(), []
        for t in trials:
            if t.status != "RUNNING" or t.trial_id not in self.last:
                continue
            limit = self.limit(t)
            silent = now - self.last[t.trial_id][0]
            if limit is not None and silent > limit:
                out.append((t, silent, limit))
        return out
