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
# The local cluster's partition; its states asked every 2 s (10 s by default: a real cluster's scheduler is shared)
ON_SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.poll_s=2"]
# One job of 4 epochs x 40 steps: long enough to be stopped in the middle.
JOB = [*TINY, "data.n_train=2560", "trainer.max_epochs=4", "data=halfswap", "model.pos_enc=sinusoidal", "seed=0"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """The environment of a running local cluster (SLURM_CONF set); partition `debug`."""
    where = tmp_path_factory.mktemp("slurm")
    env = start_local_slurm(where)
    assert env is not None
    yield env
    stop_local_slurm(where, env)


def squeue(env: dict[str, str]) -> list[tuple[str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True, text=True).stdout
    return [tuple(line.split()) for line in out.splitlines()]  # type: ignore[misc]


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
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same job, never stopped (in this process: the same numbers as anywhere)."""
    run_dir = tmp_path_factory.mktemp("calm") / "run"
    train(compose_train(run_dir, *JOB))
    return run_dir


@pytest.mark.parametrize(
    "how,command",
    [
        ("time limit", ["scancel", "--signal=USR2"]),  # what SLURM sends signal_delay_s before the limit
        ("preemption", ["scontrol", "requeue"]),  # SIGTERM, then back in the queue
    ],
)
def test_a_stopped_job_is_requeued_and_resumes(slurm, undisturbed, tmp_path: Path, how: str, command) -> None:
    sweep = tmp_path / "sweep"
    proc = sweep_on_slurm(slurm, sweep, *JOB)
    wait_for("*/checkpoints/last.ckpt", sweep, proc)  # past its first epoch
    (job_id,) = [i for i, state in squeue(slurm) if state == "RUNNING"]
    subprocess.run([*command, job_id], env=slurm, check=True)
    assert proc.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]

    job = job_dir(sweep)
    logs = "".join(p.read_text() for p in (sweep / ".slurm").glob("*/*_log.out"))
    resumed = [line for line in logs.splitlines() if line.startswith("[attnlab] resuming")]
    assert len(resumed) == 1, logs[-3000:]
    step = int(resumed[0].rsplit("step ", 1)[1].rstrip(")"))
    print(f"{how}: stopped and resumed at step {step} of 160")  # docs/cluster.md quotes these
    assert 40 <= step < 160  # stopped mid-run
    # Saved where it stopped, and resumed from there: interrupted.ckpt, or, when the signal came during an
    # epoch's validation (the run then stops after that epoch's checkpoints), last.ckpt of the same step.
    saved = read_checkpoint(job / "checkpoints" / "interrupted.ckpt", "test")
    assert saved["global_step"] == step, logs[-3000:]
    assert "from checkpoints/interrupted.ckpt" in resumed[0] or (
        "from checkpoints/last.ckpt" in resumed[0] and step % 40 == 0
    ), logs[-3000:]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (undisturbed, job))
    assert [a[k] for k in RESULT_KEYS] == [b[k] for k in RESULT_KEYS]
    for ckpt in ("best.ckpt", "last.ckpt"):
        assert same_weights(undisturbed / "checkpoints" / ckpt, job / "checkpoints" / ckpt)
    steps = scalar_steps(job, "train/loss")  # one TensorBoard run, each step once
    assert steps == sorted(set(steps)) == scalar_steps(undisturbed, "train/loss")
    assert (sweep / "results.csv").read_text().count(",ok,") == 1


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
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (undisturbed, job))
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


def test_a_killed_job_that_is_requeued_resumes(slurm, undisturbed, tmp_path: Path) -> None:
    """SIGKILL (no time to save anything), then `scontrol requeue`: back from its last epoch's checkpoint."""
    sweep = tmp_path / "sweep"
    proc = sweep_on_slurm(slurm, sweep, *JOB)
    wait_for("*/checkpoints/last.ckpt", sweep, proc)
    (job_id,) = [i for i, state in squeue(slurm) if state == "RUNNING"]
    pids = training_processes(job_id)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["scontrol", "requeue", job_id], env=slurm, check=True)
    assert proc.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    job = job_dir(sweep)
    logs = "".join(p.read_text() for p in (sweep / ".slurm").glob("*/*_log.out"))
    resumed = [line for line in logs.splitlines() if line.startswith("[attnlab] resuming")]
    # the newest checkpoint: last.ckpt, or best.ckpt where the kill fell between the two writes of an epoch
    assert len(resumed) == 1 and re.search(r"from checkpoints/(last|best)\.ckpt", resumed[0]), logs[-3000:]
    print(f"killed, requeued: {resumed[0].rsplit(' from ', 1)[1]}")  # docs/cluster.md quotes it
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (undisturbed, job))
    assert [a[k] for k in RESULT_KEYS] == [b[k] for k in RESULT_KEYS]
    steps = scalar_steps(job, "train/loss")
    assert steps == sorted(set(steps)) == scalar_steps(undisturbed, "train/loss")


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
