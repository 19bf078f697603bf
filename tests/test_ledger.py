"""The run ledger without Ray: each of its rules, from hand-made reports to the tables on disk."""
import json
import math
import os
import signal

import numpy as np
import pandas as pd
import pytest

from sweep.plan.config import TrialConfig
from sweep.record.ledger import Ledger
from sweep.record.recovery import curves_from_tune_logs, finished_reports
from sweep.record.rows import TrialState, judge, scored_epochs, summarize
from sweep.record.rules import check_tables
from sweep.record.rundir import RunDir
from sweep.record.results import read_curves, read_results, write_results
from sweep.record.schema import CURVE_COLUMNS, RESTORED_HISTORY, RESULT_COLUMNS
from sweep.runner.signals import STOP

CFG = TrialConfig(family="ebgan", nLayerG=2, nLayerD=2, sizeG=32, sizeD=16, epochs=3, n_train=512)
SCORES = {"i_prime": 2.0, "inception_score": 3.0, "fid": 50.0, "classes_covered": 7, "kl_uniform": 0.1,
          "digit_share": 0.8}
MANIFEST = {"classifier_sha256": "f" * 64, "gansweep_version": "0.1.0", "git_commit": "abc", "name": "t",
            "preset": "t", "tune_path": "/nonexistent/tune", "runtime": {"pack": 1}}


def keep(ledger: Ledger, *cfgs: TrialConfig) -> None:
    """Each point's kept samples written, as the callback writes them when its trial ends."""
    for cfg in cfgs:
        assert ledger.save_samples(cfg.point_id, np.full((64, 32, 32), 7, np.uint8))


def report(cfg: TrialConfig, epoch: int, i_prime: float = 2.0, outcome: str = "ok", **extra) -> dict:
    return {"point_id": cfg.point_id, "epoch": epoch, **SCORES, "i_prime": i_prime, "loss_d": 0.5,
            "loss_g": 0.7, "d_real": 1.0, "d_fake": 2.0, "m_global": math.nan, "k_t": math.nan,
            "train_seconds": 1.0 * epoch, "eval_seconds": 0.1 * epoch, "outcome": outcome,
            "diverged_reason": "", "device": "cpu", **extra}


# --------------------------------------------------------------------------- judging one point
def test_a_point_stopped_part_way_is_pending_not_ok():
    """The bug this module exists for: Tune marks a stopped trial TERMINATED after 2 of 3 epochs."""
    assert judge(CFG, "TERMINATED", report(CFG, 2)) == ("pending", "")
    assert judge(CFG, "TERMINATED", {}) == ("pending", "")  # stopped before its first report
    assert judge(CFG, "TERMINATED", report(CFG, 3)) == ("ok", "")


@pytest.mark.parametrize("tune_status", ["NOT_CREATED", "PENDING", "RUNNING", "PAUSED"])
def test_a_point_tune_has_not_ended_is_pending(tune_status):
    assert judge(CFG, tune_status, report(CFG, 3)) == ("pending", "")


def test_errors_divergence_and_non_finite_scores():
    assert judge(CFG, "ERROR", report(CFG, 1)) == ("error", "")
    div = report(CFG, 1, math.nan, outcome="diverged", diverged_reason="non-finite loss")
    assert judge(CFG, "TERMINATED", div) == ("diverged", "non-finite loss")
    # a diverged report always carries a reason into its row, even one that lost it
    assert judge(CFG, "TERMINATED", {**div, "diverged_reason": ""}) == ("diverged", "diverged (no reason recorded)")
    # all epochs trained, but the scorer returned NaN FID: not ok
    assert judge(CFG, "TERMINATED", {**report(CFG, 3), "fid": math.nan}) == ("diverged", "non-finite scores (fid)")


def test_scored_epochs():
    assert scored_epochs(CFG, "ok", 3) == [1, 2, 3]
    every2 = CFG.replace(epochs=5, eval_every=2)
    assert scored_epochs(every2, "ok", 5) == [2, 4, 5]
    assert scored_epochs(every2, "diverged", 3) == [2, 3]  # the epoch it diverged in is reported


