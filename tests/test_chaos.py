"""Chaos: a sweep whose processes are killed in every phase (SIGKILL and SIGTERM, again and again),
continued each time with the command the project prints, ends exactly as an undisturbed sweep:
every job's metrics.json and final weights identical, no job lost, no folder shared.

Each kill lands at a defined event, a file the sweep writes (its jobs.json, a job's Hydra record, a
checkpoint, a job's metrics.json), seen by polling the sweep folder: never at a moment picked by a clock."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from attnlab.train import train

from .conftest import TINY, TRAIN, compose_train, processes, running_in_groups
from .test_nothing_lost import RESULT_KEYS, same_weights

# 4 jobs of 2 epochs of 40 steps each: long enough for a kill to land inside an epoch.
SHARED = [*TINY, "data.n_train=2560", "trainer.max_epochs=2", "data=halfswap"]
GRID = [*SHARED, "model.pos_enc=sinusoidal,learned", "seed=0,1"]
JOBS = {  # each job's folder (the values that vary) and overrides
    f"pos_enc={pos_enc},seed={seed}": [f"model.pos_enc={pos_enc}", f"seed={seed}"]
    for pos_enc in ("learned", "sinusoidal")
    for seed in (0, 1)
}

# The kills of each launcher, in order, one per attempt: (event, signal, whom). Each lands as soon as the
# attempt has written (or rewritten) a file the event names; between them, every phase of a sweep is hit.
# A job's first last.ckpt is its first epoch's end (the kill lands in the second epoch); its second is the
# end of its training (the kill lands in its test).
PLANS = {
    "basic": [
        (".hydra/config.yaml", signal.SIGKILL, "sweep"),  # a job's start: Hydra writing the job's record
        ("checkpoints/last.ckpt", signal.SIGTERM, "sweep"),  # training: mid-epoch, saves interrupted.ckpt
        ("checkpoints/last.ckpt", signal.SIGKILL, "sweep"),  # its training over: the test, no checkpoint now
        ("every metrics.json", signal.SIGTERM, "sweep"),  # every job done: the report (finished first)
    ],
    "processes": [
        ("jobs.json", signal.SIGKILL, "sweep"),  # start-up: the jobs recorded, the workers starting
        ("checkpoints/last.ckpt", signal.SIGKILL, "worker"),  # training: the worker running that job
        ("metrics.json", signal.SIGTERM, "sweep"),  # a job's end, the other job mid-training
    ],
}


def files(sweep: Path) -> dict[Path, tuple[int, int, int]]:
    """Every file of the sweep as (inode, mtime, size): a file written anew (or atomically replaced) differs."""
    found = {}
    for p in sweep.rglob("*") if sweep.is_dir() else ():
        with contextlib.suppress(OSError):  # a temporary file renamed meanwhile
            st = p.stat()
            found[p] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def event(sweep: Path, what: str, before: dict[Path, tuple[int, int, int]]) -> Callable[[], Path | None]:
    """A check for `what` in this attempt: the sweep's jobs.json or a job's file written since `before`
    (returns that file), or every job's metrics.json present (returns the sweep)."""
    if what == "every metrics.json":
        return lambda: sweep if all((sweep / job / "metrics.json").is_file() for job in JOBS) else None
    wanted = [sweep / what] if what == "jobs.json" else [sweep / job / what for job in JOBS]

    def written() -> Path | None:
        for p in wanted:
            with contextlib.suppress(OSError):
                st = p.stat()
                if before.get(p) != (st.st_ino, st.st_mtime_ns, st.st_size):
                    return p
        return None

    return written


def wait_for(check: Callable[[], Path | None], proc: subprocess.Popen) -> Path | None:
    """What `check` finds, as soon as it does while `proc` runs; None if `proc` ended first."""
    while proc.poll() is None:
        found = check()
        if found is not None:
            return found
        time.sleep(0.01)
    return None


def worker_of(job: Path, sweep_pid: int) -> int | None:
    """The worker process of the sweep `sweep_pid` that runs `job` (it holds the job's lock open), else
    one that runs another of the sweep's jobs: a worker in the middle of a job."""
    held = {}
    for pid, parent, _ in processes():
        if parent == sweep_pid:
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    held[Path(os.readlink(fd))] = pid
    locks = [(job / ".lock").resolve(), *((job.parent / name / ".lock").resolve() for name in JOBS)]
    return next((held[lock] for lock in locks if lock in held), None)


