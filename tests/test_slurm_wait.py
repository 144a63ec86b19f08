"""hydra/launcher=slurm's wait on its jobs, without a cluster: SLURM's answers as sacct and scontrol print them,
and jobs that end, pass through a held state, or end without a result (tests/test_slurm.py runs the launcher on
a real single-node SLURM)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from submitit.core.utils import UncompletedJobError

import hydra_plugins.attnlab_slurm as slurm

POLL_S, GRACE_S = 10, 15  # the launcher's defaults (AttnlabSlurmConf.poll_s, grace_s)

SACCT = """123_0|RUNNING
123_0.batch|RUNNING
123_[2-3%1]|PENDING
123_1|CANCELLED by 0

140|COMPLETED
124_[1,4-5]|PENDING
125_x|FAILED
126|
"""
SCONTROL = {
    "1": "JobId=1 ArrayJobId=1 ArrayTaskId=1-3%1 JobState=CANCELLED\n"  # the pending remainder: one record
    "JobId=2 ArrayJobId=1 ArrayTaskId=0 JobState=COMPLETED",
    "140": "JobId=140 JobName=attnlab JobState=CANCELLED",  # one job, submitted as a plain one: no array fields
}


def answering(monkeypatch: pytest.MonkeyPatch, accounting: bool) -> None:
    def run(command: list[str], **kwargs: object) -> types.SimpleNamespace:
        if command[0] == "sacct":
            return types.SimpleNamespace(returncode=0 if accounting else 1, stdout=SACCT if accounting else "")
        return types.SimpleNamespace(returncode=0, stdout=SCONTROL.get(command[-1], ""))

    monkeypatch.setattr(slurm.subprocess, "run", run)


def test_states_from_sacct(monkeypatch: pytest.MonkeyPatch) -> None:
    """Array tasks, a pending remainder's range, a plain job; job steps, blank and unreadable lines left out."""
    answering(monkeypatch, accounting=True)
    assert slurm.states({"123", "124", "140"}) == {
        "123_0": "RUNNING", "123_1": "CANCELLED", "123_2": "PENDING", "123_3": "PENDING", "140": "COMPLETED",
        "124_1": "PENDING", "124_4": "PENDING", "124_5": "PENDING",
    }  # fmt: skip


def test_states_from_scontrol_without_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    """An array cancelled with tasks still pending (one record for them all), and a plain job."""
    answering(monkeypatch, accounting=False)
    cancelled = dict.fromkeys(["1_1", "1_2", "1_3", "140"], "CANCELLED")
    assert slurm.states({"1", "140"}) == {**cancelled, "1_0": "COMPLETED"}


class Job:
    """What `wait` reads of a submitit job: its id, tasks and files."""

    def __init__(self, folder: Path, job_id: str) -> None:
        self.job_id, self.num_tasks = job_id, 1
        self.paths = types.SimpleNamespace(folder=folder, result_pickle=folder / f"{job_id}_result.pkl", stderr="e")

    def task(self, i: int) -> Job:
        return self


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Time that passes only when `wait` sleeps."""
    now = types.SimpleNamespace(t=0.0)
    fake = types.SimpleNamespace(monotonic=lambda: now.t, sleep=lambda s: setattr(now, "t", now.t + s))
    monkeypatch.setattr(slurm, "time", fake)
    return now


def polls(monkeypatch: pytest.MonkeyPatch, jobs: list[Job], script: list[dict[str, str]]) -> list[float]:
    """SLURM's answer at each poll (a state "done" writes the job's result then and answers COMPLETED)."""
    asked: list[float] = []

    def states(arrays: set[str]) -> dict[str, str]:
        answer = script[min(len(asked), len(script) - 1)]
        asked.append(slurm.time.monotonic())
        for job in jobs:
            if answer.get(job.job_id) == "done":
                job.paths.result_pickle.touch()
        return {k: "COMPLETED" if v == "done" else v for k, v in answer.items()}

    monkeypatch.setattr(slurm, "states", states)
    return asked


def test_a_held_or_signalled_state_seen_once_is_not_an_end(tmp_path: Path, monkeypatch, clock) -> None:
    """A requeued job passes through REQUEUE_HOLD; a CANCELLED seen once and then RUNNING is not an end either."""
    jobs = [Job(tmp_path, "7_0"), Job(tmp_path, "7_1")]
    script = [{"7_0": "RUNNING", "7_1": "REQUEUE_HOLD"}, {"7_0": "done", "7_1": "CANCELLED"}, {"7_1": "RUNNING"}]
    asked = polls(monkeypatch, jobs, [*script, {"7_1": "done"}])
    slurm.wait(jobs, POLL_S, GRACE_S)
    assert len(asked) == 4 and asked == sorted(asked) and asked[1] - asked[0] >= POLL_S


def test_a_job_that_ends_without_a_result_is_named_once_every_job_has_ended(tmp_path: Path, monkeypatch, clock) -> None:
    """Cancelled (two polls in a row), while the other job goes on: the error comes after that one's result."""
    jobs = [Job(tmp_path, "8_0"), Job(tmp_path, "8_1"), Job(tmp_path, "9")]
    script = [{"8_1": "CANCELLED", "9": "RUNNING"}, {"8_0": "done", "8_1": "CANCELLED"}, {"9": "RUNNING"}]
    asked = polls(monkeypatch, jobs, [*script, {"9": "done"}])
    with pytest.raises(UncompletedJobError, match=r"SLURM job 8_1 ended CANCELLED without a result; its log: e"):
        slurm.wait(jobs, POLL_S, GRACE_S)
    assert len(asked) == 4 and jobs[2].paths.result_pickle.exists()


def test_a_result_written_after_the_job_ended_is_waited_for(tmp_path: Path, monkeypatch, clock) -> None:
    """FAILED with its result (the traceback) reaching the folder a few seconds later: read, not refused."""
    (job,) = jobs = [Job(tmp_path, "5")]
    polls(monkeypatch, jobs, [{"5": "FAILED"}])
    sleep = slurm.time.sleep

    def late(seconds: float) -> None:  # the result lands 3 s after the second poll
        sleep(seconds)
        if clock.t >= POLL_S + 3:
            job.paths.result_pickle.touch()

    monkeypatch.setattr(slurm.time, "sleep", late)
    slurm.wait(jobs, POLL_S, GRACE_S)


@pytest.mark.parametrize("grace_s", [1, GRACE_S])
def test_a_job_without_a_result_is_named_once_its_grace_has_passed(tmp_path: Path, monkeypatch, clock, grace_s) -> None:
    """hydra.launcher.grace_s: how long a result may take to show after its job ended (a shared file system)."""
    jobs = [Job(tmp_path, "6")]
    asked = polls(monkeypatch, jobs, [{"6": "CANCELLED"}])
    with pytest.raises(UncompletedJobError, match="SLURM job 6 ended CANCELLED without a result"):
        slurm.wait(jobs, POLL_S, grace_s)
    assert asked[-1] + grace_s <= clock.t < asked[-1] + grace_s + 1
