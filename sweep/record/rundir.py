"""A run directory, built once per command: its paths, and its manifest, plan and packs, each read once.

    run = RunDir("runs/mini-20261124-101500")
    run.manifest        # gansweep.json, read on first use and kept (save_manifest writes and keeps)
    run.plan            # the grid points the run was started with, rebuilt once from its own sweep.yaml
    run.packs           # the Tune trials they form (sweep/plan/packs.py)

RUN_DIR holds what sweep/record/layout.py lists (the names live there, the paths here).

With a URI as --storage, RUN_DIR is a working copy and the record is mirrored beside Tune's
experiment in the storage (sweep/record/store.py).
"""
from __future__ import annotations

import logging
import os
import time
from functools import cached_property
from pathlib import Path

from models.registry import add_plugin_sources
from sweep.errors import UserError
from sweep.plan.config import AUTO_RULES, LEGACY_DEFAULTS, TrialConfig, resolve, setting_defaults
from sweep.plan.grid import Overrides, load_preset
from sweep.plan.packs import Pack, make_packs
from sweep.plan.subset import SAMPLER_VERSION
from sweep.record.layout import (CURVES, MANIFEST, REPORT_DIR, RESULTS, SAMPLES_DIR, SLURM_DIR, SWEEP_FILE, WEIGHTS_DIR)
from sweep.record.results import read_manifest, read_results, tune_path_of, write_manifest
from sweep.record.recovery import finished_reports
from sweep.record.schema import FINISHED, OK
from sweep.record.store import RecordStore, is_uri, record_uri, store_fault, store_reason

log = logging.getLogger("gansweep")


