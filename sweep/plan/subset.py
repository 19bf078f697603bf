"""A seeded, stratified subset of a preset's grid: the paper's questions at a budget.

    gansweep plan --preset paper --sample 100            # 100 of the 7,168 points
    gansweep run  --preset paper-sample                  # sweep.yaml: sample: 96, sample_seed: 0

Two levels of stratification:

  1. the N points are split as evenly as possible among the preset's models
     (family, or family-arch), since the report compares models: a 96-point
     sample of the paper grid holds 32 GANs, 32 EBGANs and 32 EBGAN-PTs, not the
     grid's 82 / 7 / 7. A model with fewer points than its share gives all of
     them, and the rest go to the others. With a remainder, a seeded draw picks
     the models that get one point more.
  2. inside a model, points are picked one at a time, each time one whose axis
     values (every Table 1 axis, arch and seed) are the least represented so far (the smallest sum of the counts of
     its values), ties broken by a seeded shuffle. On a full factorial grid this
     keeps every axis balanced: the counts of any two values of an axis differ
     by one at most (by two in rare draws: the pick is greedy, and
     tests/test_grid.py checks the paper grid's samples). Among the points that keep the axes so balanced, the depth
     band (both depths <= 3, <= 4, or deeper) is balanced next, so that each
     panel of Figure 2 gets points of every model.

Version 3 adds Figure 3's cells: a GAN model (family gan, any arch) gets at least
one point in each of its (optimD, optimG, lr) cells (FIGURE3_CELL), 12 on the paper
grid, when the sample has room for them and for one point of every other model;
the other models share the rest evenly. Inside a GAN model the cell is balanced
first (no cell is drawn twice before every cell is drawn once), the axes next.

The subset is a pure function of (preset, N, seed): `plan` shows it, `run`
records it in the manifest, and `resume` rebuilds the same points.
"""
from __future__ import annotations

import numpy as np

from sweep.plan.config import AXES, TrialConfig

STRATA_AXES = AXES + ("seed",)  # what a sample balances, inside each model, and DERIVED_STRATA


def depth_band(p: TrialConfig) -> str:
    """The narrowest panel of the paper's Figure 2 a point falls in: both depths <= 3, <= 4, or not."""
    deepest = max(p.nLayerG, p.nLayerD)
    return "<=3" if deepest <= 3 else "<=4" if deepest <= 4 else "5+"


# Version 1 balanced the axes only; 2 adds DERIVED_STRATA; 3 covers FIGURE3_CELL. A run's manifest
# records the version that drew its sample, so resume redraws the same points after the sampler changes.
SAMPLER_VERSION = 3

# The paper's Figure 3 splits the GAN grid by these axes: one histogram per cell (analysis/figures.py).
FIGURE3_CELL = ("optimD", "optimG", "lr")
COVERED_FAMILY = "gan"  # the family whose cells a version-3 sample covers


def figure3_cell(p: TrialConfig) -> tuple:
    """(optimD, optimG, lr): the Figure 3 histogram a GAN point falls in."""
    return tuple(getattr(p, a) for a in FIGURE3_CELL)

# Joint properties balanced like axes: the marginals alone can leave Figure 2's panel (c)
# (nLayerG <= 3 and nLayerD <= 3, a quarter of the paper grid) without a single EBGAN.
DERIVED_STRATA = {"depth_band": depth_band}


def model_quota(sizes: dict[str, int], n: int, seed: int) -> dict[str, int]:
    """Points per model: n split as evenly as the models' sizes allow."""
    rng = np.random.default_rng([seed, 1])
    quota = {m: 0 for m in sizes}
    left = n
    while left > 0:
        open_ = [m for m in sizes if quota[m] < sizes[m]]
        share, extra = divmod(left, len(open_))
        lucky = set(rng.permutation(len(open_))[:extra].tolist())  # who gets one more
        for i, m in enumerate(open_):
            quota[m] += min(share + (i in lucky), sizes[m] - quota[m])
        left = n - sum(quota.values())
    return quota


