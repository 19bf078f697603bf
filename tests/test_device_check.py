"""The device check (tools/device-check.sh) on a machine without a GPU: the no-device path, the
CPU dry run of every step, and the paper projection's arithmetic by hand."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from helpers import REPO
from sweep.measure.device_check import project

SCRIPT = REPO / "tools" / "device-check.sh"


@pytest.fixture
def own_tmp():
    """(environment, folder): a check whose temporary folders go to a folder of its own, to count
    them. Short and under /tmp: Ray puts its sockets there (AF_UNIX paths end at 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="gdc-", dir="/tmp"))
    yield {**os.environ, "TMPDIR": str(folder)}, folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run on it")
def test_without_a_gpu_the_check_says_so_after_its_cpu_side(tmp_path, data_root, own_tmp):
    out = tmp_path / "check.json"
    r = subprocess.run([str(SCRIPT), "--out", str(out), "--data-root", str(data_root)], capture_output=True,
                       text=True, timeout=120, env=own_tmp[0])
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("device check: no CUDA device here (torch ")
    table = [line.split()[:2] for line in r.stdout.splitlines()[1:]]
    assert table == [["plan", "ok"], ["device", "FAILED"], ["equivalence", "skipped"], ["bench", "skipped"],
                     ["sweep", "skipped"], ["projection", "skipped"]]
    doc = json.loads(out.read_text())
    # the CPU side: the check's own sweep, and the paper plan at the GPU's auto pack size
    assert doc["figures"]["plan"] == {"check_points": 48, "check_trials": 4, "paper_points": 7168,
                                      "paper_auto_k": 14, "paper_stacks": 1536, "paper_points_stacked": 6144}
    assert not list(own_tmp[1].glob("gansweep-device-check-*"))  # its work folder went with it


def test_bad_arguments_are_one_line(tmp_path, data_root):
    for args, says in ((["--device", "tpu"], "--device tpu: expected cuda"),
                       (["--data-root", str(tmp_path / "none")], "MNIST not found")):
        r = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


@pytest.mark.ray
def test_the_dry_run_on_cpu_runs_every_step(tmp_path, data_root, own_tmp):
    out = tmp_path / "check.json"
    r = subprocess.run([str(SCRIPT), "--device", "cpu", "--out", str(out), "--data-root", str(data_root)],
                       capture_output=True, text=True, timeout=400, env=own_tmp[0])
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert not list(own_tmp[1].glob("gansweep-device-check-*"))
    doc = json.loads(out.read_text())
    assert [(row["step"], row["state"]) for row in doc["rows"]] == [
        ("plan", "ok"), ("device", "ok"), ("equivalence", "ok"), ("bench", "ok"), ("sweep", "ok"), ("projection", "ok")]
    f = doc["figures"]
    assert f["equivalence"]["max_relative_difference"] == 0.0  # one CPU thread: bit-identical
    assert f["equivalence"]["streams_as_manual_seed"] is True  # on CUDA it checks the device's stream too
    assert f["equivalence"]["redrawn_as_built"] is True  # 2 shapes, G and D each from the pool
    bench = f["bench"]
    assert bench["device_type"] == "cpu" and "tf32_on" not in bench  # TF32 is a CUDA setting
    b = bench["tf32_off"]
    assert set(b["throughput"]) == set(b["packs"]) == {"smallest", "middle", "largest"}
    assert all(set(ks) == {"1", "2"} and ks["1"]["ratio_vs_alone"] == 1.0 for ks in b["packs"].values())
    # a pack of 2 issues fewer aten ops per point-step than a point alone (one stacked kernel each)
    assert all(ks["2"]["launches_per_point_step"] < ks["1"]["launches_per_point_step"] for ks in b["packs"].values())
    assert set(b["concurrency"]) == {"1", "2"} and b["concurrency"]["1"]["speedup_vs_one"] == 1.0
    sweep = f["sweep"]
    assert sweep["points"] == 48 and sweep["counts"]["ok"] + sweep["counts"]["diverged"] == 48
    p = f["projection"]["tf32_off"]
    assert p["points"] == 7168 and p["pack_k_measured"] == 2 and 0 < p["packed_hours"] and 0 < p["solo_hours"]


def _bench(fixed_s: float, per_gflop_s: float, pack_ratio: float, conc: float, scorer: float) -> dict:
    """Rates as devbench reports them, made so that a step costs fixed_s + per_gflop_s * GFLOP alone."""
    throughput = {name: {"train_gflop_per_step": g, "step_ms": 1e3 * (fixed_s + per_gflop_s * g)}
                  for name, g in (("smallest", 1.0), ("middle", 10.0), ("largest", 100.0))}
    packs = {name: {"1": {"ratio_vs_alone": 1.0}, "12": {"ratio_vs_alone": pack_ratio}} for name in throughput}
    return {"scorer_images_per_s": scorer, "tf32_off": {"throughput": throughput, "packs": packs,
                                                         "concurrency": {"1": {"speedup_vs_one": 1.0},
                                                                         "4": {"speedup_vs_one": conc}}}}


def test_the_projection_by_hand():
    """The paper preset: 7,168 points of 10 epochs x 937 steps, 10 scored epochs of 10,000 samples.
    With a fixed 1 ms a step, no FLOP cost, 2x from 4 at once and 10,000 scored images/s:
    solo (7,168 x 9,370 x 1 ms + 7,168 x 10 x 1 s) / 2 = 69,422 s = 19.28 h; with packs 4x faster
    for the 6,144 GAN points in stacks of 12, their steps cost 0.25 ms:
    (6,144 x 9,370 x 0.25 ms + 1,024 x 9,370 x 1 ms + 71,680 s) / 2 = 47,834 s = 13.29 h."""
    p = project(_bench(1e-3, 0.0, 4.0, 2.0, 1e4), "tf32_off")
    assert p["points"] == 7168 and p["pack_k_measured"] == 12 and p["concurrent_speedup"] == 2.0
    assert p["solo_step_fixed_ms"] == pytest.approx(1.0) and p["packed_step_fixed_ms"] == pytest.approx(0.25)
    assert p["solo_hours"] == pytest.approx((7168 * 9370 * 1e-3 + 71680) / 2 / 3600)
    assert p["packed_hours"] == pytest.approx((6144 * 9370 * 0.25e-3 + 1024 * 9370 * 1e-3 + 71680) / 2 / 3600)
    assert round(p["solo_hours"], 2) == 19.28 and round(p["packed_hours"], 2) == 13.29
    # the FLOP part: 1 ms per GFLOP and no fixed cost gives back the plan's own training FLOPs
    from sweep.plan.grid import load_preset
    from sweep.measure.rates import train_flops_per_sample

    trials = load_preset(REPO / "sweep" / "presets.yaml", "paper").trials
    gflop = sum(t.epochs * (t.n_train // t.batch_size) * t.batch_size * train_flops_per_sample(t) for t in trials) / 1e9
    p = project(_bench(0.0, 1e-3, 1.0, 1.0, 1e12), "tf32_off")
    assert p["solo_hours"] == pytest.approx(gflop * 1e-3 / 3600, rel=1e-6)
