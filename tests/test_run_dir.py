"""One writer per run directory, and derived tables that heal: real runs, real resumes."""
import io
import json
import os
import shutil
import signal

import pandas as pd
import pytest

from helpers import REPO, assert_ledger_holds, cli, gansweep, start, wait_for, without_ray

pytestmark = pytest.mark.ray

SWEEP = """
presets:
  h:
    seeds: [0, 1]
    settings: {epochs: 2, batch_size: 32, n_train: 2048, n_eval: 200}
    grids:
      ebgan: {nLayerG: [2], nLayerD: [2], sizeG: [32], sizeD: [16], dropoutD: [false, true],
              optimD: [adam], optimG: [adam], lr: [0.001]}
"""
TABLES = ("results.parquet", "results.csv", "curves.parquet", "curves.csv")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root):
    """A finished 4-point run, and its tables as they were (the environment set for this module only)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANSWEEP_DATA", str(data_root))
        mp.setenv("PYTHONPATH", str(REPO))
        home = tmp_path_factory.mktemp("home")
        (home / "sweep.yaml").write_text(SWEEP)
        r = cli("run", "--preset", "h", "--name", "h", "--storage", home / "runs", "--num-cpus", "1", "--quiet",
                cwd=home)
        assert r.returncode == 0, r.stderr[-3000:]
        run = home / "runs" / "h"
        yield run, {t: (run / t).read_bytes() for t in TABLES}


def results(run) -> pd.DataFrame:
    return pd.read_parquet(run / "results.parquet")


def holder_pid(run):
    try:
        return int(json.loads((run / ".gansweep.lock").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(finished_run, tmp_path, monkeypatch):
    base, before = finished_run
    run = tmp_path / "elsewhere" / "h"
    shutil.copytree(base, run)  # a copy: it must use (and lock) its own tune/ folder
    # one row pending, so the first resume has work (Tune's records, which say ok, rebuild the row):
    # a resume of a finished run ends without starting Ray, too soon to be caught holding the lock
    table = results(run)
    table.loc[0, "status"] = "pending"
    table.to_parquet(run / "results.parquet", index=False)
    first = start("resume", run, "--num-cpus", "2", "--quiet", cwd=tmp_path)
    wait_for(lambda: True if holder_pid(run) == first.pid else None, 60, "the first resume's lock", first)
    without_ray(monkeypatch)  # refused before Ray starts (in this process, which holds no lock of the run)
    second = gansweep("resume", run, "--num-cpus", "2", cwd=tmp_path)
    assert second.returncode == 2 and second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert f"is in use by `gansweep resume` (pid {first.pid} on " in second.stderr
    os.killpg(first.pid, signal.SIGKILL)  # the holder dies without a word: the kernel frees its lock
    first.wait(timeout=30)
    third = cli("resume", run, "--num-cpus", "2", cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-2000:]
    after = assert_ledger_holds(run)
    assert after.equals(pd.read_parquet(io.BytesIO(before["results.parquet"])))  # nothing retrained
    assert (base / "results.parquet").read_bytes() == before["results.parquet"]  # the original untouched


def damage(run, table):
    p = run / table
    if table == "results.parquet":
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # a cut-short copy / full disk
    elif table == "curves.parquet":
        p.unlink()
    else:
        p.write_bytes(b'point_id,status\n"a,ok\n\x00\x00\xff')  # garbled CSV


@pytest.mark.parametrize("table", ["results.parquet", "results.csv"])  # curves.parquet: the test below
def test_a_damaged_table_is_rebuilt_by_resume_in_its_own_folder(finished_run, tmp_path, table, monkeypatch):
    run, before = finished_run
    damage(run, table)
    st = gansweep("status", run, cwd=tmp_path)
    if table == "results.parquet":  # status cannot count without it: its one line says what to do
        assert st.returncode == 2 and st.stderr.count("\n") == 1
        assert "unreadable results table (ArrowInvalid)" in st.stderr
    else:  # status works, and says what is wrong
        assert st.returncode == 0 and "ok 4" in st.stdout
    assert f"`gansweep resume {run}` rebuilds it" in st.stdout + st.stderr
    without_ray(monkeypatch)  # every point is finished: the tables are rebuilt, and no Ray starts
    r = gansweep("resume", run, "--num-cpus", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    why = "missing" if table == "curves.parquet" else "unreadable ("
    assert f"[gansweep] {table} was {why}" in r.stdout and "rebuilt from Tune's records (4 rows, 4 finished)" in r.stdout
    assert "done in" in r.stdout and "ok 4, diverged 0, errored 0, pending 0" in r.stdout
    assert f"every point of {run} is finished: nothing to resume" in r.stdout
    after = assert_ledger_holds(run)
    old = pd.read_parquet(io.BytesIO(before["results.parquet"]))
    assert after.equals(old)  # row for row: same scores, same train_seconds (nothing trained again)
    assert pd.read_parquet(run / "curves.parquet").equals(
        pd.read_parquet(io.BytesIO(before["curves.parquet"])))
    assert pd.read_csv(run / "results.csv").equals(pd.read_csv(io.BytesIO(before["results.csv"])))


def test_every_damaged_table_of_a_copied_run_is_rebuilt_in_the_copy(finished_run, tmp_path, monkeypatch):
    base, before = finished_run
    run = tmp_path / "brought-back" / "h"
    shutil.copytree(base, run)
    for table in ("results.parquet", "curves.parquet", "results.csv"):
        damage(run, table)
    without_ray(monkeypatch)
    r = gansweep("resume", run, "--num-cpus", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("rebuilt from Tune's records") == 3  # one line per damaged table
    after = assert_ledger_holds(run)
    assert after.equals(pd.read_parquet(io.BytesIO(before["results.parquet"])))
    assert (base / "results.parquet").read_bytes() == before["results.parquet"]


def test_resume_reads_the_manifest_once_and_builds_the_plan_once(finished_run, tmp_path, data_root, monkeypatch):
    """One RunDir per command: the resume of a copied run (its curves table damaged, so the healing
    path runs too) reads gansweep.json once and rebuilds the plan from its sweep.yaml once, however
    many parts (heal, the ledger, the Tune callback, the trackers, the session record) use them."""
    import sweep.record.rundir as rundir
    from sweep.runner.engine import resume_sweep

    base, before = finished_run
    run = tmp_path / "counted" / "h"
    shutil.copytree(base, run)
    damage(run, "curves.parquet")
    st = gansweep("status", run, cwd=tmp_path)  # status works, and says what is wrong
    assert st.returncode == 0 and "ok 4" in st.stdout
    assert f"curves.parquet is missing: `gansweep resume {run}` rebuilds it" in st.stdout
    sessions = len(json.loads((run / "gansweep.json").read_text())["sessions"])
    calls = {"manifest": 0, "plan": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper
    monkeypatch.setattr(rundir, "read_manifest", counted("manifest", rundir.read_manifest))
    monkeypatch.setattr(rundir, "load_preset", counted("plan", rundir.load_preset))
    monkeypatch.setenv("GANSWEEP_DATA", str(data_root))
    summary = resume_sweep(run, {"num_cpus": 2})
    assert calls == {"manifest": 1, "plan": 1}
    assert summary["counts"]["ok"] == 4
    assert pd.read_parquet(run / "curves.parquet").equals(pd.read_parquet(io.BytesIO(before["curves.parquet"])))
    assert len(json.loads((run / "gansweep.json").read_text())["sessions"]) == sessions + 1
    assert assert_ledger_holds(run).equals(pd.read_parquet(io.BytesIO(before["results.parquet"])))


def test_a_damaged_manifest_is_refused(finished_run, tmp_path, monkeypatch):
    base, _ = finished_run
    run = tmp_path / "m" / "h"
    shutil.copytree(base, run, ignore=shutil.ignore_patterns("tune"))
    (run / "gansweep.json").write_text('{"format": "gansweep-run/1", "name": ')
    without_ray(monkeypatch)
    for cmd in ("resume", "status"):
        r = gansweep(cmd, run, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert "damaged manifest" in r.stderr and "cannot be rebuilt" in r.stderr

