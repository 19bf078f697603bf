"""The plan's time estimate: slot-seconds per point, from rates measured on the machine at hand.

    seconds(point) = trial_fixed + steps x (step_fixed + s_per_gflop x GFLOP a step)
                     + scored images x (1 / scorer rate + G's forward at s_per_gflop)

`gansweep bench` times training steps of points of several sizes (one thread, as a
trial slot runs), the scorer, and the harness's cost per trial, fits the line above
per arch (least squares; a step has a fixed cost that FLOPs do not explain: small
points run far below the machine's FLOP rate) and stores it in COST_DIR/cost-<device>.json.
`gansweep plan` and `gansweep presets` read the file of the device they would run
on (or --cost FILE) and say which model they used; where nothing was measured,
or with --gflops, they assume a slot sustains ASSUMED_GFLOPS GFLOP/s.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.errors import UserError
from sweep.plan.config import TrialConfig
from sweep.plan.grid import CLASSIFIER_MACS, network_macs, train_flops_per_step

ASSUMED_GFLOPS = 20.0  # about one CPU core (2026 x86): the estimate where nothing was measured
COST_DIR = Path("~/.cache/gansweep")
COST_VERSION = 1  # the file's layout


def cost_file(device_type: str) -> Path:
    """Where `gansweep bench` stores the cost model of this machine's `device_type` (cpu, cuda)."""
    return COST_DIR.expanduser() / f"cost-{device_type}.json"


@dataclass(frozen=True)
class StepFit:
    """Seconds of one training step = fixed_s + s_per_gflop x its GFLOP."""
    fixed_s: float  # launches, optimizer bookkeeping, batch slicing: what FLOPs do not explain
    s_per_gflop: float  # the inverse of the rate the step's arithmetic runs at


def fit_step_time(rows: list[tuple[float, float]]) -> StepFit:
    """Least squares of (GFLOP a step, seconds a step) rows; both terms at least 0. One row, or
    rows of one size: the line through the origin (no fixed cost can be told apart)."""
    g = np.array([r[0] for r in rows], dtype=float)
    s = np.array([r[1] for r in rows], dtype=float)
    if len(rows) >= 2 and np.ptp(g) > 0:
        (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(g), g], axis=1), s, rcond=None)
        if a >= 0 and b > 0:
            return StepFit(float(a), float(b))
    return StepFit(0.0, float(s.sum() / max(g.sum(), 1e-12)))


@dataclass(frozen=True)
class CostModel:
    """Slot-seconds of a point: measured (`gansweep bench`) or assumed (a FLOP rate)."""
    fits: dict  # arch -> StepFit; "*" for an arch not measured (the first measured arch's fit)
    scorer_images_per_s: float  # the classifier alone, per scored image
    trial_fixed_s: float  # the harness's cost per trial: start, checkpoints, records
    source: str  # what `plan` prints: where the rates come from

    def fit(self, arch: str) -> StepFit:
        return self.fits.get(arch) or self.fits["*"]

    def seconds(self, cfg: TrialConfig) -> float:
        """Slot-seconds of one point: its training steps, its scoring, the harness's share."""
        f = self.fit(cfg.arch)
        steps = cfg.epochs * (cfg.n_train // cfg.batch_size)
        gflop_step = train_flops_per_step(cfg) / 1e9
        mg, _ = network_macs(cfg)
        images = -(-cfg.epochs // cfg.eval_every) * cfg.n_eval
        score = images * (1 / self.scorer_images_per_s + 2 * mg / 1e9 * f.s_per_gflop)
        return self.trial_fixed_s + steps * (f.fixed_s + f.s_per_gflop * gflop_step) + score

    def slot_hours(self, trials) -> float:
        return sum(self.seconds(t) for t in trials) / 3600

    def to_json(self) -> dict:
        return {"version": COST_VERSION, "source": self.source, "scorer_images_per_s": self.scorer_images_per_s,
                "trial_fixed_s": self.trial_fixed_s,
                "fits": {arch: {"fixed_s": f.fixed_s, "s_per_gflop": f.s_per_gflop} for arch, f in self.fits.items()}}


def assumed(gflops: float) -> CostModel:
    """Every FLOP of estimate_flops at `gflops` GFLOP/s: seconds == estimate_flops / rate."""
    return CostModel({"*": StepFit(0.0, 1 / gflops)}, gflops * 1e9 / (2 * CLASSIFIER_MACS), 0.0,
                     f"assumed {gflops:g} GFLOP/s per slot")


def measured(step_rows: dict[str, list[tuple[float, float]]], scorer_images_per_s: float, trial_fixed_s: float,
             source: str) -> CostModel:
    """A model fitted from (GFLOP a step, seconds a step) rows per arch."""
    fits = {arch: fit_step_time(rows) for arch, rows in step_rows.items()}
    fits["*"] = next(iter(fits.values()))
    return CostModel(fits, scorer_images_per_s, trial_fixed_s, source)


def load_cost_model(path: Path) -> CostModel:
    """A model `gansweep bench` stored; a file that is not one is one clear error."""
    try:
        d = json.loads(Path(path).read_text())
        if d.get("version") != COST_VERSION:
            raise ValueError(f"layout version {d.get('version')}, this gansweep reads {COST_VERSION}")
        fits = {arch: StepFit(float(f["fixed_s"]), float(f["s_per_gflop"])) for arch, f in d["fits"].items()}
        return CostModel(fits, float(d["scorer_images_per_s"]), float(d["trial_fixed_s"]), str(d["source"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not a cost model of `gansweep bench` ({type(e).__name__}: {e}); "
                        "run `gansweep bench` again, or plan with --gflops") from None


def cost_model_for(device_type: str, path: str | None = None, gflops: float | None = None) -> CostModel:
    """What plan estimates with: --gflops if given, else --cost FILE, else this machine's stored
    model for `device_type`, else the assumed rate (its source says that nothing was measured)."""
    if gflops is not None:
        return assumed(gflops)
    if path is not None:
        return load_cost_model(Path(path))
    stored = cost_file(device_type)
    if stored.exists():
        return load_cost_model(stored)
    m = assumed(ASSUMED_GFLOPS)
    return CostModel(m.fits, m.scorer_images_per_s, m.trial_fixed_s,
                     f"{m.source}: nothing measured on this {device_type} (`gansweep bench` measures it)")