def covered_quota(sizes: dict[str, int], floors: dict[str, int], n: int, seed: int) -> dict[str, int]:
    """Version 3's points per model: each model at least its floor (its Figure 3 cells) when n has
    room for every floor and one point of each other model, else no floors; then the rest goes
    one point at a time to the models with the fewest so far (ties: a seeded draw)."""
    rng = np.random.default_rng([seed, 3])
    floors = {m: min(floors.get(m, 0), sizes[m]) for m in sizes}
    room = n - sum(floors.values()) - sum(1 for m in sizes if floors[m] == 0)
    quota = dict(floors) if room >= 0 else {m: 0 for m in sizes}
    left = n - sum(quota.values())
    while left > 0:
        open_ = [m for m in sizes if quota[m] < sizes[m]]
        low = min(quota[m] for m in open_)
        level = [m for m in open_ if quota[m] == low]
        for i in sorted(rng.permutation(len(level))[:left].tolist()):  # who gets one more
            quota[level[i]] += 1
        left = n - sum(quota.values())
    return quota


def balanced_pick(points: list[TrialConfig], k: int, rng: np.random.Generator,
                  version: int = SAMPLER_VERSION, cover: bool = False) -> list[int]:
    """Indices of k points whose axis values are as evenly represented as k allows; with
    `cover`, each Figure 3 cell drawn once before any is drawn twice."""
    strata = [lambda p, a=a: getattr(p, a) for a in STRATA_AXES] + list(DERIVED_STRATA.values())
    strata += [figure3_cell] if cover else []
    codes = np.stack([np.unique([str(f(p)) for p in points], return_inverse=True)[1]
                      for f in strata], axis=1)  # (n, strata): each value's index in its stratum
    # the axes first; the derived strata decide between points the axes leave level; the cell,
    # when covered, outweighs every axis together (their load is below len(points) * k * axes)
    weight = [len(points)] * len(STRATA_AXES) + [int(version >= 2)] * len(DERIVED_STRATA)
    weight = np.array(weight + [len(points) * (k + 1) * len(STRATA_AXES)] * cover, dtype=np.int64)
    counts = [np.zeros(codes[:, j].max() + 1, dtype=np.int64) for j in range(codes.shape[1])]
    order = rng.permutation(len(points))  # the seeded tie-break: first in this order wins
    codes = codes[order]
    taken = np.zeros(len(points), dtype=bool)
    picked = []
    for _ in range(k):
        load = sum(w * c[codes[:, j]] for j, (w, c) in enumerate(zip(weight, counts)))  # (n,) how represented
        load = np.where(taken, np.iinfo(np.int64).max, load)
        i = int(np.argmin(load))
        taken[i] = True
        picked.append(int(order[i]))
        for j, c in enumerate(counts):
            c[codes[i, j]] += 1
    return picked


def stratified_sample(trials: tuple[TrialConfig, ...], n: int, seed: int,
                      version: int = SAMPLER_VERSION) -> tuple[TrialConfig, ...]:
    """n of the trials, stratified by model and axis value; in the grid's own order."""
    if not 1 <= version <= SAMPLER_VERSION:
        raise ValueError(f"sampler version {version}: this gansweep draws versions 1 to {SAMPLER_VERSION}")
    if not 1 <= n <= len(trials):
        raise ValueError(f"a sample of {n} from a grid of {len(trials)} points: expected 1..{len(trials)}")
    by_model: dict[str, list[int]] = {}
    for i, t in enumerate(trials):
        by_model.setdefault(t.model, []).append(i)
    sizes = {m: len(ix) for m, ix in by_model.items()}
    cells = {m: len({figure3_cell(trials[i]) for i in ix}) for m, ix in by_model.items()
             if version >= 3 and trials[ix[0]].family == COVERED_FAMILY}
    quota = covered_quota(sizes, cells, n, seed) if version >= 3 else model_quota(sizes, n, seed)
    chosen = []
    for j, (model, ix) in enumerate(by_model.items()):
        rng = np.random.default_rng([seed, 2, j])
        chosen += [ix[i] for i in balanced_pick([trials[i] for i in ix], quota[model], rng, version,
                                                cover=model in cells)]
    return tuple(trials[i] for i in sorted(chosen))
