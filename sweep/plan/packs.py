"""Packs: up to K grid points trained by one Ray Tune trial, as stacks of same-shape points.

    gansweep plan --preset paper --pack 12     # 7,168 points -> 1,536 Tune trials
    gansweep run  --preset paper --pack auto   # the default: 1 on CPU, 14 here on a GPU

Tune pays for every trial: experiment state (about 28 KB a trial), scheduling
(~0.16 s of slot time), a checkpoint folder. The paper grid is 7,168 points, so
one trial per point costs minutes of slot time and a 200 MB experiment state.
A pack holds up to K points in stacks: the points of a stack differ only in
PACK_VARIES (optimizers, lr, seed) and share family, arch, layer counts, sizes,
dropout and every setting, so they train as one stacked model with batched
kernels (models/stacked.py). A pack whose shape group is smaller than K takes
other stacks too (under the paper's rules every EBGAN shape holds one point),
trained one after another. Each point keeps its own row, RNG streams,
divergence and metrics (sweep/train/loop.py run_stack).

Packs are a pure function of the plan and K: the same sweep file and K give the
same packs, ids and order, which is how `resume` and the ledger find them again.
A run's K is fixed when it starts (it is recorded in the manifest).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sweep.plan.config import FIELD_NAMES, TrialConfig
from sweep.errors import UserError

PACK_VARIES = ("optimD", "optimG", "lr", "seed")  # what may differ between the points of a pack
SHAPE_FIELDS = tuple(f for f in FIELD_NAMES if f not in PACK_VARIES)  # what they all share
AUTO_TRIALS = 512  # --pack auto: one point per trial up to this many points; beyond, packs to about this many trials


@dataclass(frozen=True)
class Pack:
    pack_id: str  # a point's id for a pack of one; else its shape and the pack's index in it
    points: tuple[TrialConfig, ...]

    @property
    def point_ids(self) -> tuple[str, ...]:
        return tuple(p.point_id for p in self.points)


def trial_label(config: dict) -> str:
    """A Tune trial's pack id from its config: {"pack": id}, or {"point": fields} in runs
    started before packs (a pack of one, named by its point)."""
    return config["pack"] if "pack" in config else TrialConfig(**config["point"]).point_id


def shape_key(cfg: TrialConfig) -> tuple:
    return tuple(getattr(cfg, f) for f in SHAPE_FIELDS)


def _shape_tag(cfg: TrialConfig) -> str:
    """point_id without the optimizers, lr and seed: 'gan-G2x400-D3x128-nodrop'."""
    return cfg.point_id.rsplit("-", 3)[0]


def auto_pack_size(n_points: int, device: str) -> int:
    """--pack auto. On CPU 1: a pack runs the same FLOPs on the same cores, and packs of 12
    of the middle Table 1 point ran at 0.8x a lone point's samples/s (docs/performance.md).
    On a GPU, where a lone small MLP leaves the device launch-bound: 1 up to AUTO_TRIALS
    points (no tail of long packs on small sweeps), beyond, the K that brings Tune to about
    AUTO_TRIALS trials (the paper preset: 14, 512 trials)."""
    if device == "cpu":
        return 1
    return max(1, math.ceil(n_points / AUTO_TRIALS))


def parse_pack(text: str) -> int | None:
    """--pack value: a positive integer, or 'auto' (None)."""
    if text == "auto":
        return None
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise UserError(f"--pack {text!r}: expected a positive number of points per trial, or auto")
    return k


def make_packs(trials: tuple[TrialConfig, ...], k: int) -> tuple[Pack, ...]:
    """Split the planned points into packs of at most k points, made of whole stacks.

    A stack is points of one shape (shape_key): a shape group of n points becomes
    ceil(n / k) stacks of near-equal size (12 points at k = 8: two of 6, not 8 + 4).
    Stacks fill packs first-fit, in plan order: a pack of the paper grid at k = 14 holds
    one GAN shape's 12 points and two single-point EBGAN shapes. A pack trains its stacks
    one after another, each as one stacked model (sweep/runner/worker.py).
    """
    if k < 1:
        raise ValueError("pack size must be >= 1")
    groups: dict[tuple, list[TrialConfig]] = {}
    for t in trials:
        groups.setdefault(shape_key(t), []).append(t)
    stacks: list[tuple[TrialConfig, ...]] = []
    for members in groups.values():
        n_stacks = math.ceil(len(members) / k)
        base, extra = divmod(len(members), n_stacks)
        start = 0
        for j in range(n_stacks):
            size = base + (j < extra)
            stacks.append(tuple(members[start:start + size]))
            start += size
    bins: list[list[TrialConfig]] = []
    for stack in sorted(stacks, key=len, reverse=True):  # first-fit decreasing; sorted() is stable
        for b in bins:
            if len(b) + len(stack) <= k:
                b.extend(stack)
                break
        else:
            bins.append(list(stack))
    return tuple(Pack(_pack_id(b, i), tuple(b)) for i, b in enumerate(bins))


def _pack_id(points: list[TrialConfig], index: int) -> str:
    """A point's id for a pack of one; else the pack's index and its first shape."""
    return points[0].point_id if len(points) == 1 else f"p{index:04d}-{_shape_tag(points[0])}"


def stacks_of(points: tuple[TrialConfig, ...] | list[TrialConfig]) -> list[list[TrialConfig]]:
    """A pack's points grouped by shape, in order: the stacks it trains one after another."""
    out: dict[tuple, list[TrialConfig]] = {}
    for p in points:
        out.setdefault(shape_key(p), []).append(p)
    return list(out.values())
