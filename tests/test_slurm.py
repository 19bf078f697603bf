"""`gansweep slurm` (sweep/runner/slurm.py): the batch script, and a real two-node Slurm on this machine
(tools/slurm-testbed.sh) running it: a chain of jobs past their time limit, on one node and on two, a job
stopped by scancel, a chain that makes no progress, and a two-node job's Ray cluster: formed with its
token, used on both nodes, a node that cannot join, a node lost mid-sweep, nothing left running.

The Slurm tests need Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them)
and root (the daemons run as root here); elsewhere they are skipped, saying why.
"""
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, assert_ledger_holds, cli, gansweep, results_with, wait_for
from sweep.errors import UserError
from sweep.runner.slurm import time_limit_seconds

# 8 points of 3 epochs of 128 steps, one at a time: long enough (2-6 s a point) that a sweep caught with
# two points finished still runs when the test signals its job (at 32 steps an epoch a fast VM
# finished the whole sweep first: the chain test then saw one job, 2026-12-06)
CHAIN = """
presets:
  chain:
    seeds: [0, 1, 2, 3]
    settings: {epochs: 3, batch_size: 32, n_train: 4096, n_eval: 200}
    grids:
      ebgan: {nLayerG: [2], nLayerD: [2], sizeG: [64], sizeD: [32], dropoutD: [false, true],
              optimD: [adam], optimG: [adam], lr: [0.001]}
"""
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")


def test_time_limits_in_slurms_formats():
    assert [time_limit_seconds(t) for t in ("90", "5:30", "4:00:00", "1-12", "1-2:30", "2-00:00:01")] == \
        [5400, 330, 14400, 129600, 95400, 172801]
    with pytest.raises(UserError):
        time_limit_seconds("an hour")