def test_trial_command_and_engine_summarize_alike(tmp_path):
    """`gansweep trial` and the engine's rows use the same final/best rules."""
    history = [{**report(CFG, e, ip), "outcome": None} for e, ip in ((1, 1.0), (2, 4.0), (3, 3.0))]
    history = [{k: v for k, v in h.items() if k not in ("outcome", "diverged_reason", "point_id", "device")}
               for h in history]
    s = summarize(CFG, history)
    ledger = Ledger(RunDir(tmp_path, MANIFEST, (CFG,)))
    for h in history:
        ledger.ingest({**h, "point_id": CFG.point_id, "outcome": "ok", "diverged_reason": ""})
    keep(ledger, CFG)
    [row] = ledger.rows({CFG.point_id: TrialState("TERMINATED", {**history[-1], "outcome": "ok"})})
    assert s["status"] == row["status"] == "ok" and s["epochs_done"] == row["epochs_done"] == 3
    assert s["best_epoch"] == row["best_epoch"] == 2 and s["best_i_prime"] == row["best_i_prime"] == 4.0
    assert s["i_prime"] == row["i_prime"] == 3.0 and s["train_seconds"] == row["train_seconds"] == 3.0


# --------------------------------------------------------------------------- the ledger
def three_points():
    a, b, c = (CFG.replace(seed=s) for s in (0, 1, 2))
    return (a, b, c)


def test_rows_of_an_interrupted_sweep(tmp_path):
    """a finished, b stopped after epoch 1 (Tune: TERMINATED), c never started."""
    a, b, c = three_points()
    ledger = Ledger(RunDir(tmp_path, MANIFEST, (a, b, c)))
    for e, ip in ((1, 1.0), (2, 5.0), (3, 4.0)):
        ledger.ingest(report(a, e, ip))
    ledger.ingest(report(b, 1, 9.0))
    keep(ledger, a)
    trials = {a.point_id: TrialState("TERMINATED", report(a, 3, 4.0), "t1"),
              b.point_id: TrialState("TERMINATED", report(b, 1, 9.0), "t2")}
    rows = ledger.flush(trials)
    assert [r["status"] for r in rows] == ["ok", "pending", "pending"]
    assert [r["epochs_done"] for r in rows] == [3, 1, 0]
    assert rows[0]["i_prime"] == 4.0 and rows[0]["best_i_prime"] == 5.0 and rows[0]["best_epoch"] == 2
    # an unfinished point carries no score, not even its part-way one
    assert math.isnan(rows[1]["i_prime"]) and math.isnan(rows[1]["best_i_prime"]) and rows[1]["best_epoch"] == 0
    assert rows[2]["tune_status"] == "NOT_CREATED" and rows[2]["trial_id"] == ""
    results, curves = read_results(tmp_path), read_curves(tmp_path)
    assert list(results.columns) == list(RESULT_COLUMNS) and list(curves.columns) == list(CURVE_COLUMNS)
    assert len(results) == 3 and len(curves) == 4  # b's epoch 1 stays in the curves for resume
    assert check_tables(results, curves, (a, b, c)) == []
    assert "1/3 finished (ok 1, diverged 0, errored 0) | running 0 | pending 2" in ledger.progress_line(trials)


