"""`gansweep bench`: the harness measured against the machine and a plain loop, in one run.

    gansweep bench --out bench.json          # about 6 minutes on 2 CPU cores

  a. harness overhead: a subset of the mini preset's trials through the Ray engine
     (`run_sweep`, 2 slots) vs the bare trial function in 2 plain processes;
  b. training throughput (samples/s) of the trial's training loop vs a reference
     loop written the way most public GAN scripts are (torchvision MNIST with
     transforms, a DataLoader, one optimizer step per batch, D's gradients kept
     in the G step), for the smallest, a middle and the largest Table 1 point;
  c. model-FLOP utilisation: counted training FLOPs per second over the
     measured fp32 matrix-multiply throughput, same thread count, same run;
  d. scaling: the same trials with 1 and with 2 concurrent trials;
  e. packs: kernel launches (aten ops) per point-step and samples/s of a pack of
     PACK_K points (sweep/train/backends.py) against a point alone and the solo
     nn.Module step, for the smallest and the middle point;
  f. the cost model `gansweep plan` estimates time with (sweep/plan/cost.py): (b)'s
     step times and a DCGAN point's against their GFLOP a step, the scorer's rate
     and (a)'s harness cost per trial.

`gansweep bench --scale` (sweep/measure/scale.py) measures the engine on the whole paper plan.

Every number is measured here and now; targets are read off, never asserted.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from models.losses import LossParams
from sweep.measure.rates import (
    COST_POINTS,
    cost_model,
    matmul_gflops,
    scorer_images_per_s,
    step_row,
    train_flops_per_sample,
)
from sweep.plan.config import TrialConfig
from sweep.plan.grid import load_preset
from sweep.plan.packs import auto_pack_size
from sweep.record.layout import TUNE_DIR
from sweep.record.results import write_atomic
from sweep.record.rows import point_reports
from sweep.train.backends import ModuleBackend, StackedBackend
from sweep.train.data import load_mnist, resolve_root
from sweep.train.loop import run_trial, start_stack, train_epoch
from sweep.train.point import build_models, make_optimizer
from sweep.train.scoring import build_scorer

# Points of Table 1 for (b) and (c): EBGAN (its auto-encoder D is the larger D).
POINTS = {
    "smallest": dict(nLayerG=2, sizeG=400, nLayerD=2, sizeD=128),
    "middle": dict(nLayerG=3, sizeG=1600, nLayerD=3, sizeD=512),
    "largest": dict(nLayerG=5, sizeG=3200, nLayerD=5, sizeD=1024),
}
STEPS = {"smallest": 300, "middle": 60, "largest": 30}  # the largest with fewer steps
PACK_K = 12  # (e): a paper-grid GAN shape holds 12 points (2 x 2 optimizers x 3 lr)
PACK_KS = (4, PACK_K)  # (e): the pack sizes measured



# --------------------------------------------------------------------------- (b) and (c)
def ours_samples_per_s(cfg: TrialConfig, images, scorer) -> float:
    out = run_trial(cfg, images, scorer)
    return cfg.n_train // cfg.batch_size * cfg.batch_size / out.train_seconds


def reference_samples_per_s(cfg: TrialConfig, data_root, steps: int) -> float:
    """The loop of a typical public GAN script, same networks, losses and optimizers."""
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import MNIST

    torch.manual_seed(cfg.seed)
    fam, g, d = build_models(cfg, torch.device("cpu"))
    opt_g, opt_d = make_optimizer(cfg.optimG, g.parameters(), cfg), make_optimizer(cfg.optimD, d.parameters(), cfg)
    hp = LossParams(cfg.margin, cfg.pt_weight)
    tf = T.Compose([T.Pad(2), T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    loader = DataLoader(MNIST(str(resolve_root(data_root)), train=True, transform=tf),
                        batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=0)
    t0 = time.perf_counter()
    done = 0
    for x, _ in loader:
        x = x.view(x.shape[0], -1)
        z = torch.rand(x.shape[0], cfg.z_dim) * 2 - 1
        fake = g(z)
        loss_d = fam.d_loss(d(x), d(fake.detach()), hp)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = fam.g_loss(d(fake), hp)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        done += 1
        if done == steps:
            break
    return steps * cfg.batch_size / (time.perf_counter() - t0)




# --------------------------------------------------------------------------- (e) packs
def pack_profile(images, ks: tuple[int, ...] = (4,), steps: int = 20) -> dict:
    """Kernel launches (aten ops recorded by torch.profiler, nested ones included) per
    point-step and training samples/s, for the smallest and the middle point: the solo
    nn.Module step, a stack of one (how a point trains alone), and packs of each k; each
    pack's samples/s against a lone point's (`vs_lone_point`); the ratios named
    `..._pack_vs_...` read the largest k."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    k = max(ks)
    for name in ("smallest", "middle"):
        base = TrialConfig(family="ebgan", **POINTS[name], epochs=1, n_train=steps * 64, batch_size=64,
                           n_eval=10, seed=0)
        pack = [base.replace(seed=i) for i in range(k)]
        res = {}
        variants = [("module", pack[:1], False), ("stack_of_1", pack[:1], True)]
        variants += [(f"pack_of_{n}", pack[:n], True) for n in ks]
        for label, cfgs, stacked in variants:
            def epoch():
                runs = start_stack(cfgs, images)
                pack = StackedBackend(runs) if stacked else ModuleBackend(runs)
                t0 = time.perf_counter()
                train_epoch(pack)
                return time.perf_counter() - t0
            epoch()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                epoch()
            aten = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
            seconds = min(epoch() for _ in range(2))  # timed without the profiler
            res[label] = {"points": len(cfgs), "aten_ops_per_point_step": aten / (len(cfgs) * steps),
                          "samples_per_s": len(cfgs) * steps * 64 / seconds}
        for n in ks:
            res[f"pack_of_{n}"]["vs_lone_point"] = res[f"pack_of_{n}"]["samples_per_s"] / res["stack_of_1"]["samples_per_s"]
        res["launch_ratio_pack_vs_alone"] = (res[f"pack_of_{k}"]["aten_ops_per_point_step"]
                                             / res["stack_of_1"]["aten_ops_per_point_step"])
        res["throughput_ratio_pack_vs_module"] = (res[f"pack_of_{k}"]["samples_per_s"]
                                                  / res["module"]["samples_per_s"])
        res["throughput_ratio_stack_of_1_vs_module"] = (res["stack_of_1"]["samples_per_s"]
                                                        / res["module"]["samples_per_s"])
        out[name] = res
    return out


