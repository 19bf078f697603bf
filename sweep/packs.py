"""Packs: grid points with the same networks and settings, trained by one Ray Tune trial.

    gansweep plan --preset paper --pack 12     # 7,168 points -> 1,536 Tune trials
    gansweep run  --preset paper --pack auto   # the default

Tune pays for every trial: experiment state (about 28 KB a trial), scheduling
(~0.16 s of slot time), a checkpoint folder. The paper grid is 7,168 points, so
one trial per point costs minutes of slot time and a 200 MB experiment state.
A pack holds up to K points that differ only in PACK_VARIES (optimizers, lr,
seed): same family, arch, layer counts, sizes, dropout and every setting, so
they could share batched kernels. Each point keeps its own row, RNG streams,
divergence and metrics (sweep/trial.py run_pack).

Packs are a pure function of the plan and K: the same sweep file and K give the
same packs, ids and order, which is how `resume` and the ledger find them again.
A run's K is fixed when it starts (it is recorded in the manifest).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sweep.config import FIELD_NAMES, TrialConfig
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


def shape_key(cfg: TrialConfig) -> tuple:
    return tuple(getattr(cfg, f) for f in SHAPE_FIELDS)


def _shape_tag(cfg: TrialConfig) -> str:
    """point_id without the optimizers, lr and seed: 'gan-G2x400-D3x128-nodrop'."""
    return cfg.point_id.rsplit("-", 3)[0]


def auto_pack_size(n_points: int) -> int:
    """--pack auto: 1 (a trial per point) for sweeps up to AUTO_TRIALS points, where packing
    only lengthens the tail; beyond, the K that brings Tune to about AUTO_TRIALS trials.
    On CPU a pack trains its points one after another, so K changes no throughput: it
    only divides Tune's per-trial costs (docs/performance.md)."""
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
    """Split the planned points into packs of at most k points of one shape each.

    A shape group of n points becomes ceil(n / k) packs of near-equal size (12 points at
    k = 8: two packs of 6, not 8 + 4), in plan order within the group; groups keep the
    order of their first point.
    """
    if k < 1:
        raise ValueError("pack size must be >= 1")
    groups: dict[tuple, list[TrialConfig]] = {}
    for t in trials:
        groups.setdefault(shape_key(t), []).append(t)
    packs = []
    for members in groups.values():
        n_packs = math.ceil(len(members) / k)
        base, extra = divmod(len(members), n_packs)
        start = 0
        for j in range(n_packs):
            size = base + (j < extra)
            chunk = tuple(members[start:start + size])
            start += size
            pid = chunk[0].point_id if len(members) == 1 or k == 1 else f"{_shape_tag(chunk[0])}-pack{j}"
            packs.append(Pack(pid, chunk))
    return tuple(packs)
