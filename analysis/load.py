"""Read a run directory into DataFrames (usable from a notebook).

    from analysis.load import load_run
    run = load_run("runs/mini-20261123-101500")
    run.results.groupby("model")["i_prime"].median()   # model: family, or family-arch
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.registry import PluginError, add_plugin_sources
from sweep.errors import UserError
from sweep.plan.config import FIELD_NAMES, TrialConfig
from sweep.record.results import read_checked_results, read_curves, with_models
from sweep.record.rundir import RunDir


@dataclass(frozen=True)
class Run:
    dir: RunDir  # the run directory: its paths and manifest (sweep/record/rundir.py)
    results: pd.DataFrame  # one row per grid point (sweep/record/results.py), plus its `model`
    curves: pd.DataFrame  # one row per (grid point, epoch)

    @property
    def run_dir(self) -> Path:
        return self.dir.path

    @property
    def manifest(self) -> dict:
        """gansweep.json: preset, runtime, versions, sessions, reference scores."""
        return self.dir.manifest

    @property
    def real_i_prime(self) -> float | None:
        """I' of the real MNIST test set by the run's scorer (the dotted line of the figures)."""
        return (self.manifest.get("reference_scores") or {}).get("i_prime")

    def with_results(self, results: pd.DataFrame) -> "Run":
        """The same run with other results rows (a subset, say): figures and stats of part of a run."""
        return dataclasses.replace(self, results=with_models(results))

    @classmethod
    def of_tables(cls, results: pd.DataFrame, curves: pd.DataFrame | None = None,
                  real_i_prime: float | None = None, name: str = "tables") -> "Run":
        """A run of tables alone, no directory (its samples are then None): any results table drawn."""
        manifest = {"name": name, "reference_scores": {"i_prime": real_i_prime} if real_i_prime else {}}
        return cls(RunDir(Path(name), manifest), with_models(results),
                   curves if curves is not None else pd.DataFrame())

    def samples(self, point_id: str) -> np.ndarray | None:
        """The 64 final samples of a finished trial, (64, 32, 32) uint8, or None."""
        path = self.dir.samples_dir / f"{point_id}.npy"
        if not path.is_file():
            return None
        arr = np.load(path, allow_pickle=False)  # never unpickle what a run directory holds
        return arr if arr.dtype == np.uint8 and arr.ndim == 3 else None

    def config(self, point_id: str):
        """The TrialConfig of a point's results row, or None if the table has no such point."""
        rows = self.results[self.results["point_id"] == point_id]
        if rows.empty:
            return None
        return TrialConfig(**{k: (v.item() if hasattr(v, "item") else v) for k, v in rows.iloc[0].items()
                              if k in FIELD_NAMES})

    def generator(self, point_id: str):
        """The final G of a point run with --keep-weights, in eval mode, or None.

            g = run.generator(point_id)
            images = g(torch.rand(16, 100) * 2 - 1).view(-1, 32, 32)   # in [-1, 1]
        """
        import torch

        # lazy: sweep/train imports torch; tables and plans are read without it
        from sweep.train.point import build_models

        path = self.dir.weights_dir / f"{point_id}.pt"
        cfg = self.config(point_id)
        if not path.is_file() or cfg is None:
            return None
        _, g, _ = build_models(cfg, torch.device("cpu"))
        g.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return g.eval()


def one_scorer(results: pd.DataFrame, where: Path) -> str:
    """The classifier sha256 every row was scored by; rows scored by different classifiers
    are refused (I' depends on the classifier: such scores cannot share a histogram)."""
    shas = sorted(results["classifier_sha256"].dropna().unique()) if "classifier_sha256" in results else []
    if len(shas) > 1:
        counts = results["classifier_sha256"].value_counts()
        raise UserError(f"{where}: rows scored by {len(shas)} different classifiers ({shas[0][:12]}... "
                        f"{counts[shas[0]]} rows, {shas[1][:12]}... {counts[shas[1]]} rows); "
                        "report each classifier's runs separately")
    return shas[0] if shas else ""


def _load_plugins(manifest: dict) -> None:
    """The run's plugin families and archs, for their labels and colours. A plugin that is gone
    costs only those: its models are then drawn in gray under their plain names."""
    try:
        add_plugin_sources(manifest.get("plugins") or [])
    except PluginError as e:
        logging.getLogger("gansweep").warning("%s: its models are drawn unlabelled, in gray", e)


def load_run(run_dir: str | Path | RunDir) -> Run:
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run_dir = run.path
    manifest = run.manifest
    results = read_checked_results(run_dir)
    _load_plugins(manifest)
    try:
        curves = read_curves(run_dir)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise UserError(f"{run_dir / 'curves.parquet'}: unreadable curves table ({type(e).__name__}); "
                        f"`gansweep resume {run_dir}` rebuilds it from Tune's records") from None
    return Run(run, with_models(results), curves)
