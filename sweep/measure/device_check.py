"""The device check: everything a GPU changes, measured in one call of at most 8 minutes.

    tools/device-check.sh --out device-check.json        # on a machine with a GPU
    tools/device-check.sh --device cpu                   # a dry run of every step on CPU, tiny budgets

Steps, each timed, each a row of one summary table (ok, skipped and why, or FAILED and why):
  device       torch, its CUDA build, the GPU's name, memory and multiprocessors;
  equivalence  a pack trains each of its points as alone (the four families, 4 neighbours,
               2 epochs): bit-identical on CPU with one thread, to PACK_RTOL on CUDA, where
               cuBLAS may pick another algorithm for another batch count; and a point's RNG
               streams equal torch.manual_seed's on the device (sweep/train/point.py);
  bench        `gansweep bench --device D` (sweep/measure/devbench.py): b, d, e, TF32 off and on;
  sweep        48 points through Ray, --gpus-per-trial 0.25 and --pack 12: wall, overhead share
               (skipped where Ray is not installed);
  projection   the paper grid's device-hours from the rates measured in bench, solo and packed.
A step that fails does not stop the others. Exit status: 0 every step ran, 1 a step failed,
2 the device is not there (the CPU-side steps still run first).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweep.measure.devbench import BUDGETS, device_name, run_device_bench
from sweep.measure.rates import train_flops_per_sample
from sweep.plan.config import TrialConfig
from sweep.plan.cost import fit_step_time
from sweep.plan.grid import load_preset
from sweep.plan.packs import auto_pack_size, make_packs, stacks_of
from sweep.record.layout import MANIFEST
from sweep.record.results import write_atomic
from sweep.train.data import DataError, load_mnist
from sweep.train.loop import run_stack, run_trial, start_stack
from sweep.train.point import NetPool, global_streams, prepare_data, seeded_streams, set_global_streams
from sweep.train.scoring import build_scorer

DEADLINE_S = 8 * 60
PACK_RTOL = 1e-3  # tests/test_packs.py: a pack against alone at 2 CPU threads, float rounding
SWEEP_TIMEOUT_S = 180
REPO = Path(__file__).resolve().parents[2]


def sweep_file(tiny: bool) -> str:
    """48 points: 8 GAN shapes (nLayerD x sizeD x dropoutD) of 6 (optimG x lr), 4 packs of 12."""
    size_g, size_d, budget = ((32, "[16, 32]", "epochs: 1, n_train: 256, n_eval: 100") if tiny else
                              (400, "[128, 256]", "epochs: 2, n_train: 4096, n_eval: 500"))
    return f"""presets:
  check48:
    description: the device check's sweep (sweep/measure/device_check.py)
    seeds: [0]
    settings: {{{budget}, batch_size: 64}}
    grids:
      gan: {{nLayerG: [2], nLayerD: [2, 3], sizeG: [{size_g}], sizeD: {size_d}, dropoutD: [true, false],
            optimD: [adam], optimG: [adam, sgd], lr: [0.001, 0.0001, 0.0002]}}
"""


def step_plan(work: Path, tiny: bool) -> dict:
    """The CPU side, which runs with or without a device: the check's sweep file and the paper plan."""
    f = work / "check48.yaml"
    f.write_text(sweep_file(tiny))
    check = load_preset(f, "check48").trials
    paper = load_preset(REPO / "sweep" / "presets.yaml", "paper").trials
    k = auto_pack_size(len(paper), "cuda")
    stacks = [len(s) for pk in make_packs(paper, k) for s in stacks_of(pk.points)]
    return {"check_points": len(check), "check_trials": len(make_packs(check, 12)), "paper_points": len(paper),
            "paper_auto_k": k, "paper_stacks": len(stacks), "paper_points_stacked": sum(n for n in stacks if n > 1)}


def step_device(device: str) -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NoDevice(f"no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
                           "nothing measured; run it on a machine with a GPU, or pass --device cpu for a dry run")
        out["name"] = device_name(torch.device(device))
    return out


