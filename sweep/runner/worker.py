"""The worker side of a sweep: the Tune trainable, its per-process caches, its checkpoints.

The trainable is thin (restore, train the pack, report; sweep/train/ does the work).
A Tune trial is a pack of grid points (sweep/plan/packs.py).
MNIST and the classifier reach the workers once, through the object store
(`make_trainable` wraps them with `tune.with_parameters`). Every scored epoch
reports its metrics with a checkpoint, so a retried or resumed trial continues
from its last epoch instead of restarting (but a quick stack's last waits for the next report,
STACK_CHECKPOINT_EVERY_S).

Imports Ray: import it only after sweep/runner/cluster.py has set Ray's environment.
"""
from __future__ import annotations

import functools
import json
import os
import pickle
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from ray import tune
from ray.tune import Checkpoint

from models.classifier import DIGIT_THRESHOLD, MnistCNN
from models.metrics import FeatureStats, Scorer
from models.registry import load_plugins, plugin_sources
from sweep.plan.config import TrialConfig
from sweep.plan.packs import stacks_of, trial_label
from sweep.record.rows import epoch_report
from sweep.record.schema import OK, PACK, PACK_POINTS, RESTORED_HISTORY
from sweep.runner.checkpoint import load_checkpoint, save_checkpoint
from sweep.train.loop import start_stack, train_stack
from sweep.train.point import NetPool, finished_status, prepare_data

# A stack that ends while other stacks of its pack follow is not reported when the pack's last
# checkpoint is younger than this: the next report (with a checkpoint) carries its points' final
# reports and states, and a trial killed before that retrains at most this much (its points are
# `pending` in the tables until the trial ends). bench --scale's packs of three stacks of a few ms
# each saved a checkpoint per stack, and then reported each: a report is a round trip to the
# driver that the worker waits for.
STACK_CHECKPOINT_EVERY_S = 10.0
# Per worker process, built once and reused by every trial the (reused) actor runs.
_SCORERS: dict = {}
_DATASETS: dict = {}
_UNPICKLED: dict = {}  # Once key -> its value


class Once:
    """A `tune.with_parameters` value that a worker unpickles once, not once per trial.

    with_parameters fetches and decodes every parameter from the object store for every
    trial a reused actor runs: the pack table of the paper plan (7,168 points' configs)
    took 15% of a worker's CPU in `gansweep bench --scale`. Its value must be read-only."""

    def __init__(self, value):
        self.key, self.value = uuid.uuid4().hex, value

    def __reduce__(self):
        return _unpickle_once, (self.key, pickle.dumps(self.value, protocol=pickle.HIGHEST_PROTOCOL))


def _unpickle_once(key: str, blob: bytes):
    if key not in _UNPICKLED:
        _UNPICKLED[key] = pickle.loads(blob)
    return _UNPICKLED[key]


def _dataset(images, n_train: int, device: str) -> torch.Tensor:
    """MNIST in model space on the trial's device, converted once per worker and size."""
    key = (n_train, device)
    if key not in _DATASETS:
        _DATASETS.clear()  # one size at a time: a preset uses one n_train
        # a private, writable copy of the read-only object-store array
        _DATASETS[key] = prepare_data(torch.from_numpy(images[:n_train].copy()), n_train, device)
    return _DATASETS[key]


def _scorer(device: str, clf_state: dict, clf_sha: str, ref_mean, ref_cov):
    key = (device, clf_sha)
    if key not in _SCORERS:
        clf = MnistCNN()
        clf.load_state_dict(clf_state)
        _SCORERS[key] = Scorer(clf.to(device), FeatureStats(ref_mean, ref_cov), clf_sha, DIGIT_THRESHOLD)
    return _SCORERS[key]


def pack_of(config: dict, packs: dict[str, list[dict]]) -> tuple[str, list[TrialConfig]]:
    """(label, points) of a Tune trial's config (sweep/plan/packs.py trial_label)."""
    if "point" in config:  # a run started before packs
        return trial_label(config), [TrialConfig(**config["point"])]
    return config["pack"], [TrialConfig(**p) for p in packs[config["pack"]]]


