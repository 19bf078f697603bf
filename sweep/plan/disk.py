"""Disk use of a sweep, estimated before it runs (`gansweep plan`).

    gansweep plan --preset paper --pack 12

What a run directory holds (sweep/runner/engine.py):
  * while a pack trains: its checkpoints, each with the G and D weights, batch-norm
    statistics and optimizer state (Adam: two moments per weight) of the stack it is
    training, Tune keeping the last 2 (sweep/runner/engine.py);
  * once the tables record a pack finished: its checkpoints are emptied (sweep/record/ledger.py),
    and each point keeps its samples, its rows, Tune's logs of its reports, its share of
    Tune's experiment state, and with --keep-weights its final G weights (float32).

The sizes per point below were measured on runs of this version (docs/performance.md);
the parameter counts are exact (the networks are built on the meta device).
"""
from __future__ import annotations

import math
import os
import shutil
from functools import lru_cache

from sweep.errors import UserError
from sweep.plan.config import TrialConfig
from sweep.plan.packs import stacks_of

FLOAT_BYTES = 4
CHECKPOINTS_KEPT = 2  # tune.CheckpointConfig(num_to_keep=2) in sweep/runner/engine.py
SAMPLES_BYTES = 64 * 32 * 32 + 128  # RUN_DIR/samples/<point_id>.npy: 64 uint8 images and the .npy header
# Measured per point on runs of this version (docs/performance.md, "Disk"): its results and
# curves rows (parquet + csv), Tune's logs of its reports (result.json, TensorBoard events),
# and its share of Tune's experiment state and trial folder.
TABLES_BYTES_PER_EPOCH = 700
TUNE_BYTES_PER_REPORT = 1_200
TUNE_BYTES_PER_TRIAL = 40_000


@lru_cache(maxsize=None)
def _param_counts(family: str, arch: str, nLayerG: int, sizeG: int, nLayerD: int, sizeD: int, z_dim: int,
                  energy_norm: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """((G parameters, G buffers), (D parameters, D buffers)): the arch's own count where it has one
    (the paper's nets: 7,168 points' estimate took 3-4 s of every `run` and `resume` start-up with
    the nets built), else from the networks built on the meta device (no memory)."""
    import torch

    # lazy: models/ imports torch (2-4 CPU-s); plans and tables are read without it (539dee0)
    from models.archs import get_arch
    from models.losses import get_family

    counts = get_arch(arch).param_counts
    if counts is not None:
        return counts(nLayerG, sizeG, z_dim, nLayerD, sizeD, get_family(family).discriminator)

    cfg = TrialConfig(family=family, arch=arch, nLayerG=nLayerG, sizeG=sizeG, nLayerD=nLayerD, sizeD=sizeD,
                      z_dim=z_dim, energy_norm=energy_norm, dropoutD=False)
    with torch.device("meta"):
        g, d = get_arch(arch).nets(cfg, get_family(family).discriminator)

    def count(m) -> tuple[int, int]:
        return sum(t.numel() for t in m.parameters()), sum(t.numel() for t in m.buffers())
    return count(g), count(d)


def param_counts(cfg: TrialConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    return _param_counts(cfg.family, cfg.arch, cfg.nLayerG, cfg.sizeG, cfg.nLayerD, cfg.sizeD, cfg.z_dim,
                         cfg.energy_norm)


def checkpoint_bytes(cfg: TrialConfig) -> int:
    """One unfinished point in one checkpoint: weights, BN statistics, optimizer state
    (Adam: two moments per parameter; SGD: a momentum buffer only with momentum)."""
    (g, g_buf), (d, d_buf) = param_counts(cfg)
    moments = {"adam": 2, "sgd": 1 if cfg.sgd_momentum > 0 else 0}
    return (FLOAT_BYTES * (g * (1 + moments[cfg.optimG]) + g_buf + d * (1 + moments[cfg.optimD]) + d_buf)
            + SAMPLES_BYTES)


def final_point_bytes(cfg: TrialConfig, keep_weights: bool) -> int:
    """What a finished point leaves in the run directory."""
    reports = math.ceil(cfg.epochs / cfg.eval_every)
    out = SAMPLES_BYTES + reports * (TABLES_BYTES_PER_EPOCH + TUNE_BYTES_PER_REPORT)
    return out + (FLOAT_BYTES * sum(param_counts(cfg)[0]) if keep_weights else 0)


def estimate_disk(packs, keep_weights: bool, slots: int | None = None) -> dict:
    """Peak and final bytes of a run of these packs with `slots` trials at once (default: this
    machine's CPUs, one trial each). The peak assumes the largest packs run together."""
    slots = slots or os.cpu_count() or 1
    final = sum(final_point_bytes(t, keep_weights) for p in packs for t in p.points)
    final += TUNE_BYTES_PER_TRIAL * len(packs)
    # a pack trains its stacks in turn: only the current stack's checkpoint holds weights
    live = sorted((CHECKPOINTS_KEPT * max(sum(checkpoint_bytes(t) for t in s) for s in stacks_of(p.points))
                   for p in packs), reverse=True)
    n_points = sum(len(p.points) for p in packs)
    return {"final": final, "peak": final + sum(live[:slots]), "slots": min(slots, len(packs)),
            "final_per_point": final / max(1, n_points)}


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_free_space(paths: list[str], packs, keep_weights: bool, slots: int) -> None:
    """Refuse (one line) to start packs whose estimated peak disk use exceeds the free space of the
    local paths they write to (the run directory, Tune's storage when it is a path: the caller leaves
    object storage out, which is not measured)."""
    need = estimate_disk(packs, keep_weights, slots)
    for path in paths:
        probe = os.path.abspath(path)  # the nearest folder that exists holds it
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        free = shutil.disk_usage(probe).free
        if free < need["peak"]:
            raise UserError(f"{path}: {fmt_bytes(free)} free, and these {sum(len(p.points) for p in packs)} points "
                            f"need about {fmt_bytes(need['peak'])} at their peak ({need['slots']} trials' "
                            f"checkpoints at once) and {fmt_bytes(need['final'])} in the end; free some space, "
                            "or pass --no-disk-check to start anyway")
