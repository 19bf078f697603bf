"""A run that lives wholly in object storage (sweep/record/store.py), against a real S3-compatible
server on 127.0.0.1 (moto's server mode, from the test extras): its driver SIGKILLed, its local
working copy deleted, and the run resumed, checked and reported from fresh folders with nothing
but the URI."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from helpers import assert_ledger_holds, cli, gansweep, results_with, start, wait_for

BUCKET = "gansweep-test"
SIX = """
presets:
  s:
    seeds: [0, 1, 2]
    settings: {epochs: 3, batch_size: 32, n_train: 2048, n_eval: 200}
    grids:
      ebgan: {nLayerG: [2], nLayerD: [2], sizeG: [64], sizeD: [32], dropoutD: [false, true],
              optimD: [adam], optimG: [adam], lr: [0.001]}
"""


def _s3_client(env: dict):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


@contextmanager
def _moto(ready, server_env: dict | None = None):
    """moto's S3 server on a free loopback port (server_env: its own variables), once ready(env) says it
    answers as it should (the server takes a moment to listen); yields the environment that points
    pyarrow and boto3 at it, and stops the server."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.skip("moto's server is not installed (pip install -e '.[test]' installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **(server_env or {})})
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        for _ in range(100):
            if ready(env):
                break
            time.sleep(0.2)
        else:
            pytest.fail("moto's S3 server did not start")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _made_bucket(env: dict) -> bool:
    try:
        _s3_client(env).create_bucket(Bucket=BUCKET)
        return True
    except Exception:  # not listening yet
        return False