# --------------------------------------------------------------------------- the trainable
def trainable(config: dict, *, images, clf_state, clf_sha, ref_mean, ref_cov, threads, device,
              finished: dict, packs: dict, keep_weights: bool, plugins: list, seeds: dict):
    """One pack of grid points inside a Tune worker: config = {"pack": pack_id}.

    packs: pack_id -> its points' TrialConfig fields (sweep/plan/packs.py), passed once.
    plugins: the driver's plugin sources (models/registry.py), loaded here before any
    config is rebuilt, so a plugin family trains on a worker as on the driver.
    finished: point_id -> final report of the points RUN_DIR's tables already record
    as finished (filled on resume). Tune's experiment state is saved periodically, so
    after a driver crash it can hold an older checkpoint of a pack that had in fact
    finished; such points report their recorded result instead of training again.
    seeds: pack_id -> a checkpoint folder to start from when Tune has none for the trial (an
    experiment rebuilt from the tables, sweep/runner/rebuild.py).

    Every report carries the points that scored or diverged that epoch (PACK_POINTS);
    the last one carries every point of the pack, so Tune's last result of a finished
    trial holds each point's final report.
    """
    load_plugins(plugins)
    label, cfgs = pack_of(config, packs)
    torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("this trial was given a GPU fraction but CUDA is not available")
    trial = PackTrial(label, cfgs, device, finished, seeds.get(label), keep_weights)
    todo, restored = trial.restore()
    if not todo:  # every point is recorded finished (its files kept): report its result again
        trial.report([p.point_id for p in cfgs])
        return
    # Points restored finished (the driver died before Tune ended the trial, or a rebuilt experiment's
    # seed) train nothing: train() reports them once more with a checkpoint holding their samples and
    # kept weights, which the driver keeps their files from (a seed is no checkpoint of Tune's).
    trial.train(todo, restored, _scorer(device, clf_state, clf_sha, ref_mean, ref_cov),
                _dataset(images, todo[0].n_train, device), _net_pool())


def node_name() -> str:
    """Where this worker trains, for the results' node column: the Slurm node's name in a Slurm job
    (a Ray node's processes inherit its srun task's SLURMD_NODENAME), else the Ray node's host name
    and the first 8 characters of its node id (two Ray nodes may share a host)."""
    import socket

    import ray

    if os.environ.get("SLURMD_NODENAME"):
        return os.environ["SLURMD_NODENAME"]
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return f"{socket.gethostname()}:{node_id[:8]}" if node_id else socket.gethostname()


@functools.cache
def _net_pool():
    """One NetPool per worker, made by its first trial: a reused worker's next trials redraw its
    finished points' nets."""
    return NetPool()