def step_equivalence(device: str, images, scorer) -> dict:
    """Max relative difference between a pack and its points alone, over every float metric."""
    import math

    import torch

    torch.set_num_threads(1)  # one thread: bit-identical on CPU (tests/test_packs.py)
    exact = device == "cpu"
    worst = 0.0
    for family in ("gan", "ebgan", "ebgan_pt", "began"):
        base = TrialConfig(family=family, nLayerG=2, nLayerD=2, sizeG=32, sizeD=16, epochs=2, n_train=256,
                           batch_size=32, n_eval=100, eval_every=1, seed=0)
        points = [base.replace(seed=i % 2, lr=(1e-3, 2e-4)[i // 2]) for i in range(4)]
        packed = run_stack(points, images, scorer, device)
        for cfg, run in zip(points, packed):
            alone = run_trial(cfg, images, scorer, device)
            for got, want in zip(run.history, alone.history):
                for k, v in want.items():
                    if isinstance(v, float) and not k.endswith("seconds") and math.isfinite(v):
                        worst = max(worst, abs(got[k] - v) / max(abs(v), 1e-9))
    ok = worst == 0.0 if exact else worst <= PACK_RTOL
    tol = "0 (one CPU thread)" if exact else f"{PACK_RTOL:g} relative"
    if not ok:
        raise StepFailed(f"a pack differs from its points alone by {worst:.3g} relative (tolerance {tol})")
    # a point's streams are read from fresh generators (sweep/train/point.py): torch.manual_seed's, here too

    dev = torch.device(device)
    outer = global_streams(dev)
    torch.manual_seed(1234)
    want = global_streams(dev)
    set_global_streams(outer, dev)
    streams = all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(seeded_streams(1234, dev), want))
    if not streams:
        raise StepFailed("a point's RNG streams differ from torch.manual_seed's on this device "
                         "(sweep/train/point.py seeded_streams)")
    # a worker redraws a finished point's nets for the next of its shape (sweep/train/point.py NetPool):
    # on the device, the same values as nets built anew (drawn on the CPU, then moved)

    data = prepare_data(images, 64, dev)
    pool = NetPool()
    for cfg in (TrialConfig(family="gan", nLayerG=3, sizeG=32, nLayerD=3, sizeD=16, dropoutD=True, n_train=64),
                TrialConfig(family="ebgan", nLayerG=2, sizeG=32, nLayerD=3, sizeD=16, n_train=64)):
        done, = start_stack([cfg], data, dev, pool=pool)
        done.status = "ok"
        done.release_nets(pool)
        pooled, = start_stack([cfg.replace(seed=3)], data, dev, pool=pool)
        fresh, = start_stack([cfg.replace(seed=3)], data, dev)
        for a, b in ((pooled.g, fresh.g), (pooled.d, fresh.d)):
            sa, sb = a.state_dict(), b.state_dict()
            if list(sa) != list(sb) or not all(torch.equal(sa[k], sb[k]) and sa[k].device == sb[k].device for k in sa):
                raise StepFailed("a redrawn net differs from one built anew on this device "
                                 "(models/networks.py Redrawable)")
    return {"max_relative_difference": worst, "tolerance": tol, "families": 4, "points_each": 4,
            "streams_as_manual_seed": streams, "redrawn_as_built": pool.hits == 4}


def step_sweep(device: str, data_root, work: Path, tiny: bool) -> dict:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise StepSkipped("Ray is not installed on this machine (the project's install brings it)") from None
    f = work / "check48.yaml"  # written by step_plan
    gpus = ["--gpus-per-trial", "0.25"] if device.startswith("cuda") else []
    cmd = [sys.executable, "-m", "sweep.cli", "run", "--config", str(f), "--preset", "check48", "--name", "check48",
           "--storage", str(work / "runs"), "--pack", "12", "--num-cpus", str(min(os.cpu_count() or 2, 8)),
           "--quiet", *gpus, *(["--data-root", str(data_root)] if data_root else [])]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise StepFailed(f"gansweep run exited {r.returncode}: {r.stderr.strip().splitlines()[-1:] or ''}")
    session = json.loads((work / "runs" / "check48" / MANIFEST).read_text())["sessions"][-1]
    return {"points": sum(session["counts"].values()), "counts": session["counts"], "wall_s": wall,
            "sweep_wall_s": session["wall_seconds"], "compute_s": session["compute_seconds"],
            "overhead_share": session["overhead_share"], "slots": session["slots"]}


def project(bench: dict, key: str) -> dict:
    """Device-hours of the paper preset from one TF32 setting's measured rates."""
    r = bench[key]
    solo = fit_step_time([(t["train_gflop_per_step"], t["step_ms"] / 1e3) for t in r["throughput"].values()])
    k = max(int(k) for k in next(iter(r["packs"].values())))
    packed = fit_step_time([(t["train_gflop_per_step"],
                             t["step_ms"] / 1e3 / r["packs"][name][str(k)]["ratio_vs_alone"])
                            for name, t in r["throughput"].items()])
    conc = r["concurrency"][max(r["concurrency"], key=int)]["speedup_vs_one"]
    trials = load_preset(REPO / "sweep" / "presets.yaml", "paper").trials
    stack = {p.point_id: len(s) for pk in make_packs(trials, auto_pack_size(len(trials), "cuda"))
             for s in stacks_of(pk.points) for p in s}
    hours = {"solo": 0.0, "packed": 0.0}
    for t in trials:
        steps = t.epochs * (t.n_train // t.batch_size)
        gflop = train_flops_per_sample(t) * t.batch_size / 1e9
        score = -(-t.epochs // t.eval_every) * t.n_eval / bench["scorer_images_per_s"]
        hours["solo"] += steps * (solo.fixed_s + solo.s_per_gflop * gflop) + score
        fit = packed if stack[t.point_id] > 1 else solo
        hours["packed"] += steps * (fit.fixed_s + fit.s_per_gflop * gflop) + score
    return {"points": len(trials), "pack_k_measured": k, "concurrent_speedup": conc,
            "solo_step_fixed_ms": 1e3 * solo.fixed_s, "packed_step_fixed_ms": 1e3 * packed.fixed_s,
            **{f"{m}_hours": h / 3600 / conc for m, h in hours.items()}}


class NoDevice(Exception):
    """The device asked for is not there: the check ends, exit status 2."""


class StepFailed(Exception):
    """A step ran and found something wrong: its row says what; exit status 1."""


class StepSkipped(Exception):
    """A step that cannot run here (no Ray, no time left): its row says why."""


# --------------------------------------------------------------------------- the table
def run_checks(device: str, data_root, log=print) -> tuple[int, list[dict], dict]:
    """Every step in order; (exit status, the table's rows, every step's figures)."""
    tiny = device == "cpu"
    t_start, rows, figures = time.perf_counter(), [], {}
    work = Path(tempfile.mkdtemp(prefix="gansweep-device-check-"))
    ctx: dict = {}

    def equivalence():
        mnist = ctx.setdefault("mnist", load_mnist(data_root))
        return step_equivalence(device, mnist.train_images, build_scorer(mnist.test_images, device)[0])

    def bench():
        ctx["bench"] = run_device_bench(device, data_root, BUDGETS["tiny" if tiny else "gpu"],
                                        log=lambda m: log(f"  bench: {m}"))
        return ctx["bench"]

    def projection():
        if "bench" not in ctx:
            raise StepSkipped("bench did not run")
        return {key: project(ctx["bench"], key) for key in ("tf32_off", "tf32_on") if key in ctx["bench"]}

    steps = [("plan", lambda: step_plan(work, tiny)), ("device", lambda: step_device(device)), ("equivalence", equivalence), ("bench", bench),
             ("sweep", lambda: step_sweep(device, data_root, work, tiny)), ("projection", projection)]
    try:
        status = run_steps(steps, rows, figures, t_start, log)
    finally:  # the check's sweep folder: kept only to look into a sweep that failed
        if any(r["state"] == "FAILED" and r["step"] == "sweep" for r in rows):
            log(f"device check: its work folder is kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status, rows, figures


def run_steps(steps, rows: list, figures: dict, t_start: float, log) -> int:
    """Each step in order, a row each; (exit status) 2 at once for no device, else 1 if any failed."""
    status = 0
    for name, fn in steps:
        left = DEADLINE_S - (time.perf_counter() - t_start)
        log(f"device check: {name} ...")
        t0 = time.perf_counter()
        try:
            if left < 30:
                raise StepSkipped(f"{DEADLINE_S // 60} minutes are spent")
            figures[name] = fn()
            state, note = "ok", summary(name, figures[name])
        except NoDevice as e:
            rows.append({"step": name, "state": "FAILED", "seconds": time.perf_counter() - t0, "note": str(e)})
            rows += [{"step": n, "state": "skipped", "seconds": 0.0, "note": "no device"}
                     for n, _ in steps[len(rows):]]
            return 2
        except StepSkipped as e:
            state, note = "skipped", str(e)
        except Exception as e:  # noqa: BLE001 - one step's failure is a row, and the rest still run
            state, note, status = "FAILED", f"{type(e).__name__}: {e}".splitlines()[0][:300], 1
        rows.append({"step": name, "state": state, "seconds": time.perf_counter() - t0, "note": note})
    return status


def summary(step: str, f: dict) -> str:
    """The table's one line of figures for a step that ran."""
    if step == "plan":
        return (f"check sweep {f['check_points']} points in {f['check_trials']} trials; paper {f['paper_points']:,} "
                f"points, auto K {f['paper_auto_k']}: {f['paper_stacks']:,} stacks, {f['paper_points_stacked']:,} "
                "points stacked")
    if step == "device":
        return f.get("name") or f"CPU, torch {f['torch']}"
    if step == "equivalence":
        return f"{f['families']} families x {f['points_each']} points: max difference {f['max_relative_difference']:.2g} " \
               f"(tolerance {f['tolerance']})"
    if step == "bench":
        r = f["tf32_off"]
        mid = r["throughput"]["middle"]
        k = max(r["packs"]["middle"], key=int)
        return (f"middle point {mid['samples_per_s']:,.0f} samples/s alone (MFU {mid['mfu']:.1%}), pack of {k} "
                f"{r['packs']['middle'][k]['ratio_vs_alone']:.2f}x; matmul {r['matmul_tflops']:.1f} TFLOP/s")
    if step == "sweep":
        return (f"{f['points']} points {f['counts']} in {f['wall_s']:.0f} s, {f['slots']} slots, harness overhead "
                f"{f['overhead_share']:.0%}")
    if step == "projection":
        return "; ".join(f"{k.replace('_', ' ')}: {p['solo_hours']:.1f} h solo, {p['packed_hours']:.1f} h packed"
                         for k, p in f.items())
    raise AssertionError(step)


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'step':<12} {'state':<8} {'seconds':>7}  figures"]
    lines += [f"{r['step']:<12} {r['state']:<8} {r['seconds']:>7.1f}  {r['note']}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/device-check.sh", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run (default: cuda)")
    ap.add_argument("--out", type=Path, default=Path("device-check.json"), help="the figures as JSON")
    ap.add_argument("--data-root", default=None, help="MNIST's folder (default: $GANSWEEP_DATA)")
    a = ap.parse_args(argv)
    if not (a.device == "cpu" or a.device.startswith("cuda")):
        print(f"device check: --device {a.device}: expected cuda, cuda:N or cpu", file=sys.stderr)
        return 2
    try:
        load_mnist(a.data_root)
    except DataError as e:
        print(f"device check: {e}", file=sys.stderr)
        return 2

    status, rows, figures = run_checks(a.device, a.data_root, log=lambda m: print(m, file=sys.stderr, flush=True))
    write_atomic(a.out, lambda p: Path(p).write_text(json.dumps({"rows": rows, "figures": figures}, indent=2)))
    print(format_rows(rows), flush=True)
    if status == 2:
        print(f"device check: {next(r['note'] for r in rows if r['state'] == 'FAILED')}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
