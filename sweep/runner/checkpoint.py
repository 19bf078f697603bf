"""A pack's checkpoint, as the worker writes it and the driver reads it (sweep/runner/worker.py,
sweep/runner/callback.py): the format alone, so that reading one needs nothing of the trainable.

    folder/state.pt        {"format": CHECKPOINT_FORMAT, "points": point_id -> PointRun.checkpoint()}
    folder/samples.npz     point_id -> the last scored epoch's samples
    folder/weights/<id>.pt with --keep-weights: a finished point's final G
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sweep.plan.config import TrialConfig
from sweep.record.layout import SAMPLES_DIR, WEIGHTS_DIR

if TYPE_CHECKING:
    from ray.tune import Checkpoint

CHECKPOINT_FORMAT = "gansweep-pack/1"
STATE_FILE = "state.pt"  # point_id -> G, D, both optimizers, RNG streams, history (PointRun.checkpoint())
SAMPLES_NPZ = "samples.npz"  # point_id -> the last scored epoch's samples (up to 64, 32, 32) uint8
# A checkpoint's samples and, with --keep-weights, weights/<point_id>.pt (a finished point's G) go to
# RUN_DIR/samples/<point_id>.npy and RUN_DIR/weights/ (sweep/record/rundir.py).
SAMPLES_FILE = "samples.npy"  # the samples, in a one-point checkpoint of gansweep before packs
# (pack checkpoints before samples.npz held SAMPLES_DIR/<point_id>.npy, and the samples in the state too)


def save_checkpoint(points: dict[str, dict], folder: Path, keep_weights: dict[str, dict]) -> None:
    """A pack's checkpoint: STATE_FILE with every point's state (a finished point's without
    weights or RNG streams) but its samples, which are written once, all in SAMPLES_NPZ (one file:
    a pack's checkpoint is written per stack and epoch, and copied by Tune file by file), and
    WEIGHTS_DIR/<point_id>.pt (final G weights of the points in keep_weights, for `--keep-weights`)."""
    samples = {pid: st["samples"].numpy() for pid, st in points.items() if st["samples"] is not None}
    if samples:
        np.savez(folder / SAMPLES_NPZ, **samples)
    states = {pid: {k: v for k, v in st.items() if k != "samples"} for pid, st in points.items()}
    torch.save({"format": CHECKPOINT_FORMAT, "points": states}, folder / STATE_FILE)
    if keep_weights:
        (folder / WEIGHTS_DIR).mkdir()
        for pid, g in keep_weights.items():
            torch.save(g, folder / WEIGHTS_DIR / f"{pid}.pt")


def checkpoint_samples(folder: Path, point_ids) -> dict[str, np.ndarray]:
    """point_id -> its samples in a checkpoint folder, from any checkpoint gansweep wrote: SAMPLES_NPZ,
    SAMPLES_DIR/<point_id>.npy (packs before it), SAMPLES_FILE (one point, before packs)."""
    folder, point_ids = Path(folder), list(point_ids)
    if (folder / SAMPLES_NPZ).exists():
        with np.load(folder / SAMPLES_NPZ) as z:
            return {pid: z[pid] for pid in point_ids if pid in z.files}
    out = {}
    for pid in point_ids:
        src = folder / SAMPLES_DIR / f"{pid}.npy"
        if not src.exists() and len(point_ids) == 1:
            src = folder / SAMPLES_FILE
        if src.exists():
            out[pid] = np.load(src)
    return out


def checkpoint_weights(folder: Path) -> dict[str, dict]:
    """point_id -> the final G state_dict a checkpoint folder keeps for it (WEIGHTS_DIR, --keep-weights)."""
    return {f.stem: torch.load(f, map_location="cpu", weights_only=True)
            for f in sorted((Path(folder) / WEIGHTS_DIR).glob("*.pt"))}


def load_checkpoint(ckpt: Checkpoint, label: str, device: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """(point_id -> the state `PointRun(resume=...)` takes, point_id -> the final G weights it keeps)
    from a pack's checkpoint (or a one-point checkpoint of gansweep before packs, which keeps no
    weights); a damaged one is an error that says how to go on (never a silent start from scratch)."""
    try:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=True)
            weights = checkpoint_weights(Path(d))
            if state.get("format") == CHECKPOINT_FORMAT:
                missing = [pid for pid, st in state["points"].items() if "samples" not in st]
                samples = checkpoint_samples(Path(d), missing) if missing else {}
                for pid in missing:  # written beside the state (SAMPLES_NPZ)
                    state["points"][pid]["samples"] = torch.from_numpy(samples[pid]) if pid in samples else None
    except Exception as e:
        raise RuntimeError(
            f"the checkpoint of {label} cannot be read ({type(e).__name__}); "
            "`gansweep resume RUN_DIR --restart-errored` retrains such trials from scratch") from None
    if state.get("format") == CHECKPOINT_FORMAT:
        return state["points"], weights
    return {TrialConfig(**state["config"]).point_id: state}, {}