def _refuses(env: dict) -> bool:
    try:
        _s3_client(env).list_buckets()
    except Exception as e:  # not listening yet, or refusing the keys
        return "InvalidAccessKeyId" in str(e) or "AccessDenied" in str(e) or "403" in str(e)
    return False


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port, with one empty bucket; yields its environment."""
    with _moto(_made_bucket) as env:
        yield env


@pytest.fixture(scope="module")
def s3_locked():
    """moto's S3 server checking credentials (INITIAL_NO_AUTH_ACTION_COUNT=0) and knowing none: every
    request is refused, as wrong credentials are; yields its environment."""
    with _moto(_refuses, {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as env:
        yield env


def _bucket(env: dict, path: str):
    """(pyarrow filesystem, path) of s3://BUCKET/path, with env's endpoint and keys, which from_uri
    reads from the environment (set only for the call)."""
    from pyarrow import fs as pafs

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return pafs.FileSystem.from_uri(f"s3://{BUCKET}/{path}")
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _bucket_results(env: dict, prefix: str, ok_at_least: int) -> pd.DataFrame | None:
    """The results table as the bucket holds it, once it shows at least ok_at_least finished points."""
    fs, path = _bucket(env, f"{prefix}/results.parquet")
    try:
        with fs.open_input_file(path) as f:
            df = pd.read_parquet(f)
    except (OSError, ValueError):  # not there yet, or caught mid-upload
        return None
    return df if (df.status == "ok").sum() >= ok_at_least else None


def _objects(env: dict, prefix: str) -> set[str]:
    from pyarrow import fs as pafs

    fs, root = _bucket(env, prefix)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path.removeprefix(f"{BUCKET}/{prefix}/") for i in infos if i.type == pafs.FileType.File}


@pytest.mark.ray
def test_a_run_in_s3_resumes_from_a_fresh_folder_with_only_its_uri(tmp_path, data_root, s3_server, monkeypatch):
    for k, v in {**s3_server, "GANSWEEP_DATA": str(data_root)}.items():
        monkeypatch.setenv(k, v)
    first = tmp_path / "first"
    first.mkdir()
    (first / "sweep.yaml").write_text(SIX)
    uri = f"s3://{BUCKET}/runs/s"
    # 256 steps an epoch, one trial at a time: the driver still runs when the test looks at its lease
    proc = start("run", "--preset", "s", "--name", "s", "--storage", f"s3://{BUCKET}/runs", "--num-cpus", "2",
                 "--max-concurrent", "1", "--quiet", "--set", "n_train=8192", cwd=first)
    local = first / "runs" / "s"
    wait_for(lambda: results_with(local, 2), 240, "two finished points", proc)
    # the record is in the bucket beside Tune's experiment, pushed after each write of the tables: what
    # the bucket's table says finished is what must not train again (the local table can be a push ahead)
    before = wait_for(lambda: _bucket_results(s3_server, "runs/s", 2), 60, "two finished points in the bucket", proc)
    stored = _objects(s3_server, "runs/s")
    assert {"gansweep.json", "sweep.yaml", "results.parquet", ".gansweep.lease"} <= stored
    assert any(o.startswith("tune/") for o in stored) and not (local / "tune").exists()
    # one driver per bucket run: a second one, from another folder, is refused while the lease is renewed
    lease = json.loads(_s3_client(s3_server).get_object(Bucket=BUCKET, Key="runs/s/.gansweep.lease")["Body"].read())
    assert (lease["pid"], lease["host"], lease["command"]) == (proc.pid, socket.gethostname(), "run"), lease
    other = tmp_path / "other"
    other.mkdir()
    r = cli("resume", uri, cwd=other)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"gansweep: {uri} is in use by `gansweep run` (pid {proc.pid} on "
                               f"{socket.gethostname()}, since {lease['since']}), its lease renewed "), r.stderr
    assert not list(other.iterdir())  # nothing made here
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray instance
    proc.wait(timeout=30)
    shutil.rmtree(first)  # the working copy is gone: only the bucket is left
    finished = before[before.status == "ok"].set_index("point_id")

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    r = cli("resume", uri, "--num-cpus", "2", cwd=fresh)
    assert r.returncode == 0, r.stderr[-3000:]
    # the killed driver's lease is taken over at once: its process is gone from this host
    assert (f"took over the lease of {uri} from `gansweep run` (pid {proc.pid} on {socket.gethostname()}, since "
            f"{lease['since']}), whose process is gone") in r.stderr, r.stderr
    assert ".gansweep.lease" not in _objects(s3_server, "runs/s")  # given back at the end
    after = assert_ledger_holds(fresh / "runs" / "s")
    assert len(after) == 6 and after.point_id.is_unique and (after.status == "ok").all()
    a = after.set_index("point_id").loc[finished.index]  # what had finished was not trained again
    assert (a["i_prime"] == finished["i_prime"]).all() and (a["train_seconds"] == finished["train_seconds"]).all()

    third = tmp_path / "third"  # status and report from yet another folder, reading the bucket
    third.mkdir()
    st = gansweep("status", uri, "--check", cwd=third)  # in this process: neither starts Ray or a process
    assert st.returncode == 0 and "ok 6" in st.stdout and "all 6 rows keep the ledger's rules" in st.stdout, \
        st.stdout + st.stderr
    rep = gansweep("report", uri, cwd=third)
    assert rep.returncode == 0, rep.stderr
    stored = _objects(s3_server, "runs/s")
    assert {f"samples/{p}.npy" for p in after.point_id} <= stored and "report/report.html" in stored
    remote = pd.read_parquet(third / "runs" / "s" / "results.parquet")
    assert (remote.status == "ok").sum() == 6
    assert json.loads((third / "runs" / "s" / "gansweep.json").read_text())["tune_path"] == f"{uri}/tune"


def test_a_uri_without_a_run_is_one_line_and_exit_2(tmp_path, s3_server):
    env = {**os.environ, **s3_server}
    for cmd in ("resume", "status", "report"):  # refused before Ray starts: in this process
        r = gansweep(cmd, f"s3://{BUCKET}/runs/nothing-here", cwd=tmp_path, env=env)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no run there" in r.stderr, (cmd, r.stderr)
    assert not (tmp_path / "runs").exists()


def _stopped_endpoint() -> dict:
    """The environment of an S3 endpoint where nothing listens (a port just freed: a typo'd port, a
    server that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.mark.parametrize("case", ["stopped endpoint", "missing bucket", "wrong credentials"])
def test_storage_that_cannot_be_reached_is_one_line_before_anything_is_made(tmp_path, data_root, s3_server,
                                                                           s3_locked, monkeypatch, case):
    """run, resume, status, report and compare against a stopped endpoint, a bucket that does not exist
    and credentials the server refuses: each is one line naming the URI and the store's reason, exit 2,
    no traceback, no local folder, nothing made in the store; found before Ray starts (`without_ray`).
    gansweep slurm keeps runs on shared filesystems and refuses any URI (tests/test_slurm.py)."""
    from helpers import without_ray

    without_ray(monkeypatch)
    env, bucket, reason = {
        "stopped endpoint": (_stopped_endpoint(), BUCKET, "NETWORK_CONNECTION"),
        "missing bucket": (s3_server, "no-such-bucket", "no such bucket 'no-such-bucket'"),
        "wrong credentials": (s3_locked, BUCKET, "ACCESS_DENIED"),
    }[case]
    env = {**os.environ, **env, "GANSWEEP_DATA": str(data_root)}
    uri = f"s3://{bucket}/unreached"
    calls = {"run": ["run", "--preset", "smoke", "--name", "s", "--storage", uri, "--num-cpus", "1"],
             "resume": ["resume", f"{uri}/s"], "status": ["status", f"{uri}/s", "--check"],
             "report": ["report", f"{uri}/s"], "compare": ["compare", f"{uri}/s", f"{uri}/t"]}
    for name, args in calls.items():
        r = gansweep(*args, cwd=tmp_path, env=env)
        said = r.stderr.strip()
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and not r.stdout, (name, r.stderr)
        assert "cannot reach this storage" in said and reason in said and f"s3://{bucket}/unreached" in said, (name, said)
        assert "Traceback" not in r.stderr
        assert not (tmp_path / "runs").exists(), name
    if case != "stopped endpoint":  # the store holds what it held: one bucket, and no object in it
        assert _objects(s3_server, "unreached") == set()
        assert [b["Name"] for b in _s3_client(s3_server).list_buckets()["Buckets"]] == [BUCKET]


class Switch:
    """A TCP forwarder from a loopback port to moto's: `down()` closes the port and every connection
    through it (connections are refused, as by an endpoint that is down), `up()` opens it again."""

    def __init__(self, target: str):
        import threading

        self.target = target.removeprefix("http://").split(":")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.lock, self.conns, self.server = threading.Lock(), [], None
        self.up()

    def up(self) -> None:
        import threading

        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server) -> None:
        import threading

        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed by down()
                return
            try:
                upstream = socket.create_connection((self.target[0], int(self.target[1])))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self) -> None:
        self.server.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
            self.conns = []