class PackTrial:
    """A Tune trial's pack: what each point last reported, and its reports and checkpoints to Tune."""

    def __init__(self, label: str, cfgs: list[TrialConfig], device: str, finished: dict, seed: str | None = None,
                 keep_weights: bool = False):
        self.label, self.cfgs, self.device, self.seed = label, cfgs, device, seed
        self.node = node_name()
        self.keep_weights = keep_weights
        self.started_at = time.time()  # wall clock, for the harness-overhead accounting of `gansweep bench`
        self.latest: dict[str, dict] = {p.point_id: finished[p.point_id] for p in cfgs if p.point_id in finished}
        self.history_of: dict[str, list[dict]] = {}
        # point_id -> final G weights of the points restored finished: every later checkpoint of the
        # pack carries them, since the driver keeps a point's weights from the trial's last checkpoint
        self.kept_weights: dict[str, dict] = {}

    def restore(self) -> tuple[list[TrialConfig], dict[str, dict]]:
        """(the points still to train, point_id -> the state its checkpoint restores).

        A point restored finished `ok` keeps the G weights its checkpoint holds (with keep_weights). A
        finished point's state holds no weights: where its checkpoint lacks them too (a checkpoint that
        gansweep up to 2026-12 wrote when it re-reported a pack restored finished), the point trains
        again from scratch, so that the run keeps the weights it was asked to keep."""
        todo = [p for p in self.cfgs if p.point_id not in self.latest]
        ckpt = tune.get_checkpoint() if todo else None  # a finished pack's checkpoint is emptied
        if ckpt is None and todo and self.seed is not None:  # a rebuilt experiment: the old checkpoint
            ckpt = Checkpoint.from_directory(self.seed)
        restored, weights = ({}, {}) if ckpt is None else load_checkpoint(ckpt, self.label, self.device)
        if self.keep_weights:
            for p in todo:
                st = restored.get(p.point_id)
                if st is not None and finished_status(st, p)[0] == OK and p.point_id not in weights:
                    del restored[p.point_id]
            self.kept_weights = {pid: w for pid, w in weights.items() if pid in restored}
        # The first report after a restore carries each point's restored history (see
        # sweep/record/recovery.py restored_curve_rows), so the tables can fill a lost epoch from it.
        todo_ids = {p.point_id for p in todo}
        self.history_of = {pid: [epoch_report(h) for h in st["history"]] for pid, st in restored.items()
                           if pid in todo_ids and st["history"]}
        for pid, reports in self.history_of.items():
            self.latest[pid] = {**reports[-1], "point_id": pid}
        return todo, restored

    def report(self, point_ids, *, checkpoint: dict | None = None, weights: dict | None = None) -> None:
        """One Tune report of these points' latest epochs, with a checkpoint of the pack if given."""
        points = []
        for pid in point_ids:
            rep = dict(self.latest[pid])
            if pid in self.history_of:
                rep[RESTORED_HISTORY] = json.dumps(self.history_of.pop(pid))  # a string: loggers store it as is
            points.append(rep)
        out = {"epoch": max(int(p["epoch"]) for p in points), PACK: self.label, PACK_POINTS: json.dumps(points),
               "device": self.device, "node": self.node, "started_at": self.started_at, "reported_at": time.time()}
        if checkpoint is None:
            tune.report(out)
            return
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(checkpoint, Path(d), weights or {})
            tune.report(out, checkpoint=Checkpoint.from_directory(d))

    def train(self, todo: list[TrialConfig], restored: dict, scorer, data: torch.Tensor, pool=None) -> None:
        """Train the pack's stacks one after another (sweep/plan/packs.py). Every checkpoint holds
        every point: the finished stacks' final states (no weights; their samples and, with
        keep_weights, their G weights carried along, since the callback reads the last one)
        and the current stack's full states. Every scored epoch reports with one, except a stack's
        last when more stacks follow and the last checkpoint is younger than
        STACK_CHECKPOINT_EVERY_S: the next report carries its points. A finished stack's nets go
        back to the pool, if given (sweep/train/point.py NetPool)."""
        final_states: dict[str, dict] = {}
        final_weights: dict[str, dict] = dict(self.kept_weights)  # {} unless self.keep_weights
        sent_all = False
        waiting: list[str] = []  # finished points whose final report rides on the next report
        stacks = stacks_of(todo)
        last_checkpoint = time.monotonic()
        for n, stack in enumerate(stacks):
            runs = start_stack(stack, data, self.device, [restored.get(p.point_id) for p in stack], pool)

            def on_epoch(reported: dict[int, dict], make_checkpoint, stack=stack, runs=runs,
                         last_stack=n == len(stacks) - 1) -> None:
                nonlocal sent_all, last_checkpoint, waiting
                for i, metrics in reported.items():
                    self.latest[stack[i].point_id] = {**epoch_report(metrics), "point_id": stack[i].point_id}
                done = all(r.done for r in runs)
                if done and self.keep_weights:  # a point restored finished has no G here: it keeps its kept weights
                    final_weights.update((p.point_id, r.generator_weights()) for p, r in zip(stack, runs)
                                         if r.status == OK and p.point_id not in self.kept_weights)
                sent_all = last_stack and done
                ids = [p.point_id for p in self.cfgs] if sent_all else waiting + [stack[i].point_id for i in reported]
                if done and not last_stack and time.monotonic() - last_checkpoint < STACK_CHECKPOINT_EVERY_S:
                    waiting = ids  # the next report, with a checkpoint, carries them
                    return
                waiting = []
                states = dict(zip((p.point_id for p in stack), make_checkpoint()))
                self.report(ids, checkpoint={**final_states, **states}, weights=final_weights)
                last_checkpoint = time.monotonic()

            if not all(r.done for r in runs):  # else restored finished
                train_stack(runs, scorer, on_epoch)
            final_states.update((p.point_id, r.checkpoint()) for p, r in zip(stack, runs))
            if pool is not None:
                for r in runs:
                    r.release_nets(pool)
        if not sent_all:  # the last stacks were restored finished: the final report of every point
            self.report([p.point_id for p in self.cfgs], checkpoint=final_states, weights=final_weights)


def make_trainable(train_images: np.ndarray, clf, clf_sha: str, ref, threads: int, device: str,
                   finished: dict, cpus: float, gpus: float, packs: dict, keep_weights: bool,
                   seeds: dict | None = None):
    """The trainable with MNIST, the classifier and the packs put in the object store once,
    and its resources. train_images: numpy, not a tensor (the object store hands numpy
    arrays to workers without a copy)."""
    # numpy arrays reach a worker without a copy; the rest is decoded once per worker (Once)
    fn = tune.with_parameters(trainable, images=train_images, clf_state=Once(clf.state_dict()), clf_sha=clf_sha,
                              ref_mean=ref.mean, ref_cov=ref.cov, threads=threads, device=device,
                              finished=Once(finished), packs=Once(packs), keep_weights=keep_weights,
                              plugins=Once(plugin_sources()), seeds=Once(seeds or {}))
    return tune.with_resources(fn, {"cpu": cpus, "gpu": gpus})
