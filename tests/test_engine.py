"""The Ray Tune engine on a real local Ray instance: rows, columns, kill + resume, status."""
import json
import os
import re
import signal
import socket
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import (LOOPBACK, REPO, assert_ledger_holds, cli, gansweep, listening_addresses, results_with, session_pids,
                     start, wait_for)
from sweep.plan.config import FIELD_NAMES, SETTINGS

pytestmark = pytest.mark.ray

# Twelve tiny points (4 GAN + 4 EBGAN + 2 EBGAN-PT + 1 BEGAN on the paper's nets, 1 GAN on the
# smallest DCGAN nets), 3 epochs of 32 steps each: about a second a trial, long enough to kill the
# driver while some trials are done and some are not.
SWEEP = """
presets:
  t:
    seeds: [0]
    settings: {epochs: 3, batch_size: 32, n_train: 1024, n_eval: 200}
    grids:
      gan:
        - {nLayerG: [2], nLayerD: [2], sizeG: [32], sizeD: [16], dropoutD: [false],
           optimD: [adam], optimG: [adam, sgd], lr: [0.001, 0.0001]}
        - {arch: [dcgan], nLayerG: [4], nLayerD: [4], sizeG: [16], sizeD: [8], dropoutD: [false],
           optimD: [adam], optimG: [adam], lr: [0.0002]}
      ebgan: {nLayerG: [2], nLayerD: [2, 3], sizeG: [32], sizeD: [16], dropoutD: [false, true],
              optimD: [adam], optimG: [adam], lr: [0.001]}
      ebgan_pt: {nLayerG: [2], nLayerD: [2, 3], sizeG: [32], sizeD: [16], dropoutD: [true],
                 optimD: [adam], optimG: [adam], lr: [0.001]}
      began: {nLayerG: [2], nLayerD: [2], sizeG: [32], sizeD: [16], dropoutD: [false],
              optimD: [adam], optimG: [adam], lr: [0.0001]}
"""
N_POINTS = 12
RESULT_COLUMNS = {"point_id", "status", "tune_status", "epochs_done", "best_epoch", "i_prime",
                  "inception_score", "fid", "classes_covered", "kl_uniform", "loss_d", "loss_g",
                  "best_i_prime", "best_inception_score", "best_fid", "best_classes_covered",
                  "best_kl_uniform", "best_loss_d", "best_loss_g", "m_global", "k_t", "best_m_global",
                  "best_k_t", "digit_share", "best_digit_share", "train_seconds", "eval_seconds",
                  "wall_seconds", "diverged_reason", "error", "device", "node", "trial_id",
                  "classifier_sha256", "gansweep_version", "git_commit", "run_name", "preset"}


@pytest.fixture
def sweep_file(tmp_path, data_root, monkeypatch):
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP)
    monkeypatch.setenv("GANSWEEP_DATA", str(data_root))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return f


