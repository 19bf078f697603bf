"""When Tune's experiment state cannot serve, the tables are the truth: resume builds a new experiment from them.

    problem = cluster.experiment_state_problem(run.tune_path)     # e.g. "... unreadable (JSONDecodeError)"
    rebuild = prepare_rebuild(run, finished, f"Tune's experiment state is {problem}")   # old one moved aside
    log.info(rebuild.line())                                      # what restarts from where

A full disk can cut Tune's experiment_state-*.json short, and Tuner.restore then starts the
whole sweep over without a word. And ok points whose kept files are gone (samples/, weights/:
sweep/record/rules.py check_files) must train again, which Tune never does for a trial it
recorded finished. The results tables know every point instead: finished points
report their recorded result again (sweep/runner/worker.py), and every unfinished point
restarts from the newest checkpoint of its pack that still reads, from scratch where none does.
The old experiment folder is kept beside the new one (<tune>.damaged-<time>) for its logs and
checkpoints; a resume that stops before training looks there again. Errored points count as
unfinished: they restart from their last readable checkpoint too.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sweep.record.rundir import RunDir
from sweep.runner.checkpoint import STATE_FILE


@dataclass
class Rebuild:
    """What a rebuilt experiment starts from."""

    problem: str  # why Tune's own state is not restored: "Tune's experiment state is ...", or points to retrain
    moved_to: Path | None  # where the old experiment folder went (None: there was none)
    seeds: dict[str, str] = field(default_factory=dict)  # pack_id -> its newest readable checkpoint folder
    finished: int = 0  # points the tables record as finished: they report their result again
    from_checkpoint: int = 0  # unfinished points a seed checkpoint holds
    from_scratch: int = 0  # unfinished points no readable checkpoint holds

    def line(self) -> str:
        where = f" (the old one is in {self.moved_to})" if self.moved_to else ""
        return (f"{self.problem}: a new experiment was built from the tables{where}: "
                f"{self.finished} finished points stay, {self.from_checkpoint} restart from their last readable "
                f"checkpoint, {self.from_scratch} from scratch")


def checkpoint_points(folder: Path) -> set[str] | None:
    """The point ids a pack checkpoint folder holds, or None if its state does not read."""
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        return set(state["points"]) if "points" in state else None
    except Exception:  # a cut-short or garbled file: torch and pickle raise several types
        return None


def newest_readable(trial_dirs: list[Path]) -> tuple[Path, set[str]] | None:
    """The newest checkpoint of a pack's trial folders whose state reads, and the points it holds."""
    def written(c: Path) -> float:  # checkpoint numbers restart in every experiment; the clock does not
        try:
            return (c / STATE_FILE).stat().st_mtime
        except OSError:
            return 0.0
    ckpts = sorted((c for d in trial_dirs for c in d.glob("checkpoint_*") if c.is_dir()), key=written, reverse=True)
    for c in ckpts:
        held = checkpoint_points(c)
        if held is not None:
            return c, held
    return None


def prepare_rebuild(run: RunDir, finished: dict[str, dict], problem: str) -> Rebuild:
    """Move the unrestorable experiment aside and find, per pack, the checkpoint it restarts from."""
    old = Path(run.tune_path)
    moved = None
    if old.exists():
        moved = old.with_name(f"{old.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        old.rename(moved)
    # every experiment set aside so far (an earlier rebuild that stopped before training counts too)
    trial_dirs: dict[str, list[Path]] = {}
    for experiment in old.parent.glob(f"{old.name}.damaged-*"):
        for d in experiment.iterdir():  # a trial folder is "<pack label>-<trial id>" (sweep/runner/engine.py)
            if d.is_dir():
                trial_dirs.setdefault(d.name.rsplit("-", 1)[0], []).append(d)
    out = Rebuild(problem, moved, finished=sum(p in finished for p in (t.point_id for t in run.plan)))
    for pack in run.packs:
        todo = [pid for pid in pack.point_ids if pid not in finished]
        found = newest_readable(trial_dirs.get(pack.pack_id, [])) if todo else None
        if found is not None:
            out.seeds[pack.pack_id] = str(found[0])
        held = found[1] if found is not None else set()
        out.from_checkpoint += sum(pid in held for pid in todo)
        out.from_scratch += sum(pid not in held for pid in todo)
    return out