def jobs(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if (p / ".hydra").is_dir()}


@pytest.fixture(scope="module")
def calm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sweep's jobs, undisturbed, each trained in this process (a sweep's job gives the same numbers as
    `train` called here, as tests/test_nothing_lost.py checks): job name -> run folder."""
    calm = tmp_path_factory.mktemp("calm")
    folders = {name: calm / f"job{n}" for n, name in enumerate(JOBS)}  # (a job's name is no override value)
    for name, folder in folders.items():
        train(compose_train(folder, *SHARED, *JOBS[name]))
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "processes"])
def test_a_sweep_killed_in_every_phase_ends_as_if_undisturbed(
    tmp_path: Path, calm: dict[str, Path], launcher: str
) -> None:
    extra = [] if launcher == "basic" else ["hydra/launcher=processes", "hydra.launcher.n_jobs=2"]

    chaos = tmp_path / "chaos"
    command = ["-m", *GRID, *extra, f"hydra.sweep.dir={chaos}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    kills = list(PLANS[launcher])
    codes, landed, groups = [], [], set()
    for attempt in range(len(kills) + 2):
        # Output to files, not pipes: a SIGKILLed sweep's workers live on for half a second, holding a pipe open.
        log = tmp_path / f"attempt{attempt}"
        before = files(chaos)
        with open(f"{log}.out", "w") as stdout, open(f"{log}.err", "w") as stderr:
            p = subprocess.Popen(  # a process group of its own: what it leaves running is found by group
                [sys.executable, str(TRAIN), *command], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr,
                start_new_session=True,
            )  # fmt: skip
        groups.add(p.pid)
        if kills:
            what, sig, whom = kills.pop(0)
            while (found := wait_for(event(chaos, what, before), p)) is not None:
                target = worker_of(found.parent.parent, p.pid) if whom == "worker" else p.pid
                if target is None:  # its job's last write: it ended before its worker was found, and none runs now
                    before = files(chaos)  # the next such write, then
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, sig)
                    landed.append((what, sig.name, whom))
                break
        p.wait(timeout=600)
        out, err = Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text()
        codes.append(p.returncode)
        if p.returncode == 0:
            break
        assert p.returncode in (1, 143, -9, -15), err[-3000:]  # -15: killed while exiting, all written
        if re.search(r"sweep (done in|stopped after)", out) and "4/4 jobs ok" not in out:  # it said how to go on
            assert f"continue with: python scripts/train.py -m resume={chaos}" in err, err[-3000:]
        if (chaos / "multirun.yaml").exists():
            command = ["-m", f"resume={chaos}"]  # the printed command
    else:
        pytest.fail(f"the sweep never finished: exit codes {codes}")

    print("exit codes of the attempts:", codes, "kills:", landed)
    # Every kill landed while its attempt ran (the report's may come after the sweep finished: it is fast).
    assert [k for k in landed if k[0] != "every metrics.json"] == [
        (what, sig.name, whom) for what, sig, whom in PLANS[launcher] if what != "every metrics.json"
    ], (landed, codes)
    assert -9 in codes and {1, 143} & set(codes), codes  # a SIGKILL, and a SIGTERM (or a killed worker), ended one
    assert sorted(jobs(chaos)) == sorted(JOBS), codes
    for name, calm_job in calm.items():
        chaos_job = chaos / name
        a, b = [(job / "metrics.json").read_text() for job in (calm_job, chaos_job)]
        ma, mb = json.loads(a), json.loads(b)
        assert [ma[k] for k in RESULT_KEYS] == [mb[k] for k in RESULT_KEYS], (name, codes)
        for ckpt in ("best.ckpt", "last.ckpt"):
            assert same_weights(calm_job / "checkpoints" / ckpt, chaos_job / "checkpoints" / ckpt), (name, ckpt, codes)
        assert len({p.name.split(".")[-2] for p in chaos_job.glob("events.*")}) >= 1
    assert "4/4 jobs ok" in out
    assert not running_in_groups(groups)  # nothing of a killed attempt (its workers, trackers) outlived it
