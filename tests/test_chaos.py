"""Chaos: a sweep whose processes are killed at random moments (SIGKILL and SIGTERM, again and again),
continued each time with the command the project prints, ends exactly as an undisturbed sweep:
every job's metrics.json and final weights identical, no job lost, no folder shared."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import TINY, TRAIN, processes, run_train, running_in_groups
from .test_nothing_lost import RESULT_KEYS, same_weights

# 4 jobs of 120 steps each: a kill lands in start-up, training, checkpoint writes, test or the report.
GRID = [*TINY, "data.n_train=2560", "trainer.max_epochs=3", "data=halfswap", "model.pos_enc=sinusoidal,learned"]
GRID += ["seed=0,1"]
KILLS = 6


def children(pid: int) -> list[int]:
    """The joblib (loky) workers started by `pid`."""
    return [child for child, parent, command in processes() if parent == pid and b"LokyProcess" in command]


def launched(marker: Path, began: float, proc: subprocess.Popen) -> None:
    """Wait until the sweep has written `marker` (jobs.json: just before its first job) in this attempt."""
    while not (marker.exists() and marker.stat().st_mtime >= began) and proc.poll() is None:
        time.sleep(0.01)


def jobs(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if (p / ".hydra").is_dir()}


@pytest.fixture(scope="module")
def calm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep, undisturbed (basic launcher: a joblib sweep gives the same numbers, job by job)."""
    calm = tmp_path_factory.mktemp("calm") / "sweep"
    proc = run_train("-m", *GRID, f"hydra.sweep.dir={calm}", cwd=calm.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return calm


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_killed_at_random_ends_as_if_undisturbed(tmp_path: Path, calm: Path, launcher: str) -> None:
    extra = [] if launcher == "basic" else ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]

    chaos = tmp_path / "chaos"
    rng = random.Random(f"chaos-{launcher}")
    command = ["-m", *GRID, *extra, f"hydra.sweep.dir={chaos}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    codes, landed, groups = [], 0, set()
    for attempt in range(3 * KILLS):
        # Output to files, not pipes: a SIGKILLed joblib sweep leaves workers behind that would hold a pipe open.
        log = tmp_path / f"attempt{attempt}"
        with open(f"{log}.out", "w") as stdout, open(f"{log}.err", "w") as stderr:
            p = subprocess.Popen(  # a process group of its own: what it leaves running is found by group
                [sys.executable, str(TRAIN), *command], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr,
                start_new_session=True,
            )  # fmt: skip
        groups.add(p.pid)
        if landed < KILLS:
            launched(chaos / "jobs.json", began=time.time() - 0.5, proc=p)  # the sweep is past its start-up
            time.sleep(rng.uniform(0.0, 2.0))  # then anywhere: a job's start, training, checkpoints, test, report
            sig = (signal.SIGTERM, signal.SIGKILL)[attempt % 2]
            # the sweep itself, or (joblib: every other SIGKILL) one of its workers, in the middle of a job
            workers = children(p.pid) if launcher == "joblib" and attempt % 4 == 1 else []
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rng.choice(workers or [p.pid]), sig)
        p.wait(timeout=600)
        out, err = Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text()
        codes.append(p.returncode)
        if p.returncode == 0:
            break
        landed += 1
        assert p.returncode in (1, 143, -9, -15), err[-3000:]  # -15: killed while exiting, all written
        if "sweep done" in out:  # it had time to say how to go on
            assert f"continue with: python scripts/train.py -m resume={chaos}" in err, err[-3000:]
        if (chaos / "multirun.yaml").exists():
            command = ["-m", f"resume={chaos}"]  # the printed command
    else:
        pytest.fail(f"the sweep never finished: exit codes {codes}")

    print("exit codes of the attempts:", codes)
    assert landed >= 3 and {1, 143} & set(codes) and -9 in codes, codes  # both kinds of kill landed mid-sweep
    assert sorted(jobs(chaos)) == sorted(jobs(calm)) and len(jobs(calm)) == 4, codes
    for name, calm_job in jobs(calm).items():
        chaos_job = chaos / name
        a, b = [(job / "metrics.json").read_text() for job in (calm_job, chaos_job)]
        ma, mb = json.loads(a), json.loads(b)
        assert [ma[k] for k in RESULT_KEYS] == [mb[k] for k in RESULT_KEYS], (name, codes)
        for ckpt in ("best.ckpt", "last.ckpt"):
            assert same_weights(calm_job / "checkpoints" / ckpt, chaos_job / "checkpoints" / ckpt), (name, ckpt, codes)
        assert len({p.name.split(".")[-2] for p in chaos_job.glob("events.*")}) >= 1
    assert "4/4 jobs ok" in out
    assert not running_in_groups(groups)  # nothing of a killed attempt (its workers, trackers) outlived it
