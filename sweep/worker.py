"""The worker side of a sweep: the Tune trainable, its per-process caches, its checkpoints.

The trainable is thin (seed, build, loop, report; sweep/trial.py does the work).
MNIST and the classifier reach the workers once, through the object store
(`make_trainable` wraps them with `tune.with_parameters`). Every scored epoch
reports its metrics with a checkpoint, so a retried or resumed trial continues
from its last epoch instead of restarting.

Imports Ray: import it only after sweep/cluster.py has set Ray's environment.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ray import tune
from ray.tune import Checkpoint

from sweep.config import TrialConfig
from sweep.ledger import epoch_report
from sweep.schema import RESTORED_HISTORY

STATE_FILE = "state.pt"  # G, D, both optimizers, RNG, history (sweep/trial.py's checkpoint())
SAMPLES_FILE = "samples.npy"  # the last scored epoch's 64 samples, copied to RUN_DIR/samples/

# Per worker process, built once and reused by every trial the (reused) actor runs.
_SCORERS: dict = {}
_DATASETS: dict = {}


def _dataset(images, n_train: int, device: str) -> torch.Tensor:
    """MNIST in model space on the trial's device, converted once per worker and size."""
    from sweep.trial import prepare_data

    key = (n_train, device)
    if key not in _DATASETS:
        _DATASETS.clear()  # one size at a time: a preset uses one n_train
        # a private, writable copy of the read-only object-store array
        _DATASETS[key] = prepare_data(torch.from_numpy(images[:n_train].copy()), n_train, device)
    return _DATASETS[key]


def _scorer(device: str, clf_state: dict, clf_sha: str, ref_mean, ref_cov):
    from models.classifier import DIGIT_THRESHOLD, MnistCNN
    from models.metrics import FeatureStats, Scorer

    key = (device, clf_sha)
    if key not in _SCORERS:
        clf = MnistCNN()
        clf.load_state_dict(clf_state)
        _SCORERS[key] = Scorer(clf.to(device), FeatureStats(ref_mean, ref_cov), clf_sha, DIGIT_THRESHOLD)
    return _SCORERS[key]


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(state: dict, folder: Path) -> None:
    torch.save(state, folder / STATE_FILE)
    if state["samples"] is not None:
        np.save(folder / SAMPLES_FILE, state["samples"].numpy())


def load_checkpoint(ckpt: Checkpoint, point_id: str, device: str) -> dict:
    """A trial's checkpoint as `run_trial(resume=...)` takes it; a damaged one is an error
    that says how to go on (never a silent start from scratch)."""
    try:
        with ckpt.as_directory() as d:
            return torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f"the checkpoint of {point_id} cannot be read ({type(e).__name__}); "
            "`gansweep resume RUN_DIR --restart-errored` retrains such trials from scratch") from None


def _is_done(resume: dict, cfg: TrialConfig) -> bool:
    history = resume["history"]  # run_trial's metrics: a diverged epoch has a "diverged" key
    return resume["epoch"] >= cfg.epochs or (bool(history) and "diverged" in history[-1])


# --------------------------------------------------------------------------- the trainable
def trainable(config: dict, *, images, clf_state, clf_sha, ref_mean, ref_cov, threads, device,
              finished: dict):
    """One grid point inside a Tune worker: config = {"point": TrialConfig fields}.

    finished: point_id -> final report of the points RUN_DIR's tables already record
    as finished (filled on resume). Tune's experiment state is saved periodically, so
    after a driver crash it can hold an older checkpoint of a trial that had in fact
    finished; such a trial reports its recorded result instead of training again.
    """
    from sweep.trial import run_trial

    started_at = time.time()  # wall clock, for the harness-overhead accounting of `gansweep bench`
    cfg = TrialConfig(**config["point"])
    if cfg.point_id in finished:
        tune.report(finished[cfg.point_id])
        return
    torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("this trial was given a GPU fraction but CUDA is not available")
    scorer = _scorer(device, clf_state, clf_sha, ref_mean, ref_cov)
    ckpt = tune.get_checkpoint()
    resume = None if ckpt is None else load_checkpoint(ckpt, cfg.point_id, device)

    def as_report(metrics: dict) -> dict:
        return {**epoch_report(metrics), "point_id": cfg.point_id, "device": device,
                "started_at": started_at, "reported_at": time.time()}

    # The first report after a restore carries the restored history (see
    # sweep/ledger.py restored_curve_rows), so the tables can fill a lost epoch from it.
    restored = [] if resume is None else [as_report(h) for h in resume["history"]]

    def on_epoch(metrics: dict, make_checkpoint) -> None:
        report = as_report(metrics)
        if restored:
            report[RESTORED_HISTORY] = json.dumps(restored)  # a string: loggers store it as is
            restored.clear()
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(make_checkpoint(), Path(d))
            tune.report(report, checkpoint=Checkpoint.from_directory(d))

    if resume is not None and _is_done(resume, cfg):
        # The trial had finished, but the driver died before Tune recorded it: report
        # its final metrics again instead of training anything.
        tune.report(as_report(resume["history"][-1]))
        return
    run_trial(cfg, _dataset(images, cfg.n_train, device), scorer, device, resume=resume,
              on_epoch=on_epoch)


def make_trainable(train_images: np.ndarray, clf, clf_sha: str, ref, threads: int, device: str,
                   finished: dict, cpus: float, gpus: float):
    """The trainable with MNIST and the classifier put in the object store once, and its
    resources. train_images: numpy, not a tensor (the object store hands numpy arrays to
    workers without a copy)."""
    fn = tune.with_parameters(trainable, images=train_images, clf_state=clf.state_dict(), clf_sha=clf_sha,
                              ref_mean=ref.mean, ref_cov=ref.cov, threads=threads, device=device,
                              finished=finished)
    return tune.with_resources(fn, {"cpu": cpus, "gpu": gpus})