def test_a_flush_rebuilds_only_the_rows_that_changed(tmp_path):
    """Rows are cached per point (a flush of 7,168 rows cost about a second): a point that reported,
    or whose trial changed, gets a new row with the new values; the others keep theirs."""
    a, b, c = three_points()
    ledger = Ledger(RunDir(tmp_path, MANIFEST, (a, b, c)))
    ledger.ingest(report(a, 1, 1.0))
    ledger.ingest(report(b, 1, 9.0))
    running = {a.point_id: TrialState("RUNNING", report(a, 1, 1.0), "t1"),
               b.point_id: TrialState("RUNNING", report(b, 1, 9.0), "t2")}
    first = ledger.flush(running)
    assert [r["status"] for r in first] == ["pending"] * 3 and [r["epochs_done"] for r in first] == [1, 1, 0]

    for e in (2, 3):
        ledger.ingest(report(a, e, float(e)))  # a reports; b and c do not
    second = ledger.rows({**running, a.point_id: TrialState("RUNNING", report(a, 3, 3.0), "t1")})
    assert second[0] is not first[0] and second[0]["epochs_done"] == 3 and second[0]["status"] == "pending"
    assert second[1] is first[1] and second[2] is first[2]

    # a's trial ends: only its row changes, to ok with its last epoch's score
    keep(ledger, a)
    third = ledger.rows({**running, a.point_id: TrialState("TERMINATED", report(a, 3, 3.0), "t1")})
    assert third[0]["status"] == "ok" and third[0]["i_prime"] == 3.0 and third[0]["best_i_prime"] == 3.0
    assert third[1] is first[1] and third[2] is first[2]
    # b's trial fails: its row is rebuilt from the new state though b reported nothing new
    fourth = ledger.rows({a.point_id: TrialState("TERMINATED", report(a, 3, 3.0), "t1"),
                          b.point_id: TrialState("ERROR", report(b, 1, 9.0), "t2", "RuntimeError: boom")})
    assert fourth[0] is third[0] and fourth[1]["status"] == "error" and fourth[1]["error"] == "RuntimeError: boom"
    assert read_results(tmp_path)["epochs_done"].tolist() == [1, 1, 0]  # rows() alone writes nothing


def test_flushes_take_at_most_a_tenth_of_the_driver(tmp_path):
    """The tables are rewritten every FLUSH_EVERY_S (5 s), or FLUSH_SPAN (10) times the CPU time
    the last flush's writes took when that is longer (the paper plan's 7,168 rows: about 0.5 s)."""
    import time

    from sweep.record.ledger import FLUSH_EVERY_S, FLUSH_SPAN

    ledger = Ledger(RunDir(tmp_path, MANIFEST, three_points()))
    assert not ledger.flush_due  # a session's first periodic flush waits FLUSH_EVERY_S too
    ledger.flush({})
    assert (FLUSH_EVERY_S, FLUSH_SPAN) == (5.0, 10) and 0 < ledger.flush_seconds < 1.0
    ledger.dirty, ledger.last_flush, ledger.flush_seconds = True, time.time() - 6.0, 0.1
    assert ledger.flush_due  # 6 s >= max(5, 1)
    ledger.flush_seconds = 0.7
    assert not ledger.flush_due  # 6 s < 7 s
    ledger.last_flush -= 1.5
    assert ledger.flush_due
    ledger.dirty = False
    assert not ledger.flush_due  # nothing new to write


def test_the_csv_copies_follow_within_a_minute_and_equal_the_tables_at_the_end(tmp_path):
    """A periodic flush rewrites the parquet tables and, CSV_EVERY_S (60 s) after the last CSVs, their
    CSV copies (pandas' CSV writer was two thirds of a flush); the final flush of a session writes all."""
    import io
    import time

    import pandas as pd

    from sweep.record.ledger import CSV_EVERY_S

    a, b, c = three_points()
    ledger = Ledger(RunDir(tmp_path, MANIFEST, (a, b, c)))
    ledger.flush({})
    assert CSV_EVERY_S == 60.0 and pd.read_csv(tmp_path / "results.csv")["epochs_done"].tolist() == [0, 0, 0]
    ledger.ingest(report(a, 1, 1.0))
    ledger.flush({a.point_id: TrialState("RUNNING", report(a, 1, 1.0), "t1")}, final=False)
    assert read_results(tmp_path)["epochs_done"].tolist() == [1, 0, 0]
    assert pd.read_csv(tmp_path / "results.csv")["epochs_done"].tolist() == [0, 0, 0]  # 0 s after the last
    assert len(pd.read_csv(tmp_path / "curves.csv")) == 0 and len(read_curves(tmp_path)) == 1
    ledger.last_csv = time.time() - 61.0
    ledger.flush({a.point_id: TrialState("RUNNING", report(a, 1, 1.0), "t1")}, final=False)
    assert pd.read_csv(tmp_path / "results.csv")["epochs_done"].tolist() == [1, 0, 0]
    ledger.ingest(report(b, 1, 2.0))
    states = {a.point_id: TrialState("TERMINATED", report(a, 1, 1.0), "t1"),
              b.point_id: TrialState("RUNNING", report(b, 1, 2.0), "t2")}
    ledger.flush(states, final=False)
    assert pd.read_csv(tmp_path / "results.csv")["epochs_done"].tolist() == [1, 0, 0]
    ledger.flush(states)  # the session's last: the CSVs hold what the parquet tables hold
    assert pd.read_csv(tmp_path / "results.csv")["epochs_done"].tolist() == [1, 1, 0]
    for name, table in (("results", read_results(tmp_path)), ("curves", read_curves(tmp_path))):
        assert pd.read_csv(tmp_path / f"{name}.csv").equals(pd.read_csv(io.StringIO(table.to_csv(index=False))))


