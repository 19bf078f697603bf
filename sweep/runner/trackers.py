"""Experiment trackers, opt-in: every grid point as a W&B or MLflow run, logged by Tune callbacks in the driver.

    pip install -e ".[mlflow]"   # or ".[wandb]"
    gansweep run --preset mini --tracker mlflow    # MLFLOW_TRACKING_URI, else RUN_DIR/mlruns
    gansweep run --preset mini --tracker wandb     # WANDB_PROJECT (default gansweep), WANDB_MODE

A tracker run is one Tune trial. With packs of one point (the default on a CPU, and on a
GPU up to 512 points) that is one grid point: the run is named by its point_id, tagged
with point_id, family, model and every grid axis, its params are the point's whole
config, and its metrics are the point's scores and losses per epoch (step = epoch). A
pack of several points is one run named by the pack, tagged with what its points share,
and its metrics are named <point_id>/<metric> (step = Tune's iteration).

Tune's TensorBoard files (RUN_DIR/tune/<trial>/events.*) get the same metrics,
with or without a tracker (`tensorboard_callback`). A point's epoch is logged once: a
pack's last report repeats every point's final report (for the ledger), and would
otherwise add a point to each curve of its earlier stacks.

The results tables in RUN_DIR stay the record; a tracker is a view for filtering runs.
The runs of a sweep share its name: the MLflow experiment, or the W&B group.

Each callback is handed the session's RunDir (its packs name and tag the tracker runs); Tune
pickles callbacks into its experiment state without it, and a resumed tuner gets new ones
(sweep/runner/engine.py), as for sweep/runner/callback.py.

Ray and the trackers are imported inside the functions, after sweep/runner/cluster.py has set Ray's
environment.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time

from sweep.errors import UserError
from sweep.plan.config import AXES, STUDY_AXES
from sweep.record.rows import point_reports
from sweep.record.schema import CURVE_KEYS
from sweep.runner.ray_private import sync_timeout, wandb_set_api_key

log = logging.getLogger("gansweep")

TRACKERS = ("wandb", "mlflow")  # --tracker choices; each is the pip extra that installs it


def check_tracker(name: str) -> None:
    """One line (exit 2) when the tracker's package is missing, before anything starts."""
    try:
        __import__(name)  # each tracker's module has its name
    except ImportError:
        raise UserError(f"--tracker {name}: {name} is not installed; pip install 'gansweep[{name}]'") from None


def point_tags(cfg) -> dict[str, str]:
    """What a tracker can filter a point by: its id, family, model and grid axes."""
    return {"point_id": cfg.point_id, "model": cfg.model, "seed": str(cfg.seed),
            **{a: str(getattr(cfg, a)) for a in (*AXES, *STUDY_AXES)}}


class RunView:
    """What the trackers read of a run: its packs' points (pack_id -> TrialConfigs). Not pickled
    with a callback into Tune's state: every session hands its callbacks a new one."""

    def __init__(self, run):
        self.points = {p.pack_id: list(p.points) for p in run.packs}
        self.name = run.name
        self.path = run.path
        self.logged: dict[str, set[tuple[str, int]]] = {}  # trial_id -> (point_id, epoch) logged

    def __getstate__(self):
        return {"name": self.name, "path": self.path, "points": {}, "logged": {}}


def run_view(view: RunView, pack_id: str) -> tuple[str, dict[str, str], dict]:
    """(run name, tags, params) of the tracker run of one Tune trial."""
    points = view.points[pack_id]
    if len(points) == 1:
        cfg = points[0]
        return cfg.point_id, point_tags(cfg), cfg.as_dict()
    tags = [point_tags(c) for c in points]
    shared = {k: v for k, v in tags[0].items() if all(t.get(k) == v for t in tags)}
    params = {k: v for k, v in points[0].as_dict().items() if all(c.as_dict()[k] == v for c in points)}
    return pack_id, {**shared, "pack": pack_id, "points": str(len(points))}, params


