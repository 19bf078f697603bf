"""The machine's rates: fp32 matmul, the scorer, training steps, and the cost model fitted from them.

`gansweep bench` (sweep/measure/bench.py) and the device bench (devbench.py) measure with these;
the cost model is what `gansweep plan` estimates time with (sweep/plan/cost.py).
"""
from __future__ import annotations

import platform
import time

import torch

from sweep.plan.config import TrialConfig
from sweep.plan.cost import CostModel, measured
from sweep.plan.grid import network_macs, train_flops_per_step

# (f): one point per arch beyond (b)'s mlp points: the d-batch-dcgan presets' GAN
COST_POINTS = {"dcgan": (dict(family="gan", arch="dcgan", nLayerG=4, sizeG=64, nLayerD=4, sizeD=64), 30)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scorer_images_per_s(device, scorer, n: int = 10_000) -> float:
    """The classifier's forward on generated-sized batches: what scoring an epoch costs."""
    x = torch.rand(n, 1, 32, 32, device=device) * 2 - 1
    scorer.classifier.predict(x[:256])
    sync(device)
    t0 = time.perf_counter()
    scorer.classifier.predict(x)
    sync(device)
    return n / (time.perf_counter() - t0)


def train_flops_per_sample(cfg: TrialConfig) -> float:
    """3 G passes (forward, two backward) and 8 D passes (sweep/plan/grid.py), 2 FLOPs a MAC."""
    mg, md = network_macs(cfg)
    return 2.0 * (3 * mg + 8 * md)


def step_row(cfg: TrialConfig, samples_per_s: float) -> tuple[float, float]:
    """(GFLOP a step, seconds a step) of a measured point: a row of the cost model's fit."""
    return train_flops_per_step(cfg) / 1e9, cfg.batch_size / samples_per_s


def cost_model(res: dict, step_rows: dict, scorer_rate: float) -> CostModel:
    """(f): the model fitted from this bench's rows, named by where and when it was measured."""
    return measured(step_rows, scorer_rate, res["harness"]["per_trial_overhead_s"],
                    f"measured by `gansweep bench` on {platform.node()}, cpu, 1 thread a slot, "
                    f"{time.strftime('%Y-%m-%d')}")


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9