def test_finished_rows_drop_stale_epochs_of_an_earlier_attempt(tmp_path):
    """A restart from scratch that diverged at epoch 1 leaves no epoch 2 from the first attempt."""
    a = CFG
    ledger = Ledger(RunDir(tmp_path, MANIFEST, (a,)))
    ledger.ingest(report(a, 1))
    ledger.ingest(report(a, 2))
    div = report(a, 1, math.nan, outcome="diverged", diverged_reason="non-finite loss")
    ledger.ingest(div)
    ledger.flush({a.point_id: TrialState("TERMINATED", div)})
    results, curves = read_results(tmp_path), read_curves(tmp_path)
    assert results.status.tolist() == ["diverged"] and curves.epoch.tolist() == [1]
    assert check_tables(results, curves, (a,)) == []


def valid_tables(tmp_path):
    a, b, c = three_points()
    ledger = Ledger(RunDir(tmp_path, MANIFEST, (a, b, c)))
    for p in (a, b):
        for e in (1, 2, 3):
            ledger.ingest(report(p, e, float(e)))
    keep(ledger, a, b)
    ledger.flush({p.point_id: TrialState("TERMINATED", report(p, 3, 3.0)) for p in (a, b)})
    return (a, b, c), read_results(tmp_path), read_curves(tmp_path)


def test_check_names_every_broken_rule(tmp_path):
    plan, results, curves = valid_tables(tmp_path)
    a, b, c = plan
    assert check_tables(results, curves, plan) == []

    def broken(res=results, cur=curves, planned=plan) -> list[str]:
        return check_tables(res.reset_index(drop=True), cur.reset_index(drop=True), planned)

    assert broken(res=pd.concat([results, results.iloc[[0]]])) == [
        f"1 point(s) have more than one row: {a.point_id}"]
    assert broken(res=results.iloc[1:]) == [f"1 planned point(s) have no row: {a.point_id}",
                                            f"1 curve point(s) have no results row: {a.point_id}"]
    assert broken(planned=(a, b)) == [f"1 row(s) are not in the plan: {c.point_id}"]
    short = results.copy()
    short.loc[0, "epochs_done"] = 2  # what an interrupted sweep used to write
    assert broken(res=short) == [f"1 ok row(s) did not train every epoch: {a.point_id}",
                                 f"1 finished point(s) whose curve is not exactly their scored epochs: {a.point_id}"]
    too_many = results.copy()
    too_many.loc[2, "epochs_done"] = 4  # pending, but past its 3 epochs
    assert broken(res=too_many) == [f"1 row(s) have more epochs than planned: {c.point_id}"]
    nan_score = results.copy()
    nan_score.loc[1, "fid"] = math.nan
    assert broken(res=nan_score) == [f"1 ok row(s) have non-finite final scores: {b.point_id}"]
    no_reason = results.copy()
    no_reason.loc[0, "status"] = "diverged"
    assert broken(res=no_reason) == [f"1 diverged row(s) carry no reason: {a.point_id}"]
    scored_pending = results.copy()
    scored_pending.loc[2, "i_prime"] = 1.0
    assert broken(res=scored_pending) == [f"1 unfinished row(s) carry final scores: {c.point_id}"]
    dup_epoch = pd.concat([curves, curves.iloc[[0]]])
    assert broken(cur=dup_epoch) == [
        f"1 (point, epoch) pair(s) appear more than once in the curves: {a.point_id}@1",
        f"1 finished point(s) whose curve is not exactly their scored epochs: {a.point_id}"]
    moved = curves.copy()
    moved.loc[moved.epoch == 3, "i_prime"] = 7.0
    assert broken(cur=moved) == [f"2 ok row(s) whose I' differs from their curve's last epoch: "
                                 f"{a.point_id}, {b.point_id}"]
    unknown = results.copy()
    unknown.loc[2, "status"] = "finished"
    assert broken(res=unknown) == [f"1 row(s) have an unknown status: {c.point_id}"]