def test_dry_run_prints_the_chain_script_and_writes_nothing(tmp_path, data_root):
    r = gansweep("slurm", "--preset", "smoke", "--name", "s", "--dry-run", "--time", "2:00:00", "--grace", "120",
            "--cpus-per-node", "16", "--gpus-per-node", "2", "--gpus-per-trial", "0.5", "--partition", "gpu",
            "--sbatch=--qos=long", "--set", "epochs=2", cwd=tmp_path, env={**os.environ, "GANSWEEP_DATA": str(data_root)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    run = tmp_path / "runs" / "s"
    assert [x for x in lines if x.startswith("#SBATCH")] == [
        "#SBATCH --job-name=gansweep-s", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=16", "#SBATCH --time=2:00:00", "#SBATCH --signal=B:USR1@120",
        f"#SBATCH --output={run}/slurm/%j.out", "#SBATCH --open-mode=append", "#SBATCH --gpus-per-node=2",
        "#SBATCH --partition=gpu", "#SBATCH --qos=long"]
    assert f"RUN={run}  # the run directory: a filesystem every node of the job sees" in lines
    start = next(x for x in lines if ' run --' in x).split(' run ', 1)[1]
    assert start == f'--preset smoke --set epochs=2 --name s --storage {tmp_path / "runs"} --gpus-per-trial 0.5 ' \
                    '"${CLUSTER[@]}" &'
    assert f'export GANSWEEP_DATA={data_root}' in lines
    # every node's Ray (head and workers start through one line, ray_node) gets the node's GPUs
    starts = [x for x in lines if "/ray start " in x]
    assert len(starts) == 1 and '--num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus=2 --block' in starts[0], starts
    # and the workers' step asks Slurm for each node's CPUs and GPUs
    assert any(x.strip().startswith('--cpus-per-task="$SLURM_CPUS_PER_TASK" --gpus-per-node=2 bash -c') for x in lines)
    check = subprocess.run(["bash", "-n"], input=r.stdout, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr  # the script parses
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, says", [
    (["--preset", "nope"], "nope"),
    (["--preset", "smoke", "--time", "5", "--grace", "600"], "--grace 600s must be positive and shorter"),
    (["--preset", "smoke", "--num-cpus", "4"], "--num-cpus: each job sets it"),
    (["--resume", "no/such/run"], "no run there"),
    (["--resume", "x", "--preset", "smoke"], "pass Slurm options only"),
    (["--preset", "smoke", "--sbatch", "qos=long"], "one sbatch option"),
    (["--preset", "smoke", "--storage", "s3://bucket/runs"], "a filesystem the nodes share"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, data_root, args, says):
    r = gansweep("slurm", *args, "--dry-run", cwd=tmp_path, env={**os.environ, "GANSWEEP_DATA": str(data_root)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert not r.stdout and not (tmp_path / "runs").exists()


HOSTILE = ("x\ntouch PWNED", "x\rtouch PWNED", "$(id)", "`id`", "../x")
# option -> its clean value (each call also has --preset smoke --name s, but --resume's)
OPTIONS = {"--partition": "gpu", "--account": "lab", "--time": "2:00:00", "--sbatch": "--qos=long",
           "--name": "s", "--storage": "runs", "--preset": "smoke", "--set": "epochs=2", "--seeds": "1",
           "--config": "sweep.yaml", "--data-root": "mnist", "--plugin": "plugin.py", "--resume": "runs/s",
           "--pack": "2"}


def _held(value: str, line: str) -> bool:
    """The value stays text in this line of the script: an #SBATCH line (a comment to bash) or one
    single-quoted word, or a value with nothing for the shell to expand."""
    return (line.startswith("#SBATCH ") or any(value in q for q in re.findall(r"'[^']*'", line))
            or shlex.quote(value) == value)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_value_written_into_the_job_script_is_held_or_refused(tmp_path, data_root, option):
    """Each string option of `gansweep slurm` with a newline, a carriage return, a $(...), a backquote
    and a ../ in its value: refused in one line (exit 2, nothing written, for --dry-run and --submit
    alike), or, where the value is legal, held inside one #SBATCH line or one single-quoted word: the
    script parses (bash -n) and has exactly the lines of the clean value's script, but those that
    hold it."""
    env = {**os.environ, "GANSWEEP_DATA": str(data_root)}
    (tmp_path / "sweep.yaml").write_text((REPO / "sweep.yaml").read_text())
    (tmp_path / "plugin.py").write_text("")

    def slurm(value: str, how: str):
        if option == "--sbatch":
            value = f"--comment={value}" if value != OPTIONS[option] else value
            args = ["--preset", "smoke", "--name", "s", f"--sbatch={value}"]
        elif option == "--resume":
            args = ["--resume", value]
        else:
            args = [*(x for k, v in {"--preset": "smoke", "--name": "s", option: value}.items() for x in (k, v))]
        return value, gansweep("slurm", *args, how, cwd=tmp_path, env=env)

    written = tmp_path / "runs"  # what a refused value must not create
    if option == "--resume":  # a run to resume (only its manifest is read)
        (tmp_path / "runs" / "s").mkdir(parents=True)
        (tmp_path / "runs" / "s" / "gansweep.json").write_text("{}")
        written = tmp_path / "runs" / "s" / "slurm"
    _, clean = slurm(OPTIONS[option], "--dry-run")
    clean_lines = clean.stdout.splitlines()
    for raw in HOSTILE:
        value, r = slurm(raw, "--dry-run")
        if r.returncode == 0:
            assert clean.returncode == 0, clean.stderr
            lines = r.stdout.splitlines()
            assert len(lines) == len(clean_lines), (value, r.stdout)
            check = subprocess.run(["bash", "-n"], input=r.stdout, text=True, capture_output=True)
            assert check.returncode == 0, check.stderr
            shown = value if option not in ("--storage",) else str((tmp_path / value).resolve())
            changed = [x for x, c in zip(lines, clean_lines) if x != c and "written by `gansweep slurm`" not in x]
            assert changed and all(shown in x and _held(shown, x) for x in changed), (value, changed)
            continue
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and not r.stdout, (value, r.stderr)
        assert "Traceback" not in r.stderr
        _, s = slurm(raw, "--submit")  # --submit refuses it the same way: nothing written, nothing queued
        assert s.returncode == 2 and s.stderr == r.stderr, (value, s.stderr)
        assert not written.exists() and not (tmp_path.parent / "x").exists()
    assert not (tmp_path / "PWNED").exists()


def test_several_nodes_refuse_a_node_local_run_directory_before_anything_is_written(tmp_path, data_root):
    """--nodes 2 on a node-local filesystem (this machine's ext4 or overlay): one line naming it, exit 2,
    no script written, nothing queued, for a new run and a resumed one, --dry-run and --submit alike;
    --shared-storage says the user knows better, and the job's `gansweep run` gets it too."""
    env = {**os.environ, "GANSWEEP_DATA": str(data_root)}
    for how in ("--dry-run", "--submit"):
        r = gansweep("slurm", "--preset", "smoke", "--name", "s", "--nodes", "2", how, cwd=tmp_path, env=env)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and not r.stdout, r.stderr
        assert f"--storage {tmp_path / 'runs'} is on a node-local filesystem" in r.stderr
        assert "--shared-storage if it is shared" in r.stderr and not (tmp_path / "runs").exists()
    ok = gansweep("slurm", "--preset", "smoke", "--name", "s", "--nodes", "2", "--shared-storage", "--dry-run",
                  cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "--shared-storage" in next(x for x in ok.stdout.splitlines() if " run --" in x)
    (tmp_path / "runs" / "s").mkdir(parents=True)  # a run to resume (only its manifest is read)
    (tmp_path / "runs" / "s" / "gansweep.json").write_text("{}")
    r = gansweep("slurm", "--resume", tmp_path / "runs" / "s", "--nodes", "2", "--dry-run", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "node-local filesystem" in r.stderr and not (tmp_path / "runs" / "s" / "slurm").exists()
    r = gansweep("slurm", "--resume", tmp_path / "runs" / "s", "--nodes", "2", "--shared-storage", "--dry-run",
                 cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A two-node Slurm on this machine (tools/slurm-testbed.sh: slurmd n1 at 127.0.0.2 and n2 at
    127.0.0.3, slurmctld and munge), private to this module: its own config, ports, state and munge
    socket. Yields the environment that points Slurm's commands at it (SLURM_CONF)."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing; apt-get install slurmctld slurmd "
                    "slurm-client munge, as .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("the test bed's Slurm runs its daemons as root")
    d = tmp_path_factory.mktemp("slurm")
    subprocess.run([REPO / "tools" / "slurm-testbed.sh", "start", d, "2"], check=True, capture_output=True)
    yield {"SLURM_CONF": str(d / "slurm.conf")}
    subprocess.run([REPO / "tools" / "slurm-testbed.sh", "stop", d])


def _true(cond: bool) -> bool | None:
    """wait_for waits for a value that is not None: a condition's False must read as None."""
    return True if cond else None


def _jobs(env: dict) -> list[str]:
    r = subprocess.run(["squeue", "-h", "-o", "%i"], env={**os.environ, **env}, capture_output=True, text=True)
    return r.stdout.split()


def _outputs(run: Path) -> dict[int, str]:
    return {int(f.stem): f.read_text() for f in (run / "slurm").glob("*.out")}


@pytest.mark.ray
@pytest.mark.parametrize("nodes", [1, 2])
def test_a_chain_of_jobs_stops_at_the_limit_warning_and_finishes_every_point_once(tmp_path, data_root, slurm, nodes):
    """The first job gets Slurm's time-limit warning while the sweep runs: it stops the sweep and
    submits the next job, which resumes it; every point ends ok exactly once over two jobs, the
    ledger's rules kept, both job ids in the run's sessions, and a report builds.

    The warning is sent the way Slurm sends it at `--signal=B:USR1@GRACE` (USR1 to the batch shell
    alone), by `scancel --batch --signal=USR1` once two points are done. A real one-minute limit
    was tried first: Slurm's limits count whole minutes and it sends the warning up to a minute
    early, so a job kept 15-45 s, which on a loaded machine went to start-up alone (20 jobs of
    no progress in CI) and on an idle one finished the sweep in the first job."""
    (tmp_path / "sweep.yaml").write_text(CHAIN)
    env = {**os.environ, "GANSWEEP_DATA": str(data_root), **slurm}
    several = ["--nodes", "2", "--shared-storage"] if nodes == 2 else []
    r = cli("slurm", "--preset", "chain", "--name", "c", "--cpus-per-node", "1", "--time", "20", "--grace", "60",
            *several, "--submit", cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stdout.startswith("submitted job "), r.stderr
    first = int(r.stdout.split()[2].rstrip(":"))
    run = tmp_path / "runs" / "c"
    wait_for(lambda: results_with(run, 2), 300, "two finished points")
    subprocess.run(["scancel", "--batch", "--signal=USR1", str(first)], env={**os.environ, **slurm}, check=True)
    wait_for(lambda: _true(not _jobs(slurm) and any("no successor" in o for o in _outputs(run).values())), 300,
             "the chain to end")
    outs = _outputs(run)
    assert sorted(outs) == [first, first + 1], outs
    assert "time limit in 60s: stopping the sweep" in outs[first], outs[first]
    assert "gansweep: SIGTERM: sweep stopped;" in outs[first], outs[first]
    assert f"submitted job {first + 1} to resume the run" in outs[first], outs[first]
    assert "the sweep is finished" in outs[first + 1], outs[first + 1]
    assert f"job {first + 1} (2 of at most 20)" in outs[first + 1], outs[first + 1]
    if nodes == 2:  # each job forms its own cluster, and leaves nothing of it
        assert all("gansweep-slurm: Ray cluster of 2 nodes up in " in outs[j] for j in outs), outs
        wait_for(lambda: _true(not _job_processes(first) and not _job_processes(first + 1)), 60, "no process left")
    df = assert_ledger_holds(run)
    assert len(df) == 8 and (df.status == "ok").all() and df.point_id.is_unique
    status = gansweep("status", run, "--check", "--finished", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"  slurm jobs: {first}, {first + 1}" in status.stdout.splitlines(), status.stdout
    rep = gansweep("report", run, cwd=tmp_path, env=env)
    assert rep.returncode == 0 and (run / "report" / "report.html").exists(), rep.stderr


@pytest.mark.ray
def test_scancel_stops_the_sweep_cleanly_and_slurm_resume_finishes_it(tmp_path, data_root, slurm):
    (tmp_path / "sweep.yaml").write_text(CHAIN)
    env = {**os.environ, "GANSWEEP_DATA": str(data_root), **slurm}
    r = cli("slurm", "--preset", "chain", "--name", "x", "--cpus-per-node", "1", "--time", "30", "--submit",
            cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    job = r.stdout.split()[2].rstrip(":")
    run = tmp_path / "runs" / "x"
    wait_for(lambda: results_with(run, 1), 300, "a first point to finish")
    subprocess.run(["scancel", job], env={**os.environ, **slurm}, check=True)
    wait_for(lambda: _true(not _jobs(slurm) and "no successor" in _outputs(run).get(int(job), "")),
             120, "the cancelled job to end")
    out = _outputs(run)[int(job)]
    assert "TERM (scancel or the time limit): the sweep stops" in out, out
    assert "gansweep: SIGTERM: sweep stopped;" in out and "Traceback" not in out, out
    assert "stopped by TERM (exit status 143); no successor: gansweep slurm --resume" in out, out
    df = assert_ledger_holds(run)
    assert set(df.status) == {"ok", "pending"}, df.status.value_counts()
    assert gansweep("status", run, "--finished", cwd=tmp_path, env=env).returncode == 3  # what the chain asks

    r = cli("slurm", "--resume", run, "--cpus-per-node", "1", "--time", "30", "--submit", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: _true(not _jobs(slurm) and len(_outputs(run)) == 2), 300, "the resumed job to end")
    assert "the sweep is finished" in _outputs(run)[int(r.stdout.split()[2].rstrip(":"))]
    df = assert_ledger_holds(run)
    assert len(df) == 8 and (df.status == "ok").all()


def _job_processes(job: int) -> list[str]:
    """Every process still running of Slurm job `job` (its environment says SLURM_JOB_ID=job): the
    job's Ray processes included, whose command lines Ray rewrites (ray::ImplicitFunc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"SLURM_JOB_ID={job}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name} {cmdline[:160]}")
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return found


def _submitted(r) -> int:
    assert r.returncode == 0 and r.stdout.startswith("submitted job "), r.stdout + r.stderr
    return int(r.stdout.split()[2].rstrip(":"))


def _job_ended(slurm: dict, run: Path, job: int, within: float = 300) -> str:
    """The job's output once it has ended and nothing of it runs any more (its Ray on both nodes)."""
    wait_for(lambda: _true(not _jobs(slurm) and "gansweep-slurm: the sweep" in _outputs(run).get(job, "")
                           and not _job_processes(job)), within, f"job {job} to end, leaving no process")
    return _outputs(run)[job]


@pytest.mark.ray
def test_a_two_node_job_forms_one_ray_cluster_uses_both_nodes_and_leaves_nothing(tmp_path, data_root, slurm):
    """The issue's command, from a folder on a local disk: the run directory must be declared shared
    (refused before anything is queued), then the sweep runs on both nodes' Ray, authenticated by the
    job's own token, and nothing of the job is left when it ends."""
    env = {**os.environ, "GANSWEEP_DATA": str(data_root), **slurm}
    # smoke's points at 64 steps an epoch for 3 epochs (smoke itself: 8 for 2): 1.5-17 s each, about 30 s in all
    # for one node, some 3x the time n2 takes to start its trial worker (both CPU-bound, so the ratio holds under
    # load). With Tune's actor reuse n1's worker takes the next point while n2's starts: a loaded CI machine once
    # ran all seven 16-step points on n1 before n2's worker was up
    args = ("slurm", "--preset", "smoke", "--name", "two", "--nodes", "2", "--cpus-per-node", "1", "--time", "20",
            "--set", "n_train=2048", "--set", "epochs=3")
    r = cli(*args, "--submit", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "node-local filesystem" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert not _jobs(slurm) and not (tmp_path / "runs").exists()
    job = _submitted(cli(*args, "--shared-storage", "--submit", cwd=tmp_path, env=env))
    run = tmp_path / "runs" / "two"
    out = _job_ended(slurm, run, job)
    assert "gansweep-slurm: Ray cluster of 2 nodes up in " in out and out.rstrip().endswith("no successor"), out
    assert "Traceback" not in out and "did not join" not in out, out
    df = assert_ledger_holds(run)
    assert len(df) == 7 and (df.status == "ok").all() and df.point_id.is_unique
    assert set(df.node) == {"n1", "n2"}, df.node.value_counts()  # two 1-CPU nodes: two trials at a time
    st = gansweep("status", run, "--check", cwd=tmp_path, env=env)
    assert st.returncode == 0 and "  finished points by node: n1 " in st.stdout, st.stdout
    # the token: readable by its owner alone while the job ran, removed when it ended; each node's Ray output
    assert not list((run / "slurm").glob("*.token"))
    assert {f.name for f in (run / "slurm").glob("*-ray-*.log")} == {f"{job}-ray-n1.log", f"{job}-ray-n2.log"}
    script = (run / "slurm" / "job.sbatch").read_text()
    assert "RAY_AUTH_MODE=token" in script and "umask 077" in script


@pytest.mark.ray
def test_a_node_that_cannot_join_is_named_and_the_sweep_runs_on_the_others(tmp_path, data_root, slurm):
    """n2's Ray given a token that is not the job's: Ray refuses it; after --join-timeout the head names
    the node and the sweep runs on n1 alone."""
    env = {**os.environ, "GANSWEEP_DATA": str(data_root), **slurm}
    r = cli("slurm", "--preset", "smoke", "--name", "j", "--nodes", "2", "--cpus-per-node", "1", "--time", "20",
            "--shared-storage", "--join-timeout", "15", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "j"
    script = run / "slurm" / "job.sbatch"
    wrong = tmp_path / "wrong.token"
    wrong.write_text("0" * 64)
    text = script.read_text()
    assert text.count("bash -c 'ray_node \"$0\"'") == 1
    script.write_text(text.replace("bash -c 'ray_node \"$0\"'", f"env RAY_AUTH_TOKEN_PATH={wrong} bash -c 'ray_node \"$0\"'"))
    r = subprocess.run(["sbatch", "--parsable", script], env=env, capture_output=True, text=True, check=True)
    job = int(r.stdout.strip())
    out = _job_ended(slurm, run, job)
    assert ("gansweep-slurm: node n2 (127.0.0.3) did not join the Ray cluster within 15 s (its Ray's output: "
            f"{run}/slurm/{job}-ray-n2.log)") in out.splitlines(), out
    assert "gansweep-slurm: the sweep runs on 1 of 2 nodes" in out and "the sweep is finished" in out, out
    assert "Authentication token is missing or incorrect" in (run / "slurm" / f"{job}-ray-n2.log").read_text()
    df = assert_ledger_holds(run)
    assert len(df) == 7 and (df.status == "ok").all() and set(df.node) == {"n1"}


@pytest.mark.ray
def test_losing_a_node_mid_sweep_names_it_and_the_other_finishes_every_point_once(tmp_path, data_root, slurm):
    """n2's raylet killed once a point is done: the driver names the node, Tune retries its trial from
    its checkpoint on n1, and every point ends ok exactly once. Ray's GCS takes about 15 s to declare a
    node dead (its health checks, 15-20 s here), so the points train 16 epochs: the sweep outlasts that
    on one node (7 points left of 16 epochs at 0.3-0.7 s an epoch: 35-80 s; at 6 epochs CI's sweep
    ended 16 s after the start, before n2 was declared dead)."""
    (tmp_path / "sweep.yaml").write_text(CHAIN)
    env = {**os.environ, "GANSWEEP_DATA": str(data_root), **slurm}
    job = _submitted(cli("slurm", "--preset", "chain", "--name", "l", "--nodes", "2", "--cpus-per-node", "1",
                         "--time", "20", "--shared-storage", "--set", "epochs=16", "--submit", cwd=tmp_path, env=env))
    run = tmp_path / "runs" / "l"
    wait_for(lambda: results_with(run, 1), 300, "a finished point")
    raylets = [p.split()[0] for p in _job_processes(job) if "raylet/raylet" in p and "gansweep-ray-" in p
               and f"gansweep-ray-{job}-n2" in p]
    assert len(raylets) == 1, _job_processes(job)
    os.kill(int(raylets[0]), 9)
    out = _job_ended(slurm, run, job)
    assert "[gansweep] warning: Ray node n2 (127.0.0.3) left the cluster: its trials fail and are retried from " \
           "their last checkpoints on the 1 node(s) left" in out.splitlines(), out
    assert out.count("Raylet is terminated") <= 1, out  # Ray's 20-line dump, as one line
    assert "the sweep is finished" in out and "Traceback" not in out and "[state-dump]" not in out, out
    df = assert_ledger_holds(run)
    assert len(df) == 8 and (df.status == "ok").all() and df.point_id.is_unique and (df.epochs_done == 16).all()
    assert gansweep("status", run, "--check", cwd=tmp_path, env=env).returncode == 0


@pytest.mark.ray
def test_a_chain_whose_jobs_finish_no_point_stops_chaining_and_says_why(tmp_path, data_root, slurm):
    """Each job warned of its time limit before any point finished (40 epochs a point): job 1 chains,
    job 2 is the second job in a row without progress and submits no third."""
    (tmp_path / "sweep.yaml").write_text(CHAIN)
    env = {**os.environ, "GANSWEEP_DATA": str(data_root), **slurm}
    first = _submitted(cli("slurm", "--preset", "chain", "--name", "i", "--cpus-per-node", "1", "--time", "20",
                           "--grace", "60", "--set", "epochs=40", "--submit", cwd=tmp_path, env=env))
    run = tmp_path / "runs" / "i"
    for job in (first, first + 1):
        wait_for(lambda: _true(re.search(r"\d+/8 finished", _outputs(run).get(job, "")) is not None), 300,
                 f"job {job}'s sweep to start")
        subprocess.run(["scancel", "--batch", "--signal=USR1", str(job)], env=env, check=True)
        wait_for(lambda: _true(job not in map(int, _jobs(slurm))), 120, f"job {job} to end")
    wait_for(lambda: _true(not _jobs(slurm)), 60, "the chain to end")
    outs = _outputs(run)
    assert sorted(outs) == [first, first + 1], outs
    assert f"submitted job {first + 1} to resume the run" in outs[first], outs[first]
    assert ("gansweep-slurm: the last 2 jobs finished no point (0 finished in all): not submitting another (a job "
            "that only starts up needs a longer --time); gansweep slurm --resume") in outs[first + 1], outs[first + 1]
    df = assert_ledger_holds(run)
    assert len(df) == 8 and (df.status == "pending").all()
