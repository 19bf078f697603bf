"""--tracker wandb / mlflow on a real sweep, offline: every point arrives as its own run, with its
metrics; and Tune's TensorBoard files hold the same metrics.

W&B runs in offline mode (files under RUN_DIR/wandb), MLflow logs to a local file store
(RUN_DIR/mlruns); neither needs a network. Both trackers log the same sweep.
"""
import threading
from types import SimpleNamespace

import pandas as pd
import pytest

from helpers import REPO, cli, tensorboard_scalars, wandb_records

SWEEP = """
presets:
  t:
    seeds: [0]
    settings: {epochs: 2, batch_size: 32, n_train: 1024, n_eval: 100}
    grids:
      gan: {nLayerG: [2], nLayerD: [2], sizeG: [32], sizeD: [16], dropoutD: [false],
            optimD: [adam], optimG: [adam, sgd], lr: [0.001]}
      ebgan: {nLayerG: [2], nLayerD: [2], sizeG: [32], sizeD: [16], dropoutD: [false],
              optimD: [adam], optimG: [adam], lr: [0.001]}
"""


@pytest.mark.ray
def test_every_point_reaches_wandb_and_mlflow(tmp_path, data_root, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    monkeypatch.setenv("GANSWEEP_DATA", str(data_root))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r = cli("run", "--preset", "t", "--name", "a", "--num-cpus", "2", "--tracker", "wandb", "--tracker", "mlflow",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "a"
    curves = pd.read_parquet(run / "curves.parquet")
    points = set(curves.point_id)
    assert len(points) == 3
    fid = {(p, int(e)): v for p, e, v in zip(curves.point_id, curves.epoch, curves.fid)}

    # MLflow: one finished run per point in the experiment named after the sweep, tagged, with every epoch
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("a").experiment_id])
    assert sorted(x.info.run_name for x in runs) == sorted(points)
    for x in runs:
        pid = x.info.run_name
        assert x.info.status == "FINISHED"
        assert x.data.tags["point_id"] == pid and x.data.tags["family"] == pid.split("-")[0]
        assert x.data.tags["model"] == pid.split("-")[0] and x.data.tags["nLayerG"] == "2"
        assert x.data.params["epochs"] == "2" and x.data.params["n_eval"] == "100"
        history = client.get_metric_history(x.info.run_id, "fid")
        assert sorted((h.step, round(h.value, 6)) for h in history) == [(e, round(fid[pid, e], 6)) for e in (1, 2)]
        assert {"i_prime", "inception_score", "loss_d", "loss_g", "digit_share"} <= set(x.data.metrics)

    # W&B: one offline run per point, named and tagged by it, with one history row per epoch
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3
    seen = {}
    for f in files:
        rec = wandb_records(f)
        seen[rec["name"]] = rec
        assert f"point_id:{rec['name']}" in rec["tags"] and "nLayerD:2" in rec["tags"]
        assert rec["config"]["n_train"] == 1024 and rec["config"]["family"] == rec["name"].split("-")[0]
        rows = [h for h in rec["history"] if "fid" in h]
        assert [h["_step"] for h in rows] == [1, 2]
        assert [round(h["fid"], 6) for h in rows] == [round(fid[rec["name"], e], 6) for e in (1, 2)]
    assert set(seen) == points

    # TensorBoard (always on): each trial's event file holds its point's metrics per epoch
    for pid in points:
        (events,) = (run / "tune").glob(f"{pid}-*/events.out.tfevents.*")
        scalars = tensorboard_scalars(events)
        assert [s for s, _ in scalars["ray/tune/fid"]] == [1, 2]
        assert [round(v, 2) for _, v in scalars["ray/tune/fid"]] == [round(fid[pid, e], 2) for e in (1, 2)]


def test_a_missing_tracker_is_one_line(monkeypatch):
    """Without the package installed the run stops before anything starts (simulated by hiding it)."""
    import builtins

    from sweep.errors import UserError
    from sweep.runner.trackers import check_tracker

    real_import = builtins.__import__

    def no_wandb(name, *a, **k):
        if name == "wandb":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(UserError, match=r"--tracker wandb: wandb is not installed; pip install 'gansweep\[wandb\]'"):
        check_tracker("wandb")


def test_wandb_runs_are_written_by_one_thread_of_the_driver(tmp_path, monkeypatch, capfd):
    """Two trials driven as Tune drives a logger callback, here without Ray: each is one offline W&B
    run with its two epochs; the restarted trial keeps its run and logs its first epoch once; the
    failed one ends with exit code 1, the other 0. The driver's console stays gansweep's: W&B prints
    nothing to it and copies none of it into the runs. Ray's own callback started two Ray actors per
    trial (and, with no Ray instance, would have started one)."""
    pytest.importorskip("wandb")
    import ray

    from sweep.plan.config import TrialConfig
    from sweep.plan.packs import make_packs
    from sweep.runner.trackers import make_tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    points = (TrialConfig(family="gan", seed=0), TrialConfig(family="ebgan", seed=1))
    packs = make_packs(points, 1)
    cb = make_tracker("wandb", SimpleNamespace(packs=packs, name="w", path=tmp_path))
    cb.setup()
    trials = [SimpleNamespace(trial_id=f"t{i}", config={"pack": p.pack_id}) for i, p in enumerate(packs)]

    def report(i: int, epoch: int) -> dict:
        return {"point_id": points[i].point_id, "epoch": epoch, "fid": 10.0 * epoch + i, "i_prime": epoch + i / 10}

    for i, t in enumerate(trials):
        cb.log_trial_start(t)
        cb.log_trial_result(1, t, report(i, 1))
    print("gansweep progress line")  # while both runs are open
    cb.log_trial_start(trials[1])  # restarted after a worker failed: the same run, epoch 1 reported again
    cb.log_trial_result(1, trials[1], report(1, 1))
    for i, t in enumerate(trials):
        cb.log_trial_result(2, t, report(i, 2))
        cb.log_trial_end(t, failed=i == 1)
    cb.on_experiment_end(trials)

    out, err = capfd.readouterr()
    assert out == "gansweep progress line\n" and err == "", (out, err)
    assert not any("gansweep progress line" in f.read_text() for f in (tmp_path / "wandb").rglob("*.log"))
    assert not ray.is_initialized()
    assert not [t for t in threading.enumerate() if t.name == "gansweep-wandb"]
    recs = {r["name"]: r for r in map(wandb_records, (tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))}
    assert sorted(recs) == sorted(p.point_id for p in points)
    for i, p in enumerate(points):
        rec = recs[p.point_id]
        assert rec["exit_code"] == i and rec["config"]["family"] == p.family and f"point_id:{p.point_id}" in rec["tags"]
        assert [(h["_step"], h["fid"], h["i_prime"]) for h in rec["history"] if "fid" in h] == [
            (1, 10.0 + i, 1 + i / 10), (2, 20.0 + i, 2 + i / 10)]