@pytest.mark.ray
def test_storage_lost_mid_sweep_stops_it_cleanly_and_resume_finishes_it(tmp_path, data_root, s3_server, monkeypatch):
    """The S3 endpoint goes down while a sweep writes to it: the sweep stops as a full disk stops it,
    one line naming the storage and its reason, exit 69, unfinished points pending; once the endpoint
    is back, `resume URI` finishes every point once."""
    switch = Switch(s3_server["AWS_ENDPOINT_URL"])
    for k, v in {**s3_server, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{switch.port}",
                 "GANSWEEP_DATA": str(data_root)}.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "sweep.yaml").write_text(SIX)
    uri = f"s3://{BUCKET}/mid/s"
    proc = start("run", "--preset", "s", "--name", "s", "--storage", f"s3://{BUCKET}/mid", "--num-cpus", "2",
                 "--max-concurrent", "1", cwd=tmp_path)
    wait_for(lambda: _bucket_results(s3_server, "mid/s", 1), 240, "a finished point in the bucket", proc)
    switch.down()
    t0 = time.time()
    try:
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = proc.stderr_path.read_text()
    last = err.strip().splitlines()[-1]
    print(f"stopped {time.time() - t0:.0f}s after the endpoint went down; stderr:\n{err[-3000:]}")
    assert proc.returncode == 69, err[-3000:]
    assert last.startswith("gansweep: storage unreachable (") and "NETWORK_CONNECTION" in last, last
    assert "sweep stopped" in last and last.endswith(f"continue with: gansweep resume {uri}"), last
    assert "Traceback" not in err
    local = pd.read_parquet(tmp_path / "runs" / "s" / "results.parquet")
    assert set(local.status) <= {"ok", "pending"} and (local.status == "pending").any()
    switch.up()
    r = cli("resume", uri, "--num-cpus", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    after = assert_ledger_holds(tmp_path / "runs" / "s")
    assert len(after) == 6 and after.point_id.is_unique and (after.status == "ok").all()


def test_a_stale_lease_is_taken_over_and_its_holder_finds_out_at_its_next_beat(s3_server, monkeypatch, caplog):
    """sweep/record/lease.py against the S3 server's own conditional writes, in this process (STALE_S and
    BEAT_S made short): a lease held elsewhere and renewed is refused; not renewed for STALE_S, it is
    taken over; the driver that held it finds out at its next beat (on_lost, with the new holder)."""
    import logging

    from sweep.errors import UserError
    from sweep.record import lease as lease_mod

    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(lease_mod, "STALE_S", 2.0)
    monkeypatch.setattr(lease_mod, "BEAT_S", 0.5)
    uri, key = f"s3://{BUCKET}/leases/a", "leases/a/.gansweep.lease"
    s3 = _s3_client(s3_server)
    elsewhere = {"host": "elsewhere", "pid": 1, "command": "resume", "since": "2026-12-06T00:00:00+00:00"}
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(elsewhere).encode())
    with pytest.raises(UserError, match=r"is in use by `gansweep resume` \(pid 1 on elsewhere, since "
                                        r"2026-12-06T00:00:00\+00:00\), its lease renewed \d+s ago"):
        lease_mod.Lease(uri, "resume", lambda who: None).__enter__()
    time.sleep(3.1)  # S3's Last-Modified counts whole seconds: past STALE_S for sure
    lost = []
    with caplog.at_level(logging.WARNING, logger="gansweep"):
        held = lease_mod.Lease(uri, "resume", lost.append).__enter__()
    assert "took over the lease of s3://gansweep-test/leases/a from `gansweep resume` (pid 1 on elsewhere" in \
        caplog.text and "not renewed for " in caplog.text
    mine = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert (mine["pid"], mine["host"]) == (os.getpid(), socket.gethostname())
    # another driver takes it (as after this one stalled past STALE_S): at its next beat this one stops
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(elsewhere).encode())
    wait_for(lambda: lost or None, 10, "the holder to find its lease taken")
    assert lost == ["`gansweep resume` (pid 1 on elsewhere, since 2026-12-06T00:00:00+00:00)"]
    held.__exit__(None, None, None)
    assert json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == elsewhere  # not ours to delete
    # given back by its holder, a lease is free at once
    s3.delete_object(Bucket=BUCKET, Key=key)
    with lease_mod.Lease(uri, "run", lost.append):
        assert json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["command"] == "run"
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="leases/a/")