def test_a_signal_during_a_flush_leaves_whole_tables(tmp_path, monkeypatch):
    """SIGTERM lands while results.parquet is being written: the handler only records it,
    the flush completes, and both tables are the new, consistent ones."""
    plan, _, _ = valid_tables(tmp_path)
    ledger = Ledger(RunDir(tmp_path, MANIFEST, plan))
    for p in plan:
        for e in (1, 2, 3):
            ledger.ingest(report(p, e, float(e)))
    keep(ledger, plan[2])
    real = pd.DataFrame.to_parquet
    sent = []

    def slow_write(self, path, **kw):
        if not sent:
            sent.append(os.getpid())
            os.kill(os.getpid(), signal.SIGTERM)  # delivered at the next bytecode, mid-flush
        return real(self, path, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", slow_write)
    STOP.install()
    try:
        ledger.flush({p.point_id: TrialState("TERMINATED", report(p, 3, 3.0)) for p in plan})
        assert STOP.requested and STOP.name == "SIGTERM" and STOP.exit_status == 143
    finally:
        STOP.restore()
    monkeypatch.undo()
    results, curves = read_results(tmp_path), read_curves(tmp_path)
    assert results.status.tolist() == ["ok", "ok", "ok"] and len(curves) == 9
    assert check_tables(results, curves, plan) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.csv", "curves.parquet", "results.csv",
                                                          "results.parquet", "samples"]