def test_smoke_sweep_rows_and_columns(tmp_path, sweep_file, monkeypatch):
    # A cluster address in the environment (RAY_ADDRESS, or one `ray start` left) must not pull a
    # run without --address into it: it starts its own instance (Ray's default would join and fail).
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6399")
    r = cli("run", "--config", sweep_file, "--preset", "t", "--name", "a", "--storage",
            tmp_path / "runs", "--num-cpus", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "12/12 finished (ok 12" in r.stdout and "harness overhead" in r.stdout
    run = tmp_path / "runs" / "a"
    df = pd.read_parquet(run / "results.parquet")
    assert len(df) == N_POINTS and df["point_id"].is_unique
    assert set(df.columns) == RESULT_COLUMNS | set(FIELD_NAMES)
    assert (df["status"] == "ok").all() and (df["epochs_done"] == 3).all()
    assert df["family"].value_counts().to_dict() == {"gan": 5, "ebgan": 4, "ebgan_pt": 2, "began": 1}
    assert df.loc[df.arch == "dcgan", "point_id"].tolist() == [
        "gan-dcgan-G4x16-D4x8-nodrop-adam.adam-lr0.0002-sepbn-s0"]  # auto: separate on DCGAN
    began = df[df.family == "began"].iloc[0]
    assert began.energy_norm == "l1" and 0 <= began.k_t <= 1 and began.m_global > 0
    assert df["i_prime"].notna().all() and df["inception_score"].between(1, 10).all()
    assert (df["best_epoch"].between(1, 3)).all()
    assert (df["best_i_prime"] >= df["i_prime"] - 1e-12).all()
    assert (df["n_train"] == 1024).all() and (df.loc[df.family != "began", "energy_norm"] == "l2").all()
    assert (df["classifier_sha256"].str.len() == 64).all()
    # where each point trained: outside Slurm, the host and the Ray node's short id, one node here
    host = socket.gethostname()
    assert df["node"].nunique() == 1 and re.fullmatch(re.escape(host) + r":[0-9a-f]{8}", df["node"].iloc[0]), df.node
    csv = pd.read_csv(run / "results.csv")
    assert len(csv) == N_POINTS and list(csv.columns) == list(df.columns)
    curves = pd.read_parquet(run / "curves.parquet")
    assert len(curves) == 3 * N_POINTS and not curves.duplicated(["point_id", "epoch"]).any()
    # final metrics of the table equal the curve's last epoch
    last = curves[curves.epoch == 3].set_index("point_id")
    for k in ("i_prime", "digit_share"):
        assert (df.set_index("point_id")[k] - last[k]).abs().max() < 1e-12, k
    assert df["digit_share"].between(0, 1).all() and df["best_digit_share"].notna().all()
    assert len(list((run / "samples").glob("*.npy"))) == N_POINTS
    m = json.loads((run / "gansweep.json").read_text())
    assert m["n_trials"] == N_POINTS and len(m["sessions"]) == 1
    assert m["setting_defaults"]["d_batch"] == "auto" and len(m["setting_defaults"]) == len(SETTINGS)
    assert m["reference_scores"]["inception_score"] > 9.5
    assert 0 <= m["sessions"][0]["overhead_share"] < 1

    assert_ledger_holds(run)
    st = gansweep("status", run, "--check", cwd=tmp_path)
    assert st.returncode == 0, st.stdout
    assert "ok 12  diverged 0  error 0  pending 0  (running 0)" in st.stdout
    assert "check: all 12 rows keep the ledger's rules" in st.stdout
    assert f"  finished points by node: {df.node.iloc[0]} 12" in st.stdout.splitlines(), st.stdout


def test_killed_driver_resumes_every_point_exactly_once(tmp_path, sweep_file):
    """Run on a 10-point sample of the 12 (--sample), with --set and --seeds: the resume keeps that
    sample and those overrides (had it replanned the file's own seed 0, no point would match)."""
    from sweep.plan.grid import load_preset, parse_overrides

    run = tmp_path / "runs" / "k"
    over = parse_overrides(["n_eval=150", "n_train=4096"], "4")
    sampled = {t.point_id for t in load_preset(sweep_file, "t", sample=10, sample_seed=3, overrides=over).trials}
    assert all(p.endswith("-s4") for p in sampled)
    # one trial at a time, of 128 steps an epoch: the sweep then lasts long enough (10 trials x 2-6 s)
    # to be caught with some trials finished and most not, whatever the machine's speed (at 32 steps
    # an epoch a fast VM ran all 10 in 14 s, which the 5 s between table writes could miss)
    proc = start("run", "--config", sweep_file, "--preset", "t", "--name", "k", "--storage",
                 tmp_path / "runs", "--num-cpus", "2", "--max-concurrent", "1", "--quiet", "--sample", "10",
                 "--sample-seed", "3", "--set", "n_eval=150", "--set", "n_train=4096", "--seeds", "4", cwd=tmp_path)
    before = wait_for(lambda: results_with(run, 2), 240, "two finished trials", proc)
    # while it runs: every port of the local Ray instance listens on loopback only
    addresses = listening_addresses(proc.pid)
    assert addresses and addresses <= LOOPBACK, addresses
    # and a quiet run's instance has no autoscaler, log monitor or API server (sweep/runner/cluster.py)
    ray_processes = [session_pids(proc.pid, name) for name in ("gcs_server", "raylet", "ray::ImplicitFunc")]
    assert all(ray_processes), ray_processes
    unused = {name: session_pids(proc.pid, name) for name in ("monitor.py", "log_monitor.py", "dashboard/dashboard.py")}
    assert not any(unused.values()), unused
    # a trial's worker started as Ray's plain workers do, without a runtime environment (whose
    # set-up script costs a second of CPU a worker): Tune's default one sets PL_DISABLE_FORK
    environs = []
    for pid in ray_processes[2]:
        try:
            environs.append(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:  # a worker that exited since it was listed
            pass
    assert environs and not any(v.startswith(b"PL_DISABLE_FORK=") for env in environs for v in env), environs
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its whole local Ray instance
    proc.wait(timeout=30)
    finished = before[before.status == "ok"].set_index("point_id")
    assert 2 <= len(finished) < 10 and set(before["point_id"]) == sampled

    r = cli("resume", run, "--num-cpus", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    after = pd.read_parquet(run / "results.parquet")
    assert len(after) == 10 and after["point_id"].is_unique
    assert set(after["point_id"]) == sampled
    assert (after["status"] == "ok").all() and (after["epochs_done"] == 3).all()
    assert (after["n_eval"] == 150).all() and (after["seed"] == 4).all()
    # trials that had finished were not trained again: same scores, same training seconds
    a = after.set_index("point_id").loc[finished.index]
    assert (a["train_seconds"] == finished["train_seconds"]).all()
    assert (a["i_prime"] == finished["i_prime"]).all()
    curves = pd.read_parquet(run / "curves.parquet")
    assert len(curves) == 3 * 10 and not curves.duplicated(["point_id", "epoch"]).any()
    m = json.loads((run / "gansweep.json").read_text())
    assert len(m["sessions"]) == 1  # the killed session never finished; the resume did
    assert m["sample"] == {"n": 10, "seed": 3, "grid_size": N_POINTS, "sampler": 3}
    assert m["scope"] == "a 10-point sample (seed 3) of the 12-point grid"
    assert m["overrides"] == {"set": {"n_eval": 150, "n_train": 4096}, "seeds": [4]}
    assert_ledger_holds(run)


# Six points of 4 epochs (under a second a point here), one trial at a time: a signal sent as soon as
# Tune logs the first point's last epoch lands with one or two points finished, one running
# and the rest not started.
SIGNAL_SWEEP = """
presets:
  s:
    seeds: [0, 1, 2]
    settings: {epochs: 4, batch_size: 32, n_train: 2048, n_eval: 200}
    grids:
      ebgan: {nLayerG: [2], nLayerD: [2], sizeG: [32], sizeD: [16], dropoutD: [false, true],
              optimD: [adam], optimG: [adam], lr: [0.001]}
"""


@pytest.mark.parametrize("sig, whole_group", [
    (signal.SIGINT, True),  # Ctrl-C: the terminal signals the whole foreground process group
    (signal.SIGTERM, False),  # kill PID, Slurm, Kubernetes: the driver alone
    (signal.SIGHUP, True),  # the SSH session went away: the whole group, Ray's own processes too
])
def test_a_signal_stops_the_sweep_truthfully_and_resume_finishes_it(tmp_path, data_root, monkeypatch,
                                                                     sig, whole_group):
    monkeypatch.setenv("GANSWEEP_DATA", str(data_root))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    (tmp_path / "sweep.yaml").write_text(SIGNAL_SWEEP)
    run = tmp_path / "runs" / "s"
    proc = start("run", "--preset", "s", "--name", "s", "--storage", tmp_path / "runs", "--num-cpus", "2",
                 "--max-concurrent", "1", "--quiet", cwd=tmp_path)
    def a_point_finished():  # Tune's own log, written as each report arrives (the tables lag up to 5 s)
        logs = [p.read_text() for p in (run / "tune").glob("*/result.json")] if (run / "tune").is_dir() else []
        return True if any('"epoch": 4,' in text for text in logs) else None

    wait_for(a_point_finished, 240, "a finished trial", proc)
    (os.killpg if whole_group else os.kill)(proc.pid, sig)
    assert proc.wait(timeout=120) == 128 + sig
    err = proc.stderr_path.read_text()
    assert "Traceback" not in err and "Aborted" not in err and "core dumped" not in err, err
    name = signal.Signals(sig).name
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"gansweep: {name}: sweep stopped; ") and last.endswith(
        f"continue with: gansweep resume {run}"), err
    wait_for(lambda: True if not session_pids(proc.pid) else None, 30, "Ray's processes to exit")

    before = assert_ledger_holds(run)  # in particular: no row ok that did not train every epoch
    ok = before[before.status == "ok"].set_index("point_id")
    assert 1 <= len(ok) < 6 and (ok.epochs_done == 4).all()
    assert set(before.status) <= {"ok", "pending"}
    assert f"{len(ok)} of 6 points finished (ok {len(ok)}, diverged 0), {6 - len(ok)} did not (" in last
    st = gansweep("status", run, "--check", cwd=tmp_path)
    assert st.returncode == 0 and f"stopped by {name}" in st.stdout, st.stdout
    if sig != signal.SIGHUP:
        # What a stop leaves is the same whatever the signal; SIGHUP's run is resumed below (with its
        # experiment state cut short), and a full disk's graceful stop is resumed in test_reliability.py.
        return
    partial = {}  # unfinished point -> the epoch of its newest checkpoint (Tune may not have logged it yet)
    for trial in (run / "tune").glob("*-*_*"):
        pid, ckpts = trial.name.rsplit("-", 1)[0], sorted(trial.glob("checkpoint_*/state.pt"))
        if pid not in ok.index and ckpts:
            partial[pid] = torch.load(ckpts[-1], weights_only=True)["points"][pid]["epoch"]
    for state in (run / "tune").glob("experiment_state-*.json"):  # cut short, as a full disk leaves it
        state.write_text(state.read_text()[: len(state.read_text()) // 2])

    r = cli("resume", run, "--num-cpus", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # the tables are the truth: a new experiment, every checkpoint that reads reused
    assert "Tune's experiment state is experiment_state-" in r.stdout and "unreadable (JSONDecodeError)" in r.stdout
    assert (f"{len(ok)} finished points stay, {len(partial)} restart from their last readable checkpoint, "
            f"{6 - len(ok) - len(partial)} from scratch") in r.stdout, r.stdout
    assert len(list(run.glob("tune.damaged-*"))) == 1
    for pid, done in partial.items():  # no epoch trained twice: the first one trained now is the next
        log, = (run / "tune").glob(f"{pid}-*/result.json")  # (a point its checkpoint holds finished reports it)
        assert json.loads(log.read_text().splitlines()[0])["epoch"] == min(done + 1, 4)
    after = assert_ledger_holds(run)
    assert len(after) == 6 and (after.status == "ok").all() and (after.epochs_done == 4).all()
    a = after.set_index("point_id").loc[ok.index]  # finished points were not trained again
    assert (a.train_seconds == ok.train_seconds).all() and (a.i_prime == ok.i_prime).all()
    curves = pd.read_parquet(run / "curves.parquet")
    assert len(curves) == 24 and not curves.duplicated(["point_id", "epoch"]).any()


def test_a_big_trainable_parameter_is_unpickled_once_per_worker():
    """Tune's with_parameters decodes every parameter again for each trial a reused worker runs;
    a `Once` value is decoded at the first and the same object handed to the next ones."""
    import pickle

    from sweep.runner.worker import Once

    packs = {"p0000": [{"family": "gan", "nLayerG": 2}], "p0001": [{"family": "ebgan", "nLayerG": 3}]}
    wrapped = Once(packs)
    first, second = pickle.loads(pickle.dumps(wrapped)), pickle.loads(pickle.dumps(wrapped))
    assert first == packs and first is not packs and second is first
    other = pickle.loads(pickle.dumps(Once(packs)))  # another value (another run's): its own copy
    assert other == packs and other is not first
