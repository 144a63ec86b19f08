"""Sweeps on a real SLURM: a single-node cluster on this machine (tests/local_slurm.sh), brought up for
these tests and torn down after. A job that SLURM stops (time limit, preemption) is requeued and
resumes from its checkpoint, ending exactly as a job that was never stopped.

Needs Debian's slurm-wlm and munge, and root; skipped, saying so, where they are missing
(.ci/run installs them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from attnlab.checkpoints import read_checkpoint
from attnlab.train import train

from .conftest import TINY, TRAIN, compose_train, python, scalar_steps, start_local_slurm, stop_local_slurm
from .test_nothing_lost import RESULT_KEYS, same_weights

MISSING = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(b) is None]
NOT_INSTALLED = f"SLURM not installed ({', '.join(MISSING)} missing): apt-get install -y slurm-wlm munge (.ci/run does)"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=NOT_INSTALLED),
    pytest.mark.skipif(os.geteuid() != 0, reason="the local SLURM cluster runs its jobs as root"),
]
# The local cluster's partition; its states asked every 2 s (10 s by default: a real cluster's scheduler is shared);
# a result waited for 1 s after its job ended (15 s by default: a shared file system may show it late; here one disk)
ON_SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.poll_s=2",
            "hydra.launcher.grace_s=1"]  # fmt: skip
# One job of 12 epochs x 40 steps: long enough to be stopped in the middle. The stop is sent once the first epoch's
# checkpoint is on disk; in this machine's fastest hour 4 epochs were done before it landed (about 0.4 s after).
EPOCHS = 12
STEPS = EPOCHS * 40
JOB = [*TINY, "data.n_train=2560", f"trainer.max_epochs={EPOCHS}", "data=halfswap", "model.pos_enc=sinusoidal"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """The environment of a running local cluster (SLURM_CONF set); partition `debug`."""
    where = tmp_path_factory.mktemp("slurm")
    env = start_local_slurm(where)
    assert env is not None
    yield env
    stop_local_slurm(where, env)


def squeue(env: dict[str, str]) -> list[tuple[str, ...]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True, text=True).stdout
    return [tuple(line.split()) for line in out.splitlines()]


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_sweep_left_behind():
    """A test that fails while its sweep runs leaves no submitting process behind."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def sweep_on_slurm(env: dict[str, str], sweep: Path, *args: str) -> subprocess.Popen:
    log = open(sweep.parent / f"{sweep.name}.log", "w")  # noqa: SIM115 (the process writes it)
    command = [*python(), str(TRAIN), "-m", *args, *ON_SLURM]
    proc = subprocess.Popen(
        [*command, f"hydra.sweep.dir={sweep}"], cwd=sweep.parent, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    STARTED.append(proc)
    return proc


def wait_for(path_glob: str, where: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not list(where.glob(path_glob)):
        assert proc.poll() is None, (where.parent / f"{where.name}.log").read_text()[-3000:]
        assert time.time() < deadline, f"{path_glob} never appeared under {where}"
        time.sleep(0.2)


def job_dir(sweep: Path) -> Path:
    (job,) = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    return job


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The jobs of STOPS, each never stopped (in this process: the same numbers as anywhere), by seed."""
    runs = {}
    for seed in STOPS:
        runs[seed] = tmp_path_factory.mktemp("calm") / "run"
        train(compose_train(runs[seed], *JOB, f"seed={seed}"))
    return runs


def kill_and_requeue(env: dict[str, str], job_id: str) -> None:
    """SIGKILL of the job's training process (no time to save anything), then `scontrol requeue`."""
    pids = training_processes(job_id)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["scontrol", "requeue", job_id], env=env, check=True)


# How a job is stopped once, mid-run (seed -> how): SLURM's signal for a time limit (what it sends
# signal_delay_s before the limit), a preemption (SIGTERM, then back in the queue), and a kill.
STOPS: dict[int, tuple[str, Any]] = {
    0: ("time limit", lambda env, job: subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True)),
    1: ("preemption", lambda env, job: subprocess.run(["scontrol", "requeue", job], env=env, check=True)),
    2: ("killed, requeued", kill_and_requeue),
}


