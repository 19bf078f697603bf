"""A run's state as `gansweep status` prints it: counts by status, each model's results so far,
the driver sessions, and the tables that need rebuilding.

    print("\n".join(status_lines(RunDir(path), results, damaged_tables(path))))
"""
from __future__ import annotations

import pandas as pd

from analysis.stats import draws_digits, has_digit_share
from sweep.record.heal import damage_phrase
from sweep.record.progress import count
from sweep.record.results import with_models
from sweep.record.schema import FINISHED, PENDING, STATUSES


def status_lines(run, df: pd.DataFrame, damaged: dict[str, str]) -> list[str]:
    """The lines of `gansweep status` for a run (a RunDir) and its results table."""
    manifest = run.manifest
    c = count(df.to_dict("records"))
    lines = [f"run {manifest['name']} (preset {manifest['preset']}, created {manifest['created']}): "
             f"{len(df)} grid points",
             "  " + "  ".join(f"{s} {c[s]}" for s in STATUSES) + f"  (running {c['running']})"
             + (f"; {c['partial']} of the {c[PENDING]} pending stopped part-way and resume from their "
                "checkpoints" if c["partial"] else "")]
    done = with_models(df[df["status"].isin(FINISHED)])
    if len(done):
        scored = has_digit_share(done)
        lines.append(f"  {'model':<15} {'finished':>8} {'median I' + chr(39):>9} {'best I' + chr(39):>8}"
                     + (f" {'draw digits':>11}" if scored else ""))
        for model, g in done.groupby("model", sort=False):
            lines.append(f"  {model:<15} {len(g):>8} {g['i_prime'].median():>9.3f} {g['i_prime'].max():>8.3f}"
                         + (f" {draws_digits(g).mean():>11.0%}" if scored else ""))
    if "node" in df and len(done):  # tables written before gansweep recorded nodes have no column
        per_node = done["node"].replace("", "(not recorded)").value_counts().sort_index()
        lines.append("  finished points by node: " + ", ".join(f"{n} {k}" for n, k in per_node.items()))
    for s in manifest.get("sessions", []):
        stopped = f", stopped by {s['stopped_by']}" if s.get("stopped_by") else ""
        stalls = f", {s['stalls']} stalled trial(s) stopped and retried" if s.get("stalls") else ""
        job = f" (slurm job {s['slurm_job']})" if s.get("slurm_job") else ""
        lines.append(f"  session {s['started']}{job}: {s['wall_seconds']:.0f}s wall, overhead "
                     f"{s['overhead_share']:.1%}{stopped}{stalls}")
    jobs = [s["slurm_job"] for s in manifest.get("sessions", []) if s.get("slurm_job")]
    if jobs:
        lines.append(f"  slurm jobs: {', '.join(jobs)}")
    for name, why in damaged.items():
        lines.append(f"  {damage_phrase(name, why, 'is')}: `gansweep resume {run.path}` rebuilds it from "
                     "Tune's records")
    return lines