def result_metrics(view: RunView, trial, result: dict) -> list[tuple[int, dict[str, float]]]:
    """[(step, {metric: value})] of one Tune result of a trial: each point's finite scores and
    losses, for the point epochs not logged before."""
    names = [k for k in CURVE_KEYS if k not in ("epoch", "outcome")]
    pack_id = trial.config["pack"]
    single = len(view.points[pack_id]) == 1
    logged = view.logged.setdefault(trial.trial_id, set())
    out: list[tuple[int, dict[str, float]]] = []
    for rep in point_reports(result):
        if (rep["point_id"], int(rep["epoch"])) in logged:
            continue
        logged.add((rep["point_id"], int(rep["epoch"])))
        values = {k: float(rep[k]) for k in names
                  if isinstance(rep.get(k), (int, float)) and not isinstance(rep.get(k), bool)
                  and math.isfinite(rep[k])}
        if single:
            out.append((int(rep["epoch"]), values))
        else:
            out.append((int(result["training_iteration"]),
                        {f"{rep['point_id']}/{k}": v for k, v in values.items()}))
    return out


def tensorboard_callback(run):
    """A TensorBoard event file per Tune trial (RUN_DIR/tune/<trial>/events.out.tfevents.*), fed
    each point's scores and losses per epoch (as the trackers are) under Tune's tag names
    (ray/tune/<metric>), instead of the pack's report, whose point metrics Tune cannot see inside
    its JSON. Always on: `tensorboard --logdir RUN_DIR/tune` with the `tensorboard` extra.

    Written here, not by Tune's TBXLoggerCallback: that one starts a writer thread and a
    multiprocessing queue per trial and puts one event per scalar through them, which took a
    quarter of the driver's CPU in `gansweep bench --scale` (7,168 points, 512 trials). Here a
    point's epoch is one event holding all its scalars, written synchronously, flushed once a report."""
    from ray.tune.logger import LoggerCallback
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    view = RunView(run)

    class PointTensorBoard(LoggerCallback):
        _SAVED_FILE_TEMPLATES = ["events.out.tfevents.*"]

        def __init__(self):
            self.writers: dict = {}  # trial -> EventsWriter, from its start to its end

        def __getstate__(self):  # pickled into Tune's experiment state: no open files
            return {}

        def __setstate__(self, state):
            self.writers = {}

        def log_trial_start(self, trial):
            if trial in self.writers:
                self.writers.pop(trial).close()
            trial.init_local_path()
            self.writers[trial] = EventsWriter(os.path.join(trial.local_path, "events"))

        def log_trial_result(self, iteration, trial, result):
            if trial not in self.writers:
                self.log_trial_start(trial)
            writer, now = self.writers[trial], time.time()
            for step, metrics in result_metrics(view, trial, result):
                if metrics:
                    values = [Summary.Value(tag=f"ray/tune/{k}", simple_value=v) for k, v in metrics.items()]
                    writer.write_event(Event(wall_time=now, step=step, summary=Summary(value=values)))
            writer.flush()

        def log_trial_end(self, trial, failed: bool = False):
            if trial in self.writers:
                self.writers.pop(trial).close()

    return PointTensorBoard()


def make_tracker(name: str, run):
    """The Tune callback of `--tracker name` for a run (a RunDir)."""
    if name == "mlflow":
        return _mlflow_callback(RunView(run))
    return _wandb_callback(RunView(run))


def _mlflow_callback(view: RunView):
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class PointMLflow(MLflowLoggerCallback):
        """Ray's MLflow callback, with a run per point named and tagged as above."""

        def log_trial_start(self, trial):
            if trial in self._trial_runs:
                return
            name, tags, params = run_view(view, trial.config["pack"])
            run = self.mlflow_util.start_run(tags={**self.tags, **tags, "trial_name": str(trial)}, run_name=name)
            self._trial_runs[trial] = run.info.run_id
            self.mlflow_util.log_params(run_id=run.info.run_id, params_to_log=params)

        def log_trial_result(self, iteration, trial, result):
            if trial not in self._trial_runs:
                self.log_trial_start(trial)
            for step, metrics in result_metrics(view, trial, result):
                if metrics:
                    self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=metrics, step=step)

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:  # a file store beside the run's tables; MLflow keeps it in maintenance mode, behind this switch
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (view.path / "mlruns").resolve().as_uri()
    return PointMLflow(tracking_uri=uri, experiment_name=view.name, tags={"gansweep_run": view.name})


