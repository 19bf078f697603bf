"""The result schema of a run, in one place: status names, metric, curve and report columns.

Everything that names a status or a column of RUN_DIR's tables imports it from
here (the score columns themselves come from models/metrics.py, which computes
them). The rules a row must satisfy live in sweep/record/rows.py.

    results.parquet   one row per grid point: point_id, the config (sweep/plan/config.py),
                      STATUS_COLUMNS, METRIC_KEYS, best_ + METRIC_KEYS, RUN_COLUMNS
    curves.parquet    one row per (point_id, scored epoch): CURVE_COLUMNS
"""
from __future__ import annotations

from models.metric_names import SCORE_KEYS
from sweep.plan.config import FIELD_NAMES

# --- statuses of a grid point (results.status) ---
OK = "ok"  # trained every epoch; final scores finite
DIVERGED = "diverged"  # a loss or sample went non-finite; scores I' = 0 in the report
ERROR = "error"  # the trial raised (after Tune's retries); `error` says why
PENDING = "pending"  # not finished: never started, or stopped part-way (epochs_done tells)
STATUSES = (OK, DIVERGED, ERROR, PENDING)
FINISHED = (OK, DIVERGED)  # a final score the report can plot
STATUS_HELP = {
    OK: "trained every epoch, scores finite",
    DIVERGED: "a loss or sample went non-finite",
    ERROR: "the trial raised after its retries",
    PENDING: "not finished (never started or interrupted)",
}

# Ray Tune's own trial states, as results.tune_status records them; NOT_CREATED: a point
# Tune has not made a trial for yet (it creates them lazily under max_concurrent).
TUNE_NOT_CREATED, TUNE_RUNNING, TUNE_TERMINATED, TUNE_ERROR = "NOT_CREATED", "RUNNING", "TERMINATED", "ERROR"

# --- metrics ---
TRAIN_KEYS = ("loss_d", "loss_g", "m_global", "k_t")  # epoch means of the losses; BEGAN's state
METRIC_KEYS = (*SCORE_KEYS, *TRAIN_KEYS)  # a row's final values, and best_<key> at its best epoch
BEST_KEYS = tuple(f"best_{k}" for k in METRIC_KEYS)
TIME_KEYS = ("train_seconds", "eval_seconds")  # cumulative over the trial's epochs

# --- one epoch's report from the trial loop to the ledger (and Tune's result.json) ---
CURVE_KEYS = ("epoch", "outcome", *SCORE_KEYS, "loss_d", "loss_g", "d_real", "d_fake", "m_global", "k_t",
              *TIME_KEYS)
CURVE_COLUMNS = ("point_id", *CURVE_KEYS)
# outcome of a report: OK (the epoch trained) or DIVERGED (with diverged_reason)
RESTORED_HISTORY = "restored_history"  # report key: JSON list of a restored checkpoint's epochs
# A Tune trial trains a pack of points (sweep/plan/packs.py); its report to Tune holds
PACK = "pack"  # the pack's id,
PACK_POINTS = "points"  # a JSON list of point reports (point_id + CURVE_KEYS + diverged_reason, ...),
TRIAL_KEYS = ("device", "node", "started_at", "reported_at", "time_total_s", "trial_id")  # and these, shared by its points

# --- results.parquet, in column order ---
STATUS_COLUMNS = ("status", "tune_status", "epochs_done")
RUN_COLUMNS = ("train_seconds", "eval_seconds", "wall_seconds", "diverged_reason", "error", "device", "node",
               "trial_id", "classifier_sha256", "gansweep_version", "git_commit", "run_name", "preset")
RESULT_COLUMNS = ("point_id", *FIELD_NAMES, *STATUS_COLUMNS, *METRIC_KEYS, *RUN_COLUMNS, "best_epoch",
                  *BEST_KEYS)