def test_a_failed_trials_error_is_read_from_the_bucket_when_this_folder_has_no_copy(s3_server, monkeypatch,
                                                                                     tmp_path):
    """A run resumed from a bucket in a fresh folder: Tune's trial of an earlier session has its
    error.txt in the bucket only (its staging folder was on the machine that ran it). The row says the
    error's last line, not 'error (no message recorded)'."""
    from pyarrow import fs as pafs

    from sweep.runner.callback import trial_error_line

    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    s3 = _s3_client(s3_server)
    s3.put_object(Bucket=BUCKET, Key="errs/tune/t1/error.txt",
                  Body=b"Failure # 1 (occurred at 2026-12-06)\nTraceback ...\nValueError: the checkpoint is damaged\n")
    fs, _ = _bucket(s3_server, "errs")

    class Storage:
        storage_filesystem = fs

    class Trial:  # what trial_error_line reads of Tune's Trial
        trial_id, num_failures, storage, error_file = "t1", 1, Storage(), str(tmp_path / "staging" / "error.txt")
        path = f"{BUCKET}/errs/tune/t1"

    assert trial_error_line(Trial()) == "ValueError: the checkpoint is damaged"
    Trial.trial_id, Trial.path = "t2", f"{BUCKET}/errs/tune/t2"  # no error file anywhere
    assert trial_error_line(Trial()) == "error (no message recorded)"
    assert isinstance(fs, pafs.S3FileSystem)


def test_storage_is_read_once_into_where_a_run_goes(tmp_path, monkeypatch, s3_server):
    """--storage as a Storage: a folder holds RUN/<name> and its tune/; a URI is worked on in
    ./runs/<name> and its Tune experiment and record live under URI/<name>; a run named on a command
    line is a path, or a URI's working copy and store."""
    from sweep.record.store import Storage, record_uri, run_argument

    monkeypatch.chdir(tmp_path)
    local = Storage.parse("big/runs")
    assert (local.remote, local.run_dir("a"), local.run_uri("a")) == (False, Path("big/runs/a"), None)
    assert local.tune_path("a") == str(tmp_path / "big" / "runs" / "a" / "tune")  # absolute: Tune's
    s3 = Storage.parse("s3://bucket/team/runs/")
    assert (s3.remote, s3.root, s3.run_dir("a")) == (True, "s3://bucket/team/runs", Path("runs/a"))
    assert (s3.tune_path("a"), s3.run_uri("a")) == ("s3://bucket/team/runs/a/tune", "s3://bucket/team/runs/a")
    assert record_uri(s3.tune_path("a")) == s3.run_uri("a") == record_uri(s3.tune_path("a") + "/")
    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    path, store = run_argument(f"s3://{BUCKET}/team/runs/a/")
    assert path == Path("runs/a") and store.uri == f"s3://{BUCKET}/team/runs/a"
    assert run_argument("runs/x") == (Path("runs/x"), None)
