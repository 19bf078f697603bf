"""`gansweep bench --device cuda[:N]`: what a GPU changes, in sections b, d and e, TF32 off and on.

    gansweep bench --device cuda --out bench-cuda.json     # about 3 minutes on one H100

  b. throughput: training samples/s of the smallest, middle and largest Table 1 point alone,
     and model-FLOP utilisation against the device's own matmul rate measured in the same run
     (fp32 with TF32 off, TF32 with it on);
  d. concurrency: 1, 2 and 4 processes training the middle point at once on the device, as
     `--gpus-per-trial 1, 0.5, 0.25` place trials: their total samples/s against one;
  e. packs: for each point, packs of 1, 4, 12 and 28 points of its shape (sweep/train/backends.py):
     samples/s, its ratio to the point alone, and kernel launches (CUDA kernels on a GPU, aten
     ops on CPU) per point-step;
  and the scorer's images/s, which the paper projection (sweep/measure/device_check.py) needs.

Every result carries the device's name. The same code runs on CPU with BUDGETS["tiny"]
(tests/test_device_check.py); `gansweep bench` without --device is the CPU bench (bench.py).
"""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass

import torch

from sweep.measure.bench import POINTS
from sweep.measure.rates import scorer_images_per_s, sync, train_flops_per_sample
from sweep.plan.config import TrialConfig
from sweep.train.backends import backend_for
from sweep.train.data import load_mnist
from sweep.train.loop import set_tf32, start_stack, train_epoch
from sweep.train.point import prepare_data
from sweep.train.scoring import build_scorer


@dataclass(frozen=True)
class Budget:
    points: dict  # name -> the shape axes of that point (EBGAN, as bench.POINTS)
    steps: dict  # name -> timed training steps of one measurement
    pack_sizes: tuple  # (e): points per pack
    processes: tuple  # (d): processes sharing the device
    matmul_n: int  # the square matmul that measures the device's rate


TINY = dict(nLayerG=2, sizeG=32, nLayerD=2, sizeD=16)
BUDGETS = {
    "gpu": Budget(POINTS, {"smallest": 200, "middle": 100, "largest": 40}, (1, 4, 12, 28), (1, 2, 4), 8192),
    # the same code path on CPU in seconds: tests/test_device_check.py, `device_check --device cpu`
    "tiny": Budget({"smallest": TINY, "middle": {**TINY, "sizeG": 64}, "largest": {**TINY, "sizeG": 96}},
                   {"smallest": 4, "middle": 4, "largest": 4}, (1, 2), (1, 2), 256),
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs), torch {torch.__version__}"
    import platform
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def matmul_tflops(device: torch.device, n: int, tf32: bool) -> float:
    """Best of 5 square fp32 products: the rate MFU is measured against."""
    set_tf32(tf32)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e12


def point(name: str, budget: Budget, tf32: bool, seed: int = 0) -> TrialConfig:
    steps = budget.steps[name]
    return TrialConfig(family="ebgan", **budget.points[name], epochs=1, n_train=steps * 64, batch_size=64,
                       n_eval=10, seed=seed, tf32=tf32)


