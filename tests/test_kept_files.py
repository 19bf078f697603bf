"""A finished point's kept files (samples, and G weights under --keep-weights) survive a killed driver,
and a run whose files went missing is named by `status --check` and repaired by `resume`."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from helpers import REPO, assert_ledger_holds, cli, gansweep

# 4 GAN points of 2 shapes (nLayerD), 2 per shape (lr): 2 Tune trials of one stack of 2 at --pack 2.
GRID = {"seeds": [0], "settings": {"epochs": 2, "batch_size": 32, "n_train": 256, "n_eval": 100},
        "grids": {"gan": {"nLayerG": [2], "nLayerD": [2, 3], "sizeG": [32], "sizeD": [16], "dropoutD": [True],
                          "optimD": ["adam"], "optimG": ["adam"], "lr": [0.001, 0.0001]}}}


def killed(where: str, *args, cwd) -> None:
    """`gansweep ARGS` with its driver SIGKILLed as it keeps the first finished trial's `where`
    (tests/fault_driver.py), then what is left of its Ray instance."""
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_driver.py"), where, *map(str, args)],
                            cwd=cwd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, f"the driver was not killed at {where}: {err[-3000:]}"


def kept(run, what: str) -> dict[str, object]:
    """point_id -> the kept file's content: samples as an array, weights as a state_dict."""
    if what == "samples":
        return {p.stem: np.load(p) for p in sorted((run / "samples").glob("*.npy"))}
    return {p.stem: torch.load(p, weights_only=True) for p in sorted((run / "weights").glob("*.pt"))}


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


@pytest.mark.ray
def test_a_driver_killed_before_a_finished_points_files_loses_none_and_resume_restores_deleted_ones(
        tmp_path, data_root, monkeypatch):
    """The driver is SIGKILLed as it keeps the first finished trial's samples, then (resumed) as it keeps
    that trial's weights, each time after Tune saved its state with the trial's final checkpoint (as a
    kill under load can leave it); then Tune's state is damaged. The next resume finishes: every ok
    point has its samples and weights, and the weights draw its samples again. Then one point's weights and another's samples are deleted: `status --check` names both,
    exit 1; `resume` trains them again, one line saying so, to the same files, and the check passes."""
    from analysis.load import load_run
    from sweep.train.point import PointRun, to_uint8
    from sweep.plan.config import TrialConfig

    monkeypatch.setenv("GANSWEEP_DATA", str(data_root))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump({"presets": {"p": GRID}}))
    run = tmp_path / "runs" / "a"
    killed("samples", "run", "--config", f, "--preset", "p", "--name", "a", "--storage", tmp_path / "runs",
           "--num-cpus", "1", "--pack", "2", "--keep-weights", cwd=tmp_path)
    assert not (run / "samples").exists()
    killed("weights", "resume", run, cwd=tmp_path)
    assert len(kept(run, "samples")) == 2 and not (run / "weights").exists()
    # and Tune's newest experiment state cut short, as a full disk leaves it: resume builds a new
    # experiment, whose trial restores the finished points from the checkpoint folder it is handed
    # (no checkpoint of Tune's: before 2026-12 such a pack reported without one, and lost its files)
    state = sorted((run / "tune").glob("experiment_state-*.json"))[-1]
    state.write_text(state.read_text()[:100])
    r = cli("resume", run, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ("0 finished points stay, 2 restart from their last readable checkpoint, 2 from scratch"
            in r.stdout + r.stderr)

    df = assert_ledger_holds(run)  # the tables' rules and the kept-files rule
    assert len(df) == 4 and (df.status == "ok").all()
    samples, weights = kept(run, "samples"), kept(run, "weights")
    assert sorted(samples) == sorted(weights) == sorted(df.point_id)
    loaded = load_run(run)
    for pid in df.point_id:  # each point's kept G draws its kept samples from its fixed evaluation noise
        row = df[df.point_id == pid].iloc[0]
        cfg = TrialConfig(**{k: v.item() if hasattr(v, "item") else v for k, v in row.items()
                             if k in TrialConfig.__dataclass_fields__})
        z = PointRun(cfg, torch.zeros(cfg.n_train, 1024), torch.device("cpu")).eval_z
        with torch.no_grad():
            assert torch.equal(to_uint8(loaded.generator(pid)(z)[:64]), torch.from_numpy(samples[pid])), pid

    a, b = sorted(df.point_id)[:2]
    (run / "weights" / f"{a}.pt").unlink()
    (run / "samples" / f"{b}.npy").unlink()
    r = gansweep("status", run, "--check", cwd=tmp_path)
    assert r.returncode == 1
    assert f"1 ok point(s) lack their samples file: {b}" in r.stdout
    assert f"1 ok point(s) lack their G weights file: {a}" in r.stdout
    r = cli("resume", run, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert f"2 ok point(s) lack their kept files (samples/, weights/): {a}, {b}; they train again" in out
    assert "2 ok point(s) must train again: a new experiment was built from the tables" in out
    assert "2 finished points stay, 0 restart from their last readable checkpoint, 2 from scratch" in out
    assert gansweep("status", run, "--check", cwd=tmp_path).returncode == 0
    df = assert_ledger_holds(run)
    assert len(df) == 4 and (df.status == "ok").all()
    again_samples, again_weights = kept(run, "samples"), kept(run, "weights")
    assert sorted(again_samples) == sorted(again_weights) == sorted(df.point_id)
    for pid in df.point_id:  # retrained from scratch, bit for bit: each point has its own seeded streams
        assert same(again_samples[pid], samples[pid]) and same(again_weights[pid], weights[pid]), pid