class RunDir:
    """One run directory (module docstring). `manifest`, `plan` and `packs` may be handed in by the
    command that has them already (a new run), so nothing is read back that was just written."""

    def __init__(self, path: str | Path, manifest: dict | None = None, plan: tuple[TrialConfig, ...] | None = None,
                 packs: tuple[Pack, ...] | None = None):
        self.path = Path(path)
        self.name = self.path.name
        self.manifest_file, self.sweep_file = self.path / MANIFEST, self.path / SWEEP_FILE
        self.results_file, self.curves_file = self.path / RESULTS, self.path / CURVES
        self.samples_dir, self.weights_dir = self.path / SAMPLES_DIR, self.path / WEIGHTS_DIR
        self.report_dir, self.slurm_dir = self.path / REPORT_DIR, self.path / SLURM_DIR
        for name, value in (("manifest", manifest), ("plan", plan), ("packs", packs)):
            if value is not None:
                self.__dict__[name] = tuple(value) if name != "manifest" else value
        # the store's reason while pushes to it fail for want of reaching it (store_fault), and since when
        self.store_fault: str | None = None
        self.store_down_since: float | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def tune_path(self) -> str:
        """Where its Tune experiment lives: its own tune/ folder, else the manifest's (--storage)."""
        return tune_path_of(self.path, self.manifest)

    # ---------------------------------------------------------------- read once
    @cached_property
    def manifest(self) -> dict:
        return read_manifest(self.path)

    def save_manifest(self, manifest: dict) -> None:
        write_manifest(self.path, manifest)
        self.__dict__["manifest"] = manifest
        self.sync()

    @cached_property
    def store(self) -> RecordStore | None:
        """Where the record is mirrored: beside a Tune experiment in object storage (sweep/record/store.py)."""
        tune = self.manifest["tune_path"]
        return RecordStore(record_uri(tune)) if is_uri(tune) else None

    def use_store(self, store: RecordStore) -> None:
        """The store this command pulled the record from: it knows what it pulled, so only what
        changes goes back up (instead of a new RecordStore from the manifest, which pushes all)."""
        self.__dict__["store"] = store

    def sync(self, paths: list[Path] | None = None) -> None:
        """Push what changed in the record (or among these of its files) to its store, if it has one. A
        failed upload is a warning: the sweep goes on and the next write pushes again."""
        if self.store is None:
            return
        try:
            self.store.push(self.path, paths)
        except Exception as e:  # pyarrow raises OSError and its own types for network and auth errors
            self.store_fault = store_fault(e)
            if self.store_fault is not None and self.store_down_since is None:
                self.store_down_since = time.time()
            log.warning("could not copy the record to %s (%s); retrying at the next update", self.store.uri,
                        store_reason(e))
        else:
            self.store_fault = self.store_down_since = None

    @cached_property
    def plan(self) -> tuple[TrialConfig, ...]:
        """The grid points the run was started with: its own copy of the sweep file, the sample it
        drew (which the manifest records whether the file or --sample asked for it), and the
        --set / --seeds overrides it was started with."""
        m = self.manifest
        add_plugin_sources(m.get("plugins") or [])  # its families and archs, before its points are rebuilt
        sample = m.get("sample")  # runs before --sample have no key: the file decides
        n, seed = (sample["n"], sample["seed"]) if sample else (None, None)
        sampler = sample.get("sampler", 1) if sample else SAMPLER_VERSION  # version 1 recorded none
        if sampler > SAMPLER_VERSION:
            raise UserError(f"{self.path}: its sample was drawn by sampler version {sampler}, newer than this "
                            f"gansweep's {SAMPLER_VERSION}; upgrade gansweep to resume or check it")
        preset = load_preset(self.sweep_file, m["preset"], sample=n, sample_seed=seed, sampler=sampler,
                             overrides=Overrides.from_record(m.get("overrides")))
        if "sample" in m and sample is None and preset.sample is not None:
            raise UserError(f"{self.path}: its sweep.yaml samples preset {m['preset']!r} but the run did not")
        return preset.trials

    @property
    def pack_size(self) -> int:
        """Points per Tune trial (runs started before packs had one)."""
        return int(self.manifest["runtime"].get("pack", 1))

    @property
    def keeps_weights(self) -> bool:
        """--keep-weights: every ok point keeps its final G in weights/ (runs before the option kept none)."""
        return bool(self.manifest["runtime"].get("keep_weights", False))

    def _kept_kinds(self) -> dict[str, tuple[Path, str]]:
        """The files an ok point keeps, by what they hold: (folder, extension) of its samples, and of
        its final G when the run keeps weights."""
        kinds = {"samples": (self.samples_dir, ".npy")}
        if self.keeps_weights:
            kinds["G weights"] = (self.weights_dir, ".pt")
        return kinds

    def kept_paths(self, point_id: str) -> list[Path]:
        """The files an ok point keeps (one point: a stat each)."""
        return [folder / f"{point_id}{ext}" for folder, ext in self._kept_kinds().values()]

    def missing_files(self, ok_ids) -> dict[str, list[str]]:
        """What the ok points among ok_ids lack of the files an ok point keeps: {"samples": ids without
        samples/<id>.npy, "G weights": ids without weights/<id>.pt (when the run keeps weights)}, each
        in the order given (many points: one listing of each folder)."""
        ok_ids = list(ok_ids)
        out = {}
        for what, (folder, ext) in self._kept_kinds().items():
            have = {f[:-len(ext)] for f in _listdir(folder) if f.endswith(ext)}
            out[what] = [pid for pid in ok_ids if pid not in have]
        return out

    def finished_points(self) -> tuple[dict[str, dict], list[str]]:
        """(point_id -> final report of each point the tables record as finished, but the ok ones whose
        kept files are gone; those ok points, sorted). The ledger does not count the latter finished
        and resume trains them again (sweep/record/ledger.py, the kept-files rule)."""
        reports = finished_reports(self.path)
        missing = self.missing_files(p for p, r in reports.items() if r["outcome"] == OK)
        lacking = sorted({pid for ids in missing.values() for pid in ids})
        return {p: r for p, r in reports.items() if p not in lacking}, lacking

    @cached_property
    def packs(self) -> tuple[Pack, ...]:
        return make_packs(self.plan, self.pack_size)

    @cached_property
    def pack_points(self) -> dict[str, tuple[str, ...]]:
        """pack_id -> the point ids it trains."""
        return {p.pack_id: p.point_ids for p in self.packs}

    # ---------------------------------------------------------------- defaults
    def changed_defaults(self) -> dict:
        """Settings that resolve otherwise since the run started -> the default it started with: its
        default changed (a manifest written before gansweep recorded its defaults: LEGACY_DEFAULTS),
        or it is "auto" and what auto means changed (the manifest's `auto_rules`, 1 when absent)."""
        recorded = self.manifest.get("setting_defaults", LEGACY_DEFAULTS)
        now, rules = setting_defaults(), self.manifest.get("auto_rules", 1)
        return {k: v for k, v in recorded.items() if k in now and (now[k] != v or (v == "auto" and rules != AUTO_RULES))}

    def check_defaults(self) -> None:
        """Refuse to resume a run whose unfinished points would now train otherwise than its finished
        ones did: a default they took has changed since the run started (e.g. d_batch, which GANs
        trained as `separate` before the setting existed, and DCGAN GANs as `joint` before auto read
        the arch). One run, one meaning per point."""
        changed = self.changed_defaults()
        if not changed:
            return
        try:
            table = read_results(self.path)
            done = set(table.loc[table["status"].isin(FINISHED), "point_id"])
        except Exception:  # no readable table: every point counts as unfinished
            done = set()
        rules = self.manifest.get("auto_rules", 1)
        for name, then in changed.items():
            now = setting_defaults()[name]
            stale = [t for t in self.plan if t.point_id not in done and getattr(t, name)
                     == resolve(t.family, t.arch, name, now) != resolve(t.family, t.arch, name, then, rules)]
            if stale:
                was = (f"whose default {name} was {then!r} (now {now!r})" if then != now else
                       f"whose {name} `auto` resolved by version {rules} of its rules (now {AUTO_RULES})")
                raise UserError(
                    f"{self.path}: started by a gansweep {was}; "
                    f"{len(stale)} unfinished points such as {stale[0].point_id} would train with "
                    f"{getattr(stale[0], name)!r}, not as its finished ones did: finish it with the gansweep "
                    f"that started it (commit {self.manifest.get('git_commit', 'unknown')}), or start a new run")


def _listdir(folder: Path) -> list[str]:
    """The file names in a folder ([] if it does not exist)."""
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
