"""The results tables of a run directory, written atomically.

RUN_DIR/results.parquet and results.csv: one row per grid point, always (points
not run yet are `pending`), with the fully resolved config beside the scores:

    point_id, family, the Table 1 axes, seed, every setting (sweep/plan/config.py),
    status            ok | diverged | error | pending (sweep/record/schema.py; rules in sweep/record/rows.py)
    tune_status       Ray Tune's own state (PENDING, RUNNING, TERMINATED, ERROR)
    epochs_done, best_epoch, the final metrics (i_prime, inception_score, fid,
    classes_covered, kl_uniform, digit_share, loss_d, loss_g) and the same at the best epoch
    (best_i_prime, ...), train_seconds, eval_seconds (a pack's time is shared evenly by its
    points), wall_seconds (of the point's Tune trial: a pack's, shared by its points),
    classifier_sha256, gansweep_version, git_commit, device, node (where the point trained: the
    Slurm node, else the Ray node's host and short id), error, trial_id

RUN_DIR/curves.parquet (and .csv): the long table, one row per (point_id, epoch).

The parquet tables are the record, rewritten every few seconds during a sweep; the CSV copies
follow them within a minute (sweep/record/ledger.py CSV_EVERY_S) and equal them when a session ends.

Every file is written to a temporary name in the same folder and renamed over
the old one, so a reader (or a crash, or a full disk) never sees half a table.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from models.registry import plugin_sources
from sweep import __version__
from sweep.errors import UserError
from sweep.plan.config import AUTO_RULES, LEGACY_DEFAULTS, model_name, setting_defaults
from sweep.record.layout import CURVES, CURVES_CSV, MANIFEST, RESULTS, RESULTS_CSV, TUNE_DIR
from sweep.record.schema import FINISHED

MANIFEST_FORMAT = "gansweep-run/1"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: Path, write, durable: bool = False) -> None:
    """Call write(tmp_path), then rename tmp_path over path (same folder, so atomic). durable: the file's
    bytes and then its name are flushed to the disk (fsync of the file, then of its folder) before this
    returns, so that a crash of the machine, not only of the process, keeps what a later write (a table
    that says the point is ok) relies on."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are meant to be shared
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_table(df: pd.DataFrame, run_dir: Path, parquet_name: str, csv_name: str, csv: bool = True) -> None:
    # Parquet first: it is the table of record; the CSV is a convenience copy (csv=False: not now).
    write_atomic(run_dir / parquet_name, lambda p: df.to_parquet(p, index=False))
    if csv:
        write_atomic(run_dir / csv_name, lambda p: df.to_csv(p, index=False))


def write_results(df: pd.DataFrame, run_dir: Path, csv: bool = True) -> None:
    write_table(df, run_dir, RESULTS, RESULTS_CSV, csv)


def write_curves(df: pd.DataFrame, run_dir: Path, csv: bool = True) -> None:
    write_table(df, run_dir, CURVES, CURVES_CSV, csv)


def read_results(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / RESULTS)


def finished_count(run_dir: Path) -> int:
    """How many points of the run have finished (FINISHED: ok or diverged); 0 before its first table."""
    if not (Path(run_dir) / RESULTS).exists():
        return 0
    return int(read_results(run_dir)["status"].isin(FINISHED).sum())


def read_curves(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / CURVES
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise UserError(f"{run_dir}: not a gansweep run directory (no {MANIFEST})")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: damaged manifest ({e}); it is the one file of a run that cannot be "
                        "rebuilt: restore it from a copy (the results tables beside it are intact)")
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{path}: not a gansweep run manifest (format {MANIFEST_FORMAT} expected)")
    return m


def git_commit() -> str:
    """The checkout's commit (with -dirty), recorded in every manifest and row."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def new_manifest(name: str, preset, tune_path: str, runtime: dict, device: str, classifier_sha256: str,
                 reference_scores: dict) -> dict:
    """The manifest of a new run: what it runs, where, with which scorer and code."""
    return {"format": MANIFEST_FORMAT, "name": name, "preset": preset.name, "n_trials": len(preset.trials),
            "sample": preset.sample_record(), "scope": preset.scope,
            "overrides": preset.overrides.record(), "plugins": plugin_sources(),
            "counts": preset.counts(), "setting_defaults": setting_defaults(), "auto_rules": AUTO_RULES, "tune_path": tune_path, "runtime": runtime, "device": device,
            "classifier_sha256": classifier_sha256, "reference_scores": reference_scores,
            "gansweep_version": __version__, "git_commit": git_commit(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sessions": []}


def tune_path_of(run_dir: Path, manifest: dict) -> str:
    """Where a run's Tune experiment lives: the run directory's own tune/ folder when it has
    one, so a copied or moved run uses its own copy; else the manifest's (--storage)."""
    own = Path(run_dir) / TUNE_DIR
    return str(own.resolve()) if own.is_dir() else manifest["tune_path"]


def write_manifest(run_dir: Path, manifest: dict) -> None:
    write_atomic(Path(run_dir) / MANIFEST,
                 lambda p: Path(p).write_text(json.dumps(manifest, indent=2, sort_keys=True)))


def with_models(df: pd.DataFrame) -> pd.DataFrame:
    """df with a `model` column, family[-arch] (tables written before the arch axis are mlp)."""
    if "model" in df.columns:
        return df
    arch = df["arch"] if "arch" in df.columns else pd.Series("mlp", index=df.index)
    model = [model_name(f, a) for f, a in zip(df["family"], arch)]
    return df.assign(model=pd.Series(model, index=df.index, dtype=object))


def read_checked_results(run_dir: Path) -> pd.DataFrame:
    """The results table of a run directory, validated; a bad one is one UserError line (read the
    manifest first: a directory that is no run says so)."""
    path = Path(run_dir) / RESULTS
    rebuild = f"`gansweep resume {run_dir}` rebuilds it from Tune's records"
    if not path.is_file():
        raise UserError(f"{run_dir}: no {RESULTS} (not written yet, or removed); {rebuild}")
    try:
        results = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise UserError(f"{path}: unreadable results table ({type(e).__name__}); {rebuild}") from None
    missing = {"point_id", "family", "status", "i_prime"} - set(results.columns)
    if missing:
        raise UserError(f"{path}: not a gansweep results table (missing {sorted(missing)[0]!r})")
    if results.empty:
        raise UserError(f"{path}: the results table is empty")
    return with_legacy_settings(results)


def with_legacy_settings(df: pd.DataFrame) -> pd.DataFrame:
    """A table written before a setting existed, with that setting's column: the value those
    runs trained with (LEGACY_DEFAULTS), so every row names what produced it."""
    missing = {k: v for k, v in LEGACY_DEFAULTS.items() if k not in df.columns}
    return df.assign(**missing) if missing else df
