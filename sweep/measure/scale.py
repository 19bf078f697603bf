"""`gansweep bench --scale`: the whole paper plan through the real engine, with the work cut to nothing.

    gansweep bench --scale --pack 12 --out scale.json     # about 10 minutes on 2 CPU cores

Every one of the paper preset's 7,168 points (the same families, axes and packs)
runs as a real trial of `gansweep run`: its own Ray instance, Tune, checkpoints,
the ledger, the tables. Only the work is cut: one epoch of one step (n_train =
batch_size = 64), 10 scored samples, and every layer width divided by 100 (sizeG
400..3200 -> 4..32, sizeD 128..1024 -> 1..10) so distinct sizes stay distinct and
the packs are the paper's. What is left is what the harness costs per point.

Measured:
  1. a full run: wall, per-point harness overhead (slot time not spent training or
     scoring, over points), Tune's share per trial, the driver's peak RSS, the size of
     Tune's experiment state, and the run directory's final size;
  2. a second run, SIGKILLed (the whole process group) once half its points are
     finished: how long `gansweep resume` takes to restart (to its first newly
     finished point), and that the finished run holds every point exactly once.
Goals (issue 13) are read off, never asserted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from sweep.plan.grid import load_file, load_preset
from sweep.record.layout import TUNE_DIR
from sweep.record.results import finished_count, read_curves, read_manifest, read_results, write_atomic
from sweep.record.rules import check_run
from sweep.record.rundir import RunDir
from sweep.runner.cluster import EXPERIMENT_STATES

GOALS = {"per_point_overhead_s": 0.020, "driver_peak_rss_gb": 1.5, "experiment_state_mb": 20.0,
         "restart_s": 60.0}
WIDTH_DIVISOR = {"sizeG": 100, "sizeD": 100}
SETTINGS = {"epochs": 1, "batch_size": 64, "n_train": 64, "n_eval": 10}


def scale_sweep_file(config: Path, path: Path) -> int:
    """The paper preset with the work cut (module docstring), written to path; its point count."""
    doc = load_file(config)
    paper = doc["presets"]["paper"]
    grids = {}
    for family, axes in paper["grids"].items():
        axes = dict(axes)
        for key, div in WIDTH_DIVISOR.items():
            axes[key] = [max(1, v // div) for v in axes[key]]
        grids[family] = axes
    body = {"description": "the paper plan, work cut to nothing (sweep/measure/scale.py)", "seeds": paper["seeds"],
            "settings": SETTINGS, "grids": grids}
    path.write_text(yaml.safe_dump({"presets": {"scale": body}}, sort_keys=False))
    return len(load_preset(path, "scale").trials)


def _peak_rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


def _finished(run: Path) -> int:
    try:
        return finished_count(run)
    except Exception:  # the table being replaced as it is read: the next poll reads it
        return 0


def _gansweep(*args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweep.cli", *map(str, args)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_scale(config: Path, work: Path, pack: str, data_root, log=print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    sweep_file = work / "scale.yaml"
    n_points = scale_sweep_file(config, sweep_file)
    env = {**os.environ, **({"GANSWEEP_DATA": str(data_root)} if data_root else {})}
    common = ["--config", sweep_file, "--preset", "scale", "--storage", work, "--num-cpus", "2", "--pack", pack,
              "--quiet"]

    # 1. one full run, its driver's peak RSS sampled while it runs
    log(f"full run of {n_points} points (--pack {pack})")
    t0 = time.time()
    proc = _gansweep("run", *common, "--name", "full", env=env)
    rss = 0.0
    while proc.poll() is None:
        rss = max(rss, _peak_rss_gb(proc.pid))
        time.sleep(1.0)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"the scale run failed ({proc.returncode}): {err[-2000:]}")
    wall = time.time() - t0
    run = work / "full"
    session = read_manifest(run)["sessions"][-1]
    n_trials = len([p for p in (run / TUNE_DIR).iterdir() if p.is_dir()])
    state = sorted((run / TUNE_DIR).glob(EXPERIMENT_STATES))[-1].stat().st_size
    slot_s = session["wall_seconds"] * session["slots"]
    res = {"points": n_points, "pack": pack, "trials": n_trials, "wall_s": wall,
           "session_wall_s": session["wall_seconds"], "startup_s": session["startup_seconds"],
           "compute_s": session["compute_seconds"], "slots": session["slots"],
           "per_point_overhead_s": (slot_s - session["compute_seconds"]) / n_points,
           "per_trial_harness_s": (slot_s - session["compute_seconds"]) / n_trials,
           "driver_peak_rss_gb": rss, "experiment_state_mb": state / 1e6,
           "experiment_state_kb_per_trial": state / 1e3 / n_trials,
           "run_dir_mb": _dir_bytes(run) / 1e6, "counts": session["counts"]}
    log(f"full run: {wall:.0f}s wall, {res['per_point_overhead_s'] * 1000:.1f} ms/point, "
        f"RSS {rss:.2f} GB, state {res['experiment_state_mb']:.1f} MB")

    # 2. killed half-way, then resumed
    log("second run, SIGKILLed half-way, then resumed")
    proc = _gansweep("run", *common, "--name", "killed", env=env)
    run = work / "killed"
    while _finished(run) < n_points // 2:
        if proc.poll() is not None:
            raise RuntimeError(f"the run to kill ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = _finished(run)
    t0 = time.time()
    proc = _gansweep("resume", run, "--num-cpus", "2", "--quiet", env=env)
    restart = None
    while proc.poll() is None:
        if restart is None and _finished(run) > at_kill:
            restart = time.time() - t0
        time.sleep(0.5)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"the scale resume failed ({proc.returncode}): {err[-2000:]}")
    results = read_results(run)
    problems = check_run(RunDir(run), results, read_curves(run))
    res.update(killed_at_finished=at_kill, restart_s=restart if restart is not None else float("nan"),
               resume_wall_s=time.time() - t0, resumed_rows=len(results),
               resumed_unique_points=int(results["point_id"].nunique()), resumed_rule_problems=problems)
    log(f"resume: first new point after {res['restart_s']:.1f}s, done in {res['resume_wall_s']:.0f}s, "
        f"{len(results)} rows, {len(problems)} broken rules")
    return res


def format_scale(res: dict) -> str:
    lines = [f"scale: {res['points']} points of the paper plan in {res['trials']} Tune trials (--pack {res['pack']}), "
             f"{res['slots']} slots",
             f"{'target':<44} {'measured':>10} {'goal':>8}  met"]
    for key, goal in GOALS.items():
        v = res[key]
        lines.append(f"{key:<44} {v:>10.3f} {goal:>8g}  {'yes' if v <= goal else 'NO'}")
    lines += [f"wall {res['wall_s']:.0f}s (start-up {res['startup_s']:.0f}s), training + scoring "
              f"{res['compute_s']:.0f}s; harness per Tune trial {res['per_trial_harness_s']:.3f}s of slot time",
              f"experiment state {res['experiment_state_kb_per_trial']:.1f} KB a trial; run directory "
              f"{res['run_dir_mb']:.0f} MB ({res['run_dir_mb'] * 1e3 / res['points']:.0f} KB a point)",
              f"killed with {res['killed_at_finished']} points finished; resume restarted in {res['restart_s']:.1f}s "
              f"and finished in {res['resume_wall_s']:.0f}s: {res['resumed_rows']} rows, "
              f"{res['resumed_unique_points']} distinct points, broken rules: {res['resumed_rule_problems'] or 'none'}"]
    return "\n".join(lines)


def write_json(res: dict, out: Path) -> None:
    write_atomic(out, lambda p: Path(p).write_text(json.dumps(res, indent=2)))