def pack_of(cfg: TrialConfig, k: int) -> list[TrialConfig]:
    """k points of cfg's shape, as a sweep packs them: other seeds, optimizers and lr."""
    lrs = (1e-3, 1e-4, 2e-4)
    return [cfg.replace(seed=i, lr=lrs[i % 3], optimG=("adam", "sgd")[i // 3 % 2]) for i in range(k)]


def epoch_seconds(cfgs: list[TrialConfig], data: torch.Tensor, device: torch.device) -> float:
    """One training epoch of these points as one pack, warm (a first epoch builds cuBLAS
    handles, caches and the allocator's pool), on the device's clock."""
    def one() -> float:
        pack = backend_for(start_stack(cfgs, data, device))
        sync(device)
        t0 = time.perf_counter()
        train_epoch(pack)  # ends in .tolist() of the metrics: the device has finished
        sync(device)
        return time.perf_counter() - t0

    one()  # warm-up
    return one()


def launches_per_point_step(cfgs: list[TrialConfig], data: torch.Tensor, device: torch.device) -> float:
    """CUDA kernels (on a GPU) or aten ops (on CPU) per point-step, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    runs = start_stack(cfgs, data, device)
    pack = backend_for(runs)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        train_epoch(pack)
        sync(device)
    steps = cfgs[0].n_train // cfgs[0].batch_size
    if device.type == "cuda":
        n = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    else:
        n = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    return n / (len(cfgs) * steps)


def throughput(device, data, budget: Budget, tf32: bool, rate_tflops: float) -> dict:
    """(b): each point alone."""
    out = {}
    for name in budget.points:
        cfg = point(name, budget, tf32)
        seconds = epoch_seconds([cfg], data, device)
        sps = cfg.n_train / seconds
        flops = train_flops_per_sample(cfg)
        out[name] = {"point": cfg.point_id, "samples_per_s": sps, "step_ms": 1e3 * seconds * cfg.batch_size
                     / cfg.n_train, "train_gflop_per_step": flops * cfg.batch_size / 1e9,
                     "tflops": sps * flops / 1e12, "mfu": sps * flops / 1e12 / rate_tflops}
    return out


def packs(device, data, budget: Budget, tf32: bool) -> dict:
    """(e): packs of each size per point; ratio is the pack's samples/s over the point alone's."""
    out = {}
    for name in budget.points:
        base, rows = point(name, budget, tf32), {}
        for k in budget.pack_sizes:
            cfgs = pack_of(base, k)
            sps = k * base.n_train / epoch_seconds(cfgs, data, device)
            rows[k] = {"samples_per_s": sps, "launches_per_point_step": launches_per_point_step(cfgs, data, device)}
        for k in budget.pack_sizes:
            rows[k]["ratio_vs_alone"] = rows[k]["samples_per_s"] / rows[budget.pack_sizes[0]]["samples_per_s"]
        out[name] = {str(k): v for k, v in rows.items()}
    return out


# --------------------------------------------------------------------------- (d)
BARRIER_TIMEOUT_S = 600  # a process that failed before its barrier must not hang the others forever
_barriers: dict = {}  # n -> the barrier of n processes, in each pool process (set by _init_process)
_data: dict = {}  # (data_root, n_train, device) -> training data, kept by each pool process


def _init_process(barriers: dict) -> None:
    """A pool process's start: the barriers arrive once, with the process (they cannot go with a task)."""
    _barriers.update(barriers)


def _ready(n: int) -> None:
    """A pool process waits here for the others: by then it has imported this module, and with it
    torch and the training code (a process still importing would take CPU from the one timed)."""
    _barriers[n].wait(BARRIER_TIMEOUT_S)


def _concurrent(args) -> float:
    """One process of (d): the middle point on the device, timed after all n processes are ready."""
    device, fields, data_root, n = args

    torch.set_num_threads(1)
    cfg = TrialConfig(**fields)
    key = (str(data_root), cfg.n_train, device)
    if key not in _data:
        _data[key] = prepare_data(load_mnist(data_root).train_images, cfg.n_train, device)
    epoch_seconds([cfg], _data[key], torch.device(device))  # warm
    _barriers[n].wait(BARRIER_TIMEOUT_S)
    return cfg.n_train / epoch_seconds([cfg], _data[key], torch.device(device))


def process_pool(budget: Budget):
    """The processes of (d), started once for every n and both TF32 settings: as many as the largest
    n, each importing torch (on a GPU also making its CUDA context) and reading MNIST once. A manager
    and a pool for each n and TF32 setting started 20 interpreters for the GPU budget, 14 of them
    importing torch; now 4 (the CPU dry run: 2, 5 before). A task blocks at its barrier until n
    tasks have arrived, so n tasks run in n different processes and the others stay idle.
    Spawned, not forked: a forked CUDA context does not work."""
    ctx = mp.get_context("spawn")
    n = max(budget.processes)
    pool = ctx.Pool(n, initializer=_init_process, initargs=({k: ctx.Barrier(k) for k in budget.processes},))
    pool.map(_ready, [n] * n, chunksize=1)
    return pool


def concurrency(pool, device: torch.device, data_root, budget: Budget, tf32: bool) -> dict:
    """(d): n processes each training the middle point at once (as n fractional-GPU trials)."""
    cfg = point("middle", budget, tf32)
    out = {}
    for n in budget.processes:
        rates = pool.map(_concurrent, [(str(device), cfg.as_dict(), data_root, n)] * n, chunksize=1)
        out[str(n)] = {"total_samples_per_s": sum(rates)}
    one = out[str(budget.processes[0])]["total_samples_per_s"]
    for v in out.values():
        v["speedup_vs_one"] = v["total_samples_per_s"] / one
    return out


# --------------------------------------------------------------------------- all of it
def run_device_bench(device: str, data_root, budget: Budget, log=print) -> dict:
    dev = torch.device(device)
    mnist = load_mnist(data_root)
    n = max(budget.steps.values()) * 64
    data = prepare_data(mnist.train_images, n, dev)  # (n, 1024) on the device
    scorer = build_scorer(mnist.test_images, dev)[0]
    res = {"device": device_name(dev), "device_type": dev.type, "scorer_images_per_s": scorer_images_per_s(dev, scorer)}
    pool = None  # (d)'s processes: started when (d) first runs, kept for the second TF32 setting
    try:
        for tf32 in ((False, True) if dev.type == "cuda" else (False,)):  # TF32 is a CUDA setting
            key = "tf32_on" if tf32 else "tf32_off"
            log(f"{key}: matmul rate ...")
            rate = matmul_tflops(dev, budget.matmul_n, tf32)
            r = res[key] = {"matmul_tflops": rate}
            log(f"{key}: (b) throughput ...")
            r["throughput"] = throughput(dev, data, budget, tf32, rate)
            log(f"{key}: (e) packs of {', '.join(map(str, budget.pack_sizes))} ...")
            r["packs"] = packs(dev, data, budget, tf32)
            log(f"{key}: (d) {', '.join(map(str, budget.processes))} processes at once ...")
            pool = pool or process_pool(budget)
            r["concurrency"] = concurrency(pool, dev, data_root, budget, tf32)
    finally:
        if pool is not None:
            pool.terminate()
    set_tf32(False)
    return res


def format_device_table(res: dict) -> str:
    lines = [f"gansweep bench on {res['device']}", f"scorer: {res['scorer_images_per_s']:,.0f} images/s"]
    for key in ("tf32_off", "tf32_on"):
        if key not in res:
            continue
        r = res[key]
        lines += ["", f"[{key.replace('_', ' ')}] matmul {r['matmul_tflops']:.1f} TFLOP/s"]
        for name, t in r["throughput"].items():
            lines.append(f"  (b) {name:<9} alone {t['samples_per_s']:>10,.0f} samples/s  {t['step_ms']:7.3f} ms/step  "
                         f"{t['tflops']:7.3f} TFLOP/s  MFU {t['mfu']:6.1%}")
        for name, ks in r["packs"].items():
            cells = "  ".join(f"K={k}: {v['samples_per_s']:,.0f}/s {v['ratio_vs_alone']:.2f}x "
                              f"{v['launches_per_point_step']:.0f} launches" for k, v in ks.items())
            lines.append(f"  (e) {name:<9} {cells}")
        for n, c in r["concurrency"].items():
            lines.append(f"  (d) {n} at once: {c['total_samples_per_s']:,.0f} samples/s, {c['speedup_vs_one']:.2f}x one")
    return "\n".join(lines)