class _WandbWriter:
    """The W&B runs of one session, opened, fed and finished by one thread of the driver, in order."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._write, name="gansweep-wandb", daemon=True)
        self.thread.start()

    def put(self, op: str, key: str | None = None, arg=None) -> None:
        self.queue.put((op, key, arg))

    def close(self, timeout_s: float) -> None:
        """Finish every open run and wait (up to timeout_s) until W&B has written or uploaded them."""
        self.put("close")
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            log.warning(f"--tracker wandb: W&B was still writing after {timeout_s:.0f}s; its last runs may be "
                        "incomplete (`wandb sync` uploads offline runs)")

    def _write(self) -> None:
        import wandb

        # The driver's console is gansweep's: W&B neither captures it into every open run's output.log
        # (console="off") nor prints its ~15 lines per run to it (silent); no system-metrics sampler
        # per open run (x_disable_stats), which would sample the driver's node, not the trials'.
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True)
        runs: dict = {}  # trial id -> its open W&B run
        while True:
            op, key, arg = self.queue.get()
            if op == "close":
                break
            try:
                if op == "start" and key not in runs:  # a restarted trial keeps its open run
                    runs[key] = wandb.init(reinit="create_new", settings=settings, **arg)
                elif op == "log" and key in runs:
                    step, metrics = arg
                    runs[key].log(metrics, step=step)
                elif op == "end" and key in runs:
                    runs.pop(key).finish(exit_code=arg)
            except Exception as e:  # noqa: BLE001 - a tracker's failure is a warning; the tables are the record
                log.warning(f"--tracker wandb: {op} of trial {key}: {type(e).__name__}: {e}")
        for run in runs.values():
            run.finish()
        wandb.teardown()  # returns once W&B's own process has written everything and exited


def _wandb_callback(view: RunView):
    from ray.tune.logger import LoggerCallback

    class PointWandb(LoggerCallback):
        """A W&B run per point, named and tagged as above, all written by one thread of the driver:
        W&B keeps several runs open in one process (wandb.init(reinit="create_new")), and one W&B
        process serves them all.

        Not Ray's WandbLoggerCallback: it starts two Ray actors per trial (a queue and a logging
        actor, each a worker process importing Ray and W&B), 8.3 CPU-s a trial here
        (tests/test_trackers.py's three trials: 25 CPU-s; measured with per-process CPU), and
        14,336 processes for the paper grid's 7,168 points in packs of one. A run here costs W&B's
        init in the thread, 0.2 s offline after W&B's import (1.1 s, once)."""

        def __init__(self, project: str, group: str, **init_kwargs):
            self.project, self.group, self.init_kwargs = project, group, init_kwargs
            self._writer: _WandbWriter | None = None
            self._started: set[str] = set()

        def __getstate__(self):  # pickled into Tune's experiment state: no thread, no open runs
            return {**self.__dict__, "_writer": None, "_started": set()}

        def setup(self, *args, **kwargs):
            wandb_set_api_key()  # as Ray's callback: online without an API key is an error now, not a prompt

        def _put(self, op: str, key: str | None = None, arg=None) -> None:
            if self._writer is None:
                self._writer = _WandbWriter()
            self._writer.put(op, key, arg)

        def log_trial_start(self, trial):
            name, tags, params = run_view(view, trial.config["pack"])
            self._started.add(trial.trial_id)
            self._put("start", trial.trial_id, dict(
                id=f"{view.name}-{trial.trial_id}", name=name, group=self.group, project=self.project,
                config=params, resume="allow", allow_val_change=True,
                tags=[f"{k}:{v}"[:64] for k, v in tags.items()], **self.init_kwargs))

        def log_trial_result(self, iteration, trial, result):
            if trial.trial_id not in self._started:
                self.log_trial_start(trial)
            for step, metrics in result_metrics(view, trial, result):
                if metrics:
                    self._put("log", trial.trial_id, (step, metrics))

        def log_trial_end(self, trial, failed: bool = False):
            self._started.discard(trial.trial_id)
            self._put("end", trial.trial_id, 1 if failed else 0)

        def on_experiment_end(self, trials, **info):
            if self._writer is not None:
                self._writer.close(sync_timeout())
                self._writer = None

    extra = {"dir": str(view.path.resolve())}
    if os.environ.get("WANDB_MODE"):
        extra["mode"] = os.environ["WANDB_MODE"]
    return PointWandb(project=os.environ.get("WANDB_PROJECT") or "gansweep", group=view.name, **extra)
