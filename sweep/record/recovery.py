"""Reading a run's epochs back from Ray Tune's own records (every trial's result.json).

The tables are views of these records: a driver that died between a report and the next
table write loses nothing (the ledger merges them on open), and a damaged table is rebuilt
from them (sweep/record/heal.py). On resume, points the tables record as finished report
their result instead of training again (`finished_reports`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from sweep.plan.config import TrialConfig
from sweep.record.results import read_curves, read_results
from sweep.record.rows import TrialState, _plain, point_reports
from sweep.record.schema import CURVE_KEYS, DIVERGED, FINISHED, OK, RESTORED_HISTORY, TUNE_ERROR, TUNE_TERMINATED
from sweep.record.store import is_uri


def curve_row(report: dict) -> tuple[tuple[str, int], dict]:
    key = (report["point_id"], int(report["epoch"]))
    return key, {"point_id": key[0], **{k: report.get(k) for k in CURVE_KEYS}}


def restored_curve_rows(report: dict) -> list[tuple[tuple[str, int], dict]]:
    """The curve rows a report carries from the checkpoint its trial was restored from.

    A worker killed right after saving a checkpoint can leave Tune restoring it although
    that epoch's report never reached the driver: the first report after a restore
    carries the restored history, so no epoch goes missing from the curves.
    """
    if RESTORED_HISTORY not in report:
        return []
    pid = report["point_id"]
    return [curve_row({**h, "point_id": pid}) for h in json.loads(report[RESTORED_HISTORY])]


def logged_reports(tune_path: str) -> list[tuple[Path, list[dict]]]:
    """(trial folder, its reports in order) from every trial's result.json, on a local path or in
    object storage (a line cut short by a killed driver is skipped)."""
    out = []
    for folder, text in _result_logs(tune_path):
        reports = []
        for line in text.splitlines():
            try:
                reports.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        out.append((folder, reports))
    return out


def _result_logs(tune_path: str) -> list[tuple[Path, str]]:
    """(trial folder, its result.json) of every trial of a Tune experiment. In object storage the
    folder is the object path (nothing local: its error file reads as absent)."""
    if not is_uri(tune_path):
        return [(log.parent, log.read_text(errors="replace")) for log in sorted(Path(tune_path).glob("*/result.json"))]
    from pyarrow import fs as pafs

    fs, root = pafs.FileSystem.from_uri(tune_path)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    out = []
    for folder in sorted(i.path for i in infos if i.type == pafs.FileType.Directory):
        try:
            with fs.open_input_stream(f"{folder}/result.json") as f:
                out.append((Path(folder), f.read().decode(errors="replace")))
        except (FileNotFoundError, OSError):  # a trial folder without a log yet
            continue
    return out


def curves_from_reports(logged: list[tuple[Path, list[dict]]]) -> dict[tuple[str, int], dict]:
    """(point_id, epoch) -> curve row; a retried or resumed trial may log an epoch twice:
    the later line wins."""
    out: dict[tuple[str, int], dict] = {}
    for _, reports in logged:
        for r in reports:
            try:
                points = [(curve_row(p), restored_curve_rows(p)) for p in point_reports(r)]
            except (KeyError, TypeError, ValueError):  # not a report of ours (ValueError: bad JSON)
                continue
            for (key, row), restored in points:
                for k, old in restored:
                    out.setdefault(k, old)
                out[key] = row
    return out


def curves_from_tune_logs(tune_path: str) -> dict[tuple[str, int], dict]:
    """(point_id, epoch) -> curve row, from every trial's result.json."""
    return curves_from_reports(logged_reports(tune_path))


def finished_reports(run_dir: Path) -> dict[str, dict]:
    """point_id -> the final report of every point the tables record as finished.

    On resume, a trial whose point is in here reports this instead of training
    (Tune's experiment state can be older than the tables after a driver crash).
    """
    try:
        results = read_results(run_dir)
        curves = read_curves(run_dir)
    except Exception:  # no table yet (or an unreadable one): nothing is known to be finished
        return {}
    done = results[results["status"].isin(FINISHED)]
    if "epochs" in done:  # an `ok` short of its epochs (tables written before the ledger) is not finished
        done = done[(done["status"] != OK) | (done["epochs_done"] == done["epochs"])]
    if done.empty or curves.empty:
        return {}
    last = curves.sort_values("epoch").groupby("point_id").tail(1).set_index("point_id")
    out = {}
    for row in done.itertuples(index=False):
        if row.point_id in last.index and int(last.loc[row.point_id, "epoch"]) == row.epochs_done:
            rep = {k: _plain(v) for k, v in last.loc[row.point_id].items()}
            rep.update(point_id=row.point_id, epoch=int(rep["epoch"]), device=row.device,
                       diverged_reason=row.diverged_reason,
                       outcome=DIVERGED if row.status == DIVERGED else OK)
            out[row.point_id] = rep
    return out


ERROR_FILE = "error.txt"  # a Tune trial's error file, in its folder (Tune's EXPR_ERROR_FILE)
NO_MESSAGE = "error (no message recorded)"


def error_line(path: Path | str | None) -> str:
    """The last line of a trial's error file (what an `error` row says)."""
    if not path or not os.path.exists(path):
        return NO_MESSAGE
    return error_line_of(Path(path).read_text(errors="replace"))


def error_line_of(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "error")[:300]


def states_from_reports(logged: list[tuple[Path, list[dict]]],
                        planned: tuple[TrialConfig, ...]) -> dict[str, TrialState]:
    """point_id -> TrialState, read back from Tune's trial folders.

    A trial whose points all ended (their last logged report is their last epoch, or a
    divergence) had ended (TERMINATED); a folder with an error file had failed (ERROR);
    anything else is PENDING. These are the rows the callback writes from Tune's own trials.
    """
    cfgs = {c.point_id: c for c in planned}
    out: dict[str, TrialState] = {}
    for folder, reports in logged:
        last: dict[str, dict] = {}  # the trial's points' last reports
        for r in reports:
            last.update((p["point_id"], p) for p in point_reports(r) if p["point_id"] in cfgs)
        if not last:
            continue
        err = folder / ERROR_FILE
        ended = all(p.get("outcome") == DIVERGED or int(p.get("epoch") or 0) >= cfgs[pid].epochs
                    for pid, p in last.items())
        status = TUNE_ERROR if err.exists() else TUNE_TERMINATED if ended else "PENDING"
        for pid, p in last.items():
            out[pid] = TrialState(status, p, str(p.get("trial_id", "")), error_line(err) if err.exists() else "")
    return out
