"""Helpers for the tests that drive `gansweep` as a user would: subprocesses, real Ray, real files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import json
import math

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ["gan", "ebgan", "ebgan_pt", "began"]
# The dcgan point of every family: G projects to 4x4, D halves 32 -> 4 (models/dcgan.py).
TINY_DCGAN = dict(arch="dcgan", nLayerG=4, nLayerD=4, sizeG=16, sizeD=8)


def strip(history):
    """Epoch metrics without wall times, NaN as None (NaN != NaN once it went through a file)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in e.items()
             if not k.endswith("seconds")} for e in history]


# Python's reprs where a person reads words: a dict ({'ok': 64, ...}) or a list of pairs ([('a', 1)])
REPRS = ("{'", "[('")


def words_only(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fails on a repr in what a gansweep command printed (every `cli` and `gansweep` call of the suite
    goes through here); --verbose output is Ray's and Tune's too, and is not checked."""
    if not {"-v", "--verbose"} & set(map(str, result.args)):
        for line in (result.stdout + result.stderr).splitlines():
            assert not any(r in line for r in REPRS), f"a repr in the output of {result.args[:3]}: {line}"
    return result


def cli(*args, cwd, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`gansweep ARGS` in a new interpreter. One that has not ended by the timeout is asked for its
    threads' stacks (SIGUSR2, sweep/cli/__init__.py), then killed: the failure says where it hung."""
    proc = subprocess.Popen([sys.executable, "-m", "sweep.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR2)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)  # with its local Ray instance
        out, err = proc.communicate()
        raise AssertionError(f"gansweep {' '.join(map(str, args))} still running after {timeout}s; its output:\n"
                             f"{out[-3000:]}\nits stderr, with the stacks:\n{err[-12000:]}") from None
    return words_only(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


def gansweep(*args, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    """`gansweep ARGS` in this process, through sweep.cli.main (the console script's entry point):
    exit status, stdout and stderr as `cli` gives them, without a new interpreter importing torch
    (about 3 s of CPU a call, 70 calls in the suite). For commands that start neither Ray nor a
    process; `cli` runs those. env, as for subprocess, replaces the environment for the call.
    Python warnings are shown on the call's stderr, as a subprocess would print them."""
    import contextlib
    import io
    import warnings

    from sweep.cli import main

    out, err = io.StringIO(), io.StringIO()
    before, here = dict(os.environ), os.getcwd()
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse: --help, --version, a usage error
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(before)
    return words_only(subprocess.CompletedProcess(["gansweep", *map(str, args)], code, out.getvalue(), err.getvalue()))


def without_ray(monkeypatch) -> None:
    """Makes starting Ray in this process fail the test (sweep/runner/cluster.py ray_init), for the
    in-process `gansweep` calls that must end without it: a refusal, the resume of a finished run.
    It checks what they promise, and spares a new interpreter (torch, Ray and pandas imported
    again: 4-5 s of CPU a call, on a suite that keeps both cores busy)."""
    import sweep.runner.cluster

    def no_ray(rt):
        raise AssertionError("this command started Ray")

    monkeypatch.setattr(sweep.runner.cluster, "ray_init", no_ray)


def start(*args, cwd) -> subprocess.Popen:
    """A background `gansweep` in its own session, so the test can kill it and its Ray instance.
    Its stderr goes to cwd/gansweep.stderr, which wait_for quotes if it exits early."""
    err = Path(cwd) / "gansweep.stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "sweep.cli", *map(str, args)], cwd=cwd,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=f)
    proc.stderr_path = err
    return proc


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """pred()'s first non-None value; fails at the timeout, or at once if proc has exited."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = pred()
        if got is not None:
            return got
        if proc is not None and proc.poll() is not None:
            tail = proc.stderr_path.read_text(errors="replace")[-2000:]
            raise AssertionError(f"gansweep exited with {proc.returncode} before {what}: {tail}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def results_with(run: Path, ok_at_least: int):
    """The results table once it shows at least `ok_at_least` finished trials, else None."""
    try:
        df = pd.read_parquet(run / "results.parquet")
    except Exception:
        return None
    return df if (df.status == "ok").sum() >= ok_at_least else None


def session_pids(session_id: int, name_part: str = "") -> list[int]:
    """Processes of a session (optionally whose command line contains name_part)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[3]) != session_id:
                continue
            if name_part and name_part not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                continue
            out.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def listening_addresses(session_id: int) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state held by processes of a session."""
    inodes = set()
    for pid in session_pids(session_id):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                found.add(f[1].split(":")[0])
    return found


# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp{,6} print them
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def assert_ledger_holds(run: Path) -> pd.DataFrame:
    """The run's tables keep every rule of the ledger (sweep/record/rows.py), against its own plan;
    returns results."""
    from sweep.record.rules import check_run
    from sweep.record.rundir import RunDir

    results = pd.read_parquet(run / "results.parquet")
    curves = pd.read_parquet(run / "curves.parquet")
    assert check_run(RunDir(run), results, curves) == []
    return results


def wandb_records(path: Path) -> dict:
    """What an offline W&B run file (run-*.wandb) holds: its name, tags, config, history rows and exit
    code (None: the run was never finished).

    The file is a LevelDB-style log (32 KiB blocks of records, each with a 7-byte header:
    crc32, length, type full/first/middle/last) of wandb's protobuf Records, after a 7-byte
    file header. wandb no longer ships a Python reader, so the test reads it here."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, part, records = Path(path).read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:
            break
        part += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # full, or the last piece of one
            records.append(part)
            part = b""
    out = {"name": None, "tags": [], "config": {}, "history": [], "exit_code": None}
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["name"], out["tags"] = rec.run.display_name, list(rec.run.tags)
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.history.item})
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out


def tensorboard_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of a TensorBoard event file: TFRecords (uint64 length, uint32
    crc, the Event proto, uint32 crc), read with the protos tensorboardX ships."""
    import struct

    from tensorboardX.proto import event_pb2

    data, pos, out = Path(path).read_bytes(), 0, {}
    while pos + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[pos + 12:pos + 12 + n])
        pos += 12 + n + 4
        for v in event.summary.value:
            out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


# --------------------------------------------------------------------------- synthetic runs
def row(family, i_prime, status="ok", nLayerG=2, nLayerD=2, optimD="adam", optimG="adam", lr=0.001,
        seed=0, sizeG=400, arch="mlp", **settings):
    """One results row of a finished (or not) point, with hand-set scores (analysis tests)."""
    from sweep.plan.config import TrialConfig

    cfg = TrialConfig(family=family, arch=arch, nLayerG=nLayerG, nLayerD=nLayerD, optimD=optimD,
                      optimG=optimG, lr=lr, seed=seed, sizeG=sizeG, epochs=2, **settings)
    nan = math.nan
    ok = status == "ok"
    return {"point_id": cfg.point_id, **cfg.as_dict(), "status": status,
            "tune_status": {"ok": "TERMINATED", "diverged": "TERMINATED", "error": "ERROR"}.get(status, "PENDING"),
            "i_prime": i_prime if ok else nan, "inception_score": 1 + i_prime if ok else nan,
            "fid": 100.0 - i_prime if ok else nan, "classes_covered": 5 if ok else nan,
            "epochs_done": 2 if status in ("ok", "diverged") else 0,
            "diverged_reason": "non-finite loss" if status == "diverged" else ""}


def make_run(tmp_path, df, name="syn") -> Path:
    """A run directory holding `df` as its results, a valid ledger and random samples."""
    from sweep.record.results import MANIFEST_FORMAT, write_results

    run = tmp_path / name
    run.mkdir()
    (run / "gansweep.json").write_text(json.dumps({
        "format": MANIFEST_FORMAT, "name": name, "preset": "synthetic", "created": "2026-11-23T00:00:00",
        "gansweep_version": "0.1.0", "git_commit": "abc", "classifier_sha256": "f" * 64,
        "reference_scores": {"i_prime": 13.3, "inception_score": 9.8}, "sessions": []}))
    write_results(df, run)
    # a valid ledger (sweep/record/rows.py): finished points have both epochs, the last one the row's I'
    curves = pd.DataFrame([{"point_id": r.point_id, "epoch": e, "i_prime": r.i_prime * e / 2}
                           for r in df.itertuples() if r.status in ("ok", "diverged") for e in (1, 2)])
    curves.to_parquet(run / "curves.parquet")
    (run / "samples").mkdir()
    rng = np.random.default_rng(0)
    for pid in df.loc[df.status == "ok", "point_id"]:
        np.save(run / "samples" / f"{pid}.npy", rng.integers(0, 256, (64, 32, 32), dtype=np.uint8))
    return run