def fastest_safe_pack(packs: dict) -> int:
    """The largest K whose pack of the middle point trains at >= a lone point's samples/s (1 if none):
    what `--pack auto` may pick on this machine without slowing a sweep down."""
    ok = [v["points"] for label, v in packs["middle"].items()
          if label.startswith("pack_of_") and v["vs_lone_point"] >= 1.0]
    return max(ok, default=1)


# --------------------------------------------------------------------------- (a) and (d)
_WORKER: dict = {}


def _init_worker(data_root, threads):
    torch.set_num_threads(threads)
    mnist = load_mnist(data_root)
    _WORKER["images"] = mnist.train_images
    _WORKER["scorer"] = build_scorer(mnist.test_images)[0]


def _bare_trial(fields: dict) -> float:
    t0 = time.perf_counter()
    run_trial(TrialConfig(**fields), _WORKER["images"], _WORKER["scorer"])
    return time.perf_counter() - t0


def subset_sweep_file(config: Path, path: Path) -> list[TrialConfig]:
    """8 of the mini preset's 64 trials (GAN adam/{adam,sgd} x lr {1e-3,1e-4}, 2 EBGAN, 2 EBGAN-PT)."""
    mini = load_preset(config, "mini")
    doc = {"presets": {"bench": {
        "description": "8 trials of the mini preset, for gansweep bench", "seeds": [0],
        "settings": mini.settings,
        "grids": {
            "gan": {"nLayerG": [2], "nLayerD": [2], "sizeG": [400], "sizeD": [128],
                    "dropoutD": [False], "optimD": ["adam"], "optimG": ["adam", "sgd"],
                    "lr": [0.001, 0.0001]},
            "ebgan": {"nLayerG": [2], "nLayerD": [2], "sizeG": [400], "sizeD": [128],
                      "dropoutD": [True, False], "optimD": ["adam"], "optimG": ["adam"], "lr": [0.001]},
            "ebgan_pt": {"nLayerG": [2], "nLayerD": [2], "sizeG": [400], "sizeD": [128],
                         "dropoutD": [True, False], "optimD": ["adam"], "optimG": ["adam"], "lr": [0.001]},
        }}}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return list(load_preset(path, "bench").trials)


def engine_wall(sweep_file: Path, work: Path, name: str, data_root, max_concurrent: int) -> dict:
    """The subset through `gansweep run` in a fresh process (its own Ray instance), decomposed.

    From the trials' own wall-clock stamps (started_at, reported_at in Tune's
    result.json): the fixed cost before each slot's first trial starts
    (interpreter, imports, data, Ray and worker start-up) and after the last one
    ends (tables, Ray shutdown), and the per-trial overhead: time inside a trial
    that is not training or scoring, plus the gaps between consecutive trials of
    a worker.
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "sweep.cli", "run", "--config", str(sweep_file), "--preset", "bench",
           "--name", name, "--storage", str(work), "--num-cpus", "2", "--max-concurrent",
           str(max_concurrent), "--quiet"]
    if data_root:
        cmd += ["--data-root", str(data_root)]
    t0 = time.time()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    t1 = time.time()
    trials = []
    for f in (work / name / TUNE_DIR).glob("*/result.json"):
        last = json.loads(f.read_text().splitlines()[-1])  # a pack's last report holds all its points
        compute = sum(p["train_seconds"] + p["eval_seconds"] for p in point_reports(last))
        trials.append((last["pid"], last["started_at"], last["reported_at"], compute))
    by_slot: dict = {}
    for pid, start, end, compute in sorted(trials, key=lambda t: t[1]):
        by_slot.setdefault(pid, []).append((start, end, compute))
    # A worker's first trial also pays that worker's one-time set-up (about 2 s here):
    # it is counted with the fixed start-up, not as a per-trial cost.
    inside = sum(end - start - compute for runs in by_slot.values() for start, end, compute in runs[1:])
    gaps = sum(b[0] - a[1] for runs in by_slot.values() for a, b in zip(runs, runs[1:]))
    n_later = sum(len(runs) - 1 for runs in by_slot.values())
    first_setup = [runs[0][1] - runs[0][0] - runs[0][2] for runs in by_slot.values()]
    first = [runs[0][0] for runs in by_slot.values()]
    last = [runs[-1][1] for runs in by_slot.values()]
    return {"wall_s": t1 - t0,
            "before_first_trial_s": sum(first) / len(first) - t0 + sum(first_setup) / len(first_setup),
            "after_last_trial_s": t1 - max(last), "span_s": max(last) - min(first),
            "per_trial_overhead_s": (inside + gaps) / max(1, n_later)}


def _meet(barrier) -> None:
    barrier.wait()


def bare_wall(trials: list[TrialConfig], data_root, processes: int) -> float:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(processes, initializer=_init_worker,
                                            initargs=(data_root, 1)) as pool:
        # every worker has loaded MNIST and the scorer once all of them meet here
        barrier = manager.Barrier(processes)
        pool.map(_meet, [barrier] * processes, chunksize=1)
        order = sorted(trials, key=lambda t: (t.family, t.point_id))
        t0 = time.perf_counter()
        list(pool.imap_unordered(_bare_trial, [t.as_dict() for t in order], chunksize=1))
        return time.perf_counter() - t0


# --------------------------------------------------------------------------- the table
def run_bench(config: Path, data_root, out: Path | None, log=print) -> dict:
    torch.set_num_threads(1)  # one trial's threads, as a sweep runs them (--cpus-per-trial 1)
    res: dict = {"machine": f"{platform.machine()}, {mp.cpu_count()} cores, torch {torch.__version__}",
                 "threads_per_trial": 1}
    mnist = load_mnist(data_root)
    scorer, _ = build_scorer(mnist.test_images)

    log("(c) fp32 matrix multiply, 1 thread ...")
    peak = matmul_gflops()
    res["matmul_gflops_1_thread"] = peak

    res["throughput"] = {}
    rows: dict[str, list] = {"mlp": []}
    for name, axes in POINTS.items():
        steps = STEPS[name]
        cfg = TrialConfig(family="ebgan", **axes, epochs=1, n_train=steps * 64, batch_size=64,
                          n_eval=10, seed=0)
        log(f"(b) {name} point {cfg.point_id}: {steps} steps ...")
        ours = ours_samples_per_s(cfg, mnist.train_images, scorer)
        ref = reference_samples_per_s(cfg, data_root, steps)
        flops = train_flops_per_sample(cfg)
        res["throughput"][name] = {
            "point": cfg.point_id, "steps": steps, "ours_samples_per_s": ours,
            "reference_samples_per_s": ref, "speedup": ours / ref,
            "train_gflop_per_sample": flops / 1e9, "ours_gflops": ours * flops / 1e9,
            "mfu": ours * flops / 1e9 / peak, "reference_mfu": ref * flops / 1e9 / peak}
        rows["mlp"].append(step_row(cfg, ours))
    for arch, (axes, steps) in COST_POINTS.items():
        cfg = TrialConfig(**axes, epochs=1, n_train=steps * 64, batch_size=64, n_eval=10, seed=0)
        log(f"(f) {arch} point {cfg.point_id}: {steps} steps ...")
        rows[arch] = [step_row(cfg, ours_samples_per_s(cfg, mnist.train_images, scorer))]
    scorer_rate = scorer_images_per_s(torch.device("cpu"), scorer)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trials = subset_sweep_file(config, work / "bench.yaml")
        log(f"(a) {len(trials)} mini trials: bare trial function in 2 processes ...")
        bare2 = bare_wall(trials, data_root, 2)
        log("(a) the same through gansweep run, 2 concurrent ...")
        run2 = engine_wall(work / "bench.yaml", work, "c2", data_root, 2)
        log("(d) the same through gansweep run, 1 concurrent ...")
        run1 = engine_wall(work / "bench.yaml", work, "c1", data_root, 1)
    n_mini = len(load_preset(config, "mini").trials)
    bare_per_trial = bare2 * 2 / len(trials)  # slot-seconds of one bare trial
    fixed = run2["before_first_trial_s"] + run2["after_last_trial_s"]
    mini_overhead = fixed + run2["per_trial_overhead_s"] * n_mini / 2
    res["harness"] = {
        "trials": len(trials), "bare_wall_s_2_processes": bare2, "run_wall_s_2_concurrent": run2["wall_s"],
        "fixed_before_first_trial_s": run2["before_first_trial_s"],
        "fixed_after_last_trial_s": run2["after_last_trial_s"],
        "per_trial_overhead_s": run2["per_trial_overhead_s"],
        "bare_trial_s": bare_per_trial,
        "mini_trials": n_mini,
        "mini_projected_overhead_share": mini_overhead / (mini_overhead + bare_per_trial * n_mini / 2),
        "subset_overhead_share": 1 - bare2 / run2["wall_s"]}
    res["scaling"] = {"run_wall_s_1_concurrent": run1["wall_s"], "run_wall_s_2_concurrent": run2["wall_s"],
                      "speedup_2_vs_1_wall": run1["wall_s"] / run2["wall_s"],
                      # throughput while trials run, fixed start-up and shutdown excluded
                      "speedup_2_vs_1": run1["span_s"] / run2["span_s"]}
    log(f"(e) packs of {', '.join(map(str, PACK_KS))}: kernel launches and samples/s against a point alone ...")
    res["packs"] = pack_profile(mnist.train_images, ks=PACK_KS)
    res["targets"] = targets(res)
    res["cost_model"] = cost_model(res, rows, scorer_rate).to_json()
    if out is not None:
        write_atomic(out, lambda p: Path(p).write_text(json.dumps(res, indent=2)))
    return res


def targets(res: dict) -> list[dict]:
    t = res["throughput"]
    rows = [
        ("harness overhead share, mini sweep (projected)", res["harness"]["mini_projected_overhead_share"],
         "<=", 0.03),
        ("training step vs reference, smallest", t["smallest"]["speedup"], ">=", 1.2),
        ("training step vs reference, middle", t["middle"]["speedup"], ">=", 1.0),
        ("training step vs reference, largest", t["largest"]["speedup"], ">=", 1.0),
        ("model-FLOP utilisation, middle", t["middle"]["mfu"], ">=", 0.5),
        ("2 concurrent trials vs 1 (throughput while running)", res["scaling"]["speedup_2_vs_1"], ">=", 1.7),
        (f"pack of {PACK_K}: launches per point-step vs alone, middle",
         res["packs"]["middle"]["launch_ratio_pack_vs_alone"], "<=", 1.5 / PACK_K),
        (f"pack of {PACK_K}: samples/s vs solo module step, middle",
         res["packs"]["middle"]["throughput_ratio_pack_vs_module"], ">=", 0.9),
        (f"pack of {PACK_K}: samples/s vs a lone point, middle",
         res["packs"]["middle"][f"pack_of_{PACK_K}"]["vs_lone_point"], ">=", 1.0),
        # --pack auto on this CPU, against the largest measured K that is no slower than a lone point
        ("--pack auto's K on CPU vs the largest K at >= 1.0x", auto_pack_size(7168, "cpu"), "<=",
         fastest_safe_pack(res["packs"])),
    ]
    return [{"target": name, "measured": v, "goal": f"{op} {goal:g}",
             "met": v <= goal if op == "<=" else v >= goal} for name, v, op, goal in rows]


def format_table(res: dict) -> str:
    lines = [f"gansweep bench on {res['machine']}; 1 thread per trial", ""]
    lines.append(f"{'target':<52} {'measured':>9} {'goal':>8}  met")
    for t in res["targets"]:
        lines.append(f"{t['target']:<52} {t['measured']:>9.3f} {t['goal']:>8}  {'yes' if t['met'] else 'NO'}")
    lines += ["", f"{'training throughput':<12} {'ours/s':>9} {'ref/s':>9} {'ratio':>6} {'GFLOP/s':>8} {'MFU':>6}"]
    for name, r in res["throughput"].items():
        lines.append(f"{name:<12} {r['ours_samples_per_s']:>9.0f} {r['reference_samples_per_s']:>9.0f} "
                     f"{r['speedup']:>6.2f} {r['ours_gflops']:>8.1f} {r['mfu']:>6.1%}")
    h, s = res["harness"], res["scaling"]
    lines += ["", f"fp32 matmul, 1 thread: {res['matmul_gflops_1_thread']:.1f} GFLOP/s",
              f"harness, {h['trials']} mini trials on 2 slots: gansweep run {h['run_wall_s_2_concurrent']:.1f}s "
              f"vs bare loop {h['bare_wall_s_2_processes']:.1f}s",
              f"  fixed: {h['fixed_before_first_trial_s']:.1f}s before the first trials train (interpreter, "
              f"imports, data, Ray and worker start), {h['fixed_after_last_trial_s']:.1f}s after the last "
              "(tables, Ray shutdown)",
              f"  per trial: {h['per_trial_overhead_s']:.2f}s of slot time beside {h['bare_trial_s']:.1f}s "
              f"of training and scoring",
              f"  projected for the {h['mini_trials']}-trial mini sweep: {h['mini_projected_overhead_share']:.1%} "
              f"of its wall time",
              f"scaling: 1 concurrent {s['run_wall_s_1_concurrent']:.1f}s, 2 concurrent "
              f"{s['run_wall_s_2_concurrent']:.1f}s wall ({s['speedup_2_vs_1_wall']:.2f}x); "
              f"{s['speedup_2_vs_1']:.2f}x while trials run"]
    lines += ["", f"{'packs (1 thread)':<22} {'aten ops/point-step':>20} {'samples/s':>10} {'vs alone':>9}"]
    for name, r in res["packs"].items():
        for label, v in r.items():
            if isinstance(v, dict):
                vs = f"{v['vs_lone_point']:>8.2f}x" if "vs_lone_point" in v else ""
                lines.append(f"{name + ' ' + label:<22} {v['aten_ops_per_point_step']:>20.1f} "
                             f"{v['samples_per_s']:>10.0f} {vs:>9}")
    lines.append(f"--pack auto on CPU: {auto_pack_size(7168, 'cpu')}; the largest pack measured at >= 1.0x a lone "
                 f"point's samples/s: {fastest_safe_pack(res['packs'])} (1: none)")
    if "cost_model" in res:
        c = res["cost_model"]
        fits = "; ".join(f"{arch} {f['fixed_s'] * 1e3:.2f} ms + {f['s_per_gflop'] * 1e3:.1f} ms/GFLOP "
                         f"({1 / f['s_per_gflop']:.0f} GFLOP/s)" for arch, f in c["fits"].items() if arch != "*")
        lines += ["", f"cost model (gansweep plan): a step {fits}; scorer {c['scorer_images_per_s']:,.0f} images/s; "
                      f"{c['trial_fixed_s']:.1f} s a trial"]
    return "\n".join(lines)