# The time limit's signal in a sweep of its own: slurmctld refuses a signal to a running task of an array while
# another task is pending ("can not be altered now"; scancel retries it for seconds, reaching a later attempt).
@pytest.mark.parametrize("seeds", [(0,), (1, 2)], ids=["time limit", "preemption and a kill, an array"])
def test_stopped_jobs_are_requeued_and_resume(slurm, undisturbed, tmp_path: Path, seeds: tuple[int, ...]) -> None:
    """Each job stopped once in the middle: requeued, it resumes from its checkpoint and ends exactly as it would
    have undisturbed. (The test node ran one job at a time: an array's next job started once one was requeued.)"""
    sweep = tmp_path / "sweep"
    proc = sweep_on_slurm(slurm, sweep, *JOB, f"seed={','.join(map(str, seeds))}")
    for task, seed in enumerate(seeds):
        wait_for(f"*seed={seed}/checkpoints/last.ckpt", sweep, proc)  # past its first epoch
        running = [i for i, state in squeue(slurm) if state == "RUNNING"]
        (job_id,) = [i for i in running if len(seeds) == 1 or i.endswith(f"_{task}")]  # an array's: <array>_<task>
        STOPS[seed][1](slurm, job_id)
    assert proc.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    assert (sweep / "results.csv").read_text().count(",ok,") == len(seeds)

    logs = "".join(p.read_text() for p in (sweep / ".slurm").glob("*/*_log.out"))
    for seed in seeds:
        how, (job,) = STOPS[seed][0], list(sweep.glob(f"*seed={seed}"))
        resumed = [line for line in logs.splitlines() if line.startswith(f"[attnlab] resuming {job} from ")]
        assert len(resumed) == 1, logs[-3000:]
        step = int(resumed[0].rsplit("step ", 1)[1].rstrip(")"))
        print(f"{how}: resumed at step {step} of {STEPS}, {resumed[0].split(' from ')[1]}")  # docs/cluster.md: these
        assert 40 <= step < STEPS, logs[-3000:]  # stopped mid-run
        if how == "killed, requeued":  # the newest checkpoint: last.ckpt, or best.ckpt where the kill fell between
            assert re.search(r"from checkpoints/(last|best)\.ckpt", resumed[0]), logs[-3000:]  # an epoch's two writes
        else:  # saved where it stopped: interrupted.ckpt, or, when the signal came during an epoch's validation
            # (the run then stops after that epoch's checkpoints), last.ckpt of the same step
            saved = read_checkpoint(job / "checkpoints" / "interrupted.ckpt", "test")
            assert saved["global_step"] == step, logs[-3000:]
            assert "from checkpoints/interrupted.ckpt" in resumed[0] or (
                "from checkpoints/last.ckpt" in resumed[0] and step % 40 == 0
            ), logs[-3000:]
        calm = undisturbed[seed]
        a, b = (json.loads((d / "metrics.json").read_text()) for d in (calm, job))
        assert [a[k] for k in RESULT_KEYS] == [b[k] for k in RESULT_KEYS], how
        for ckpt in ("best.ckpt", "last.ckpt"):
            assert same_weights(calm / "checkpoints" / ckpt, job / "checkpoints" / ckpt), how
        steps = scalar_steps(job, "train/loss")  # one TensorBoard run, each step once
        assert steps == sorted(set(steps)) == scalar_steps(calm, "train/loss"), how


def test_failed_and_cancelled_jobs_are_reported_and_the_sweep_continues_on_slurm(
    slurm, undisturbed, tmp_path: Path
) -> None:
    """A NaN job fails alone; a job cancelled with scancel is reported, promptly (the cluster keeps no
    accounting, so sacct cannot say it ended), and `-m resume=<sweep>` continues it on SLURM. The
    console stays quiet and says where the logs are."""
    sweep = tmp_path / "sweep"
    began = time.time()
    proc = sweep_on_slurm(slurm, sweep, *JOB, "optim.lr=0.003,1e30")
    wait_for("lr=0.003/checkpoints/last.ckpt", sweep, proc)  # the folder: the values that vary
    running = [i for i, state in squeue(slurm) if state == "RUNNING"]
    assert len(running) == 1, squeue(slurm)  # the NaN job has failed already
    subprocess.run(["scancel", running[0]], env=slurm, check=True)
    assert proc.wait(timeout=600) == 1
    assert time.time() - began < 240  # not submitit's ten-minute wait for a job it cannot see end
    rows = {r["lr"]: r for r in csv_rows(sweep / "results.csv")}
    assert rows["1e+30"]["status"] == "failed" and "FloatingPointError" in rows["1e+30"]["error"]
    assert rows["0.003"]["status"] == "interrupted" and "signal 15" in rows["0.003"]["error"]

    log = (tmp_path / "sweep.log").read_text()
    assert "sacct" not in log and "accounting storage" not in log, log
    (said,) = [line for line in log.splitlines() if line.startswith("[attnlab] SLURM job")]
    assert "2 tasks" in said and f"logs in {sweep}/.slurm/" in said
    continued = subprocess.run(
        [*python(), str(TRAIN), "-m", f"resume={sweep}", *ON_SLURM],
        cwd=tmp_path, env=slurm, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert continued.returncode == 1, continued.stderr[-3000:]  # the NaN job fails again, as it should
    job = sweep / "lr=0.003"
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (undisturbed[0], job))
    assert [a[k] for k in RESULT_KEYS] == [b[k] for k in RESULT_KEYS], log[-2000:]


def csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def training_processes(job_id: str) -> list[int]:
    """The python processes running `job_id`'s training (submitit's entry point), from /proc."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = dict(v.split("=", 1) for v in environ.read_bytes().decode(errors="replace").split("\0") if "=" in v)
            cmdline = (environ.parent / "cmdline").read_bytes()
        except OSError:
            continue
        task = f"{env.get('SLURM_ARRAY_JOB_ID')}_{env.get('SLURM_ARRAY_TASK_ID')}"
        if job_id in (task, env.get("SLURM_JOB_ID")) and b"submitit.core._submit" in cmdline:
            pids.append(int(environ.parent.name))
    return pids


def test_a_single_job_is_named_and_seen_to_end_when_cancelled(slurm, tmp_path: Path) -> None:
    """A one-job sweep is submitted as a plain job, not an array: the line names it and its log folder, and a
    scancel of it ends the sweep (its state from scontrol, the cluster keeping no accounting)."""
    sweep = tmp_path / "sweep"
    proc = sweep_on_slurm(slurm, sweep, *JOB)
    wait_for("*/checkpoints/last.ckpt", sweep, proc)
    (job_id,) = [i for i, state in squeue(slurm) if state == "RUNNING"]
    subprocess.run(["scancel", job_id], env=slurm, check=True)
    assert proc.wait(timeout=300) == 1
    log = (tmp_path / "sweep.log").read_text()
    (said,) = [line for line in log.splitlines() if line.startswith("[attnlab] SLURM job")]
    assert said == f"[attnlab] SLURM job {job_id}; logs in {sweep}/.slurm/{job_id}", log
    assert f"SLURM job {job_id} ended CANCELLED without a result" in log, log
    ((row,),) = [csv_rows(sweep / "results.csv")]
    assert row["status"] == "interrupted" and "signal 15" in row["error"], row