def test_an_ok_row_waits_for_its_kept_files(tmp_path, caplog, monkeypatch):
    """Write-ahead (sweep/record/ledger.py): a point whose trial ended with its last epoch is `ok` only
    once its samples (and, with --keep-weights, its G weights) are on disk; until then its row is
    unfinished, so a driver killed in between leaves it to resume, not an ok row without its files.
    A checkpoint without the weights asked for is a warning naming the point."""
    import logging

    from sweep.record.rules import check_run

    a, b, c = three_points()
    run = RunDir(tmp_path, {**MANIFEST, "runtime": {"pack": 1, "keep_weights": True}}, (a, b, c))
    ledger = Ledger(run)
    for p in (a, b):
        for e in (1, 2, 3):
            ledger.ingest(report(p, e, float(e)))
    ended = {p.point_id: TrialState("TERMINATED", report(p, 3, 3.0), "t") for p in (a, b)}
    rows = ledger.flush(ended)
    assert [(r["status"], r["tune_status"]) for r in rows[:2]] == [("pending", "RUNNING")] * 2
    keep(ledger, a, b)  # samples, but not yet weights
    assert [r["status"] for r in ledger.rows(ended)] == ["pending", "pending", "pending"]
    g = tmp_path / "g.pt"
    g.write_bytes(b"weights")
    caplog.set_level(logging.WARNING, logger="gansweep")
    assert ledger.save_weights(a.point_id, g)
    assert not ledger.save_weights(b.point_id, tmp_path / "nothing.pt")
    assert f"point {b.point_id}: its checkpoint holds no G weights to keep" in caplog.text
    rows = ledger.flush(ended)
    assert [r["status"] for r in rows] == ["ok", "pending", "pending"]
    synced = []  # a kept file is flushed to the disk, its bytes then its name, before it counts
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.path.realpath(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    assert ledger.save_weights(c.point_id, g)
    monkeypatch.undo()
    assert len(synced) == 2 and synced[0].endswith(".tmp") and synced[1] == str((tmp_path / "weights").resolve())
    assert (tmp_path / "weights" / f"{a.point_id}.pt").read_bytes() == b"weights"
    results, curves = read_results(tmp_path), read_curves(tmp_path)
    assert check_run(run, results, curves) == []

    # the files of ok points go missing afterwards: the kept-files rule names each, by kind
    (tmp_path / "samples" / f"{a.point_id}.npy").unlink()
    assert check_run(run, results, curves) == [f"1 ok point(s) lack their samples file: {a.point_id}"]
    (tmp_path / "weights" / f"{a.point_id}.pt").unlink()
    assert check_run(run, results, curves) == [f"1 ok point(s) lack their samples file: {a.point_id}",
                                               f"1 ok point(s) lack their G weights file: {a.point_id}"]
    assert check_run(run, results, curves, files=False) == []  # what the report checks
    # a later session's ledger does not count it finished: it writes its files again when its trial ends
    again = Ledger(RunDir(tmp_path, run.manifest, (a, b, c)))
    assert again.lacking == {a.point_id} and a.point_id not in again.finished_before
    assert again.save_samples(a.point_id, np.zeros((64, 32, 32), np.uint8))
    assert (tmp_path / "samples" / f"{a.point_id}.npy").exists()


# --------------------------------------------------------------------------- recovery
def test_curves_are_rebuilt_from_tune_logs(tmp_path):
    """Epochs logged by Tune but not yet in curves.parquet when the driver died are kept."""
    trial = tmp_path / "tune" / "ebgan-x-0001"
    trial.mkdir(parents=True)
    lines = [{"point_id": "p", "epoch": 1, "i_prime": 0.5, "train_seconds": 1.0},
             {"point_id": "p", "epoch": 2, "i_prime": 0.7, "train_seconds": 2.0},
             {"point_id": "p", "epoch": 2, "i_prime": 0.8, "train_seconds": 2.5}]  # retried epoch
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"point_id": "p", "epo'  # cut short
    (trial / "result.json").write_text(text)
    rows = curves_from_tune_logs(str(tmp_path / "tune"))
    assert sorted(rows) == [("p", 1), ("p", 2)]
    assert rows[("p", 2)]["i_prime"] == 0.8 and rows[("p", 2)]["train_seconds"] == 2.5
    # the same logs through the object-storage path (pyarrow.fs), here on a file:// URI
    assert curves_from_tune_logs(f"file://{tmp_path / 'tune'}") == rows


def test_an_epoch_whose_report_was_lost_is_filled_from_the_restored_checkpoint(tmp_path):
    """Tune restored a checkpoint of epoch 3 whose result never reached the driver (seen in CI):
    Tune's log has epochs 1, 2, 4, 5; the report of epoch 4 carries the restored history."""
    trial = tmp_path / "tune" / "ebgan-x-0001"
    trial.mkdir(parents=True)
    hist = [{"point_id": "p", "epoch": e, "i_prime": e / 10, "outcome": "ok"} for e in (1, 2, 3)]
    hist[0]["i_prime"] = 99.0  # epochs Tune did log keep what Tune logged
    lines = [{"point_id": "p", "epoch": 1, "i_prime": 0.1}, {"point_id": "p", "epoch": 2, "i_prime": 0.2},
             {"point_id": "p", "epoch": 4, "i_prime": 0.4, RESTORED_HISTORY: json.dumps(hist)},
             {"point_id": "p", "epoch": 5, "i_prime": 0.5}]
    (trial / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = curves_from_tune_logs(str(tmp_path / "tune"))
    assert sorted(rows) == [("p", e) for e in (1, 2, 3, 4, 5)]
    assert [rows[("p", e)]["i_prime"] for e in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert rows[("p", 3)]["outcome"] == "ok"


def test_finished_points_report_their_recorded_result(tmp_path):
    """What a resumed trial that the tables record as finished reports instead of training."""
    results = pd.DataFrame([
        {"point_id": "a", "status": "ok", "epochs_done": 2, "device": "cpu", "diverged_reason": ""},
        {"point_id": "b", "status": "diverged", "epochs_done": 1, "device": "cpu",
         "diverged_reason": "non-finite loss"},
        {"point_id": "c", "status": "pending", "epochs_done": 0, "device": "", "diverged_reason": ""},
        {"point_id": "d", "status": "ok", "epochs_done": 3, "device": "cpu", "diverged_reason": ""},
        # what an interrupted sweep wrote before the ledger: ok after 1 of its 3 epochs
        {"point_id": "e", "status": "ok", "epochs_done": 1, "device": "cpu", "diverged_reason": ""}])
    results["epochs"] = [2, 1, 3, 3, 3]
    write_results(results, tmp_path)
    pd.DataFrame([
        {"point_id": "a", "epoch": 1, "i_prime": 0.1, "train_seconds": 1.0},
        {"point_id": "a", "epoch": 2, "i_prime": 0.2, "train_seconds": 2.0},
        {"point_id": "b", "epoch": 1, "i_prime": float("nan"), "train_seconds": 1.5},
        {"point_id": "d", "epoch": 2, "i_prime": 0.3, "train_seconds": 2.0},  # its last epoch is missing
        {"point_id": "e", "epoch": 1, "i_prime": 0.4, "train_seconds": 1.0},
    ]).to_parquet(tmp_path / "curves.parquet")
    rep = finished_reports(tmp_path)
    # c is pending; d's curves do not reach its last epoch; e was never finished, so it trains on
    assert sorted(rep) == ["a", "b"]
    assert rep["a"]["epoch"] == 2 and rep["a"]["i_prime"] == 0.2 and rep["a"]["outcome"] == "ok"
    assert rep["b"]["outcome"] == "diverged" and rep["b"]["diverged_reason"] == "non-finite loss"
    assert type(rep["a"]["epoch"]) is int and type(rep["a"]["train_seconds"]) is float


def test_healing_without_tune_records_changes_nothing(tmp_path):
    """results.parquet is damaged and Tune's folder is gone: the intact CSV must not be
    overwritten by rows rebuilt from nothing."""
    from sweep.errors import UserError
    from sweep.record.heal import damaged_tables, heal
    from sweep.record.results import MANIFEST_FORMAT, write_manifest

    (tmp_path / "sweep.yaml").write_text("presets:\n  t:\n    seeds: [0]\n    settings: {epochs: 3}\n"
                                         "    grids:\n      ebgan: {nLayerG: [2], nLayerD: [2], sizeG: [32], "
                                         "sizeD: [16], dropoutD: [false], optimD: [adam], optimG: [adam], "
                                         "lr: [0.001]}\n")
    write_manifest(tmp_path, {**MANIFEST, "format": MANIFEST_FORMAT, "tune_path": str(tmp_path / "gone")})
    plan, _, _ = valid_tables(tmp_path)
    csv = (tmp_path / "results.csv").read_bytes()
    (tmp_path / "results.parquet").write_bytes(b"PAR1 cut short")
    assert damaged_tables(tmp_path) == {"results.parquet": "ArrowInvalid"}
    with pytest.raises(UserError, match="Tune's records are missing .* nothing was changed"):
        heal(RunDir(tmp_path))
    assert (tmp_path / "results.csv").read_bytes() == csv


def test_the_ledger_imports_no_ray():
    import subprocess
    import sys

    code = "import sys, sweep.record.ledger, sweep.record.schema, sweep.runner.engine, sweep.cli; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_status_imports_no_torch(tmp_path):
    """`gansweep status` reads a run's tables (sweep/record/, analysis/status.py) without torch, which
    costs 3.5 s of CPU to import: the metric names it needs live in models/metric_names.py."""
    import subprocess
    import sys

    from helpers import make_run, row

    run = make_run(tmp_path, pd.DataFrame([row("gan", 3.0), row("ebgan", 5.0), row("began", 0.0, status="pending")]))
    code = "import sys; from sweep.cli import main; c = main(['status', sys.argv[1]]); print(c, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok 2" in out.stdout, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stdout
