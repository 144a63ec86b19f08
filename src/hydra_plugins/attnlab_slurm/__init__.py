"""`hydra/launcher=slurm`: submitit's SLURM launcher, with defaults under which a job SLURM stops comes back and
resumes. SIGUSR2 before the time limit, or SIGTERM on preemption: the run saves `interrupted.ckpt`, submitit or
SLURM (`--requeue`) requeues it, and it continues its own folder (`run_folder.requeued`).

The launch is submitit's public API (an executor, `map_array`, each job's result file). It waits on the jobs
itself (`wait`) instead of submitit's poll: that poll asks `sacct`, which fails without accounting and so never
sees a job end that wrote no result (a cancelled one) (facebookincubator/submitit#1720). `states` asks sacct,
else `scontrol`, which knows a job for MinJobAge after it ends.
"""

import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

# What SLURM reports of a job that has ended; any other state (PENDING, RUNNING, REQUEUE_HOLD, SIGNALING, ...)
# is not an end. An end counts once two polls in a row report it: a requeued job passes through some of them.
# PREEMPTED is an end where SLURM cancels a preempted job; requeued (as here), the job is pending again.
END = {
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
}  # fmt: skip


class AttnlabSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        """As submitit's Hydra launcher: one array of jobs, each running Hydra's job in its folder."""
        import submitit

        params = dict(self.params)
        poll_s, grace_s = params.pop("poll_s"), params.pop("grace_s")
        executor = submitit.AutoExecutor(
            folder=params.pop("submitit_folder"), cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
        )
        common = set(BaseQueueConf.__dataclass_fields__)
        executor.update_parameters(**{k if k in common else f"slurm_{k}": v for k, v in params.items()})
        state = Singleton.get_state()
        nums = [initial_job_idx + i for i in range(len(job_overrides))]
        jobs = executor.map_array(  # what each job runs: this launcher's __call__, as submitit's Hydra launcher
            self,
            [list(overrides) for overrides in job_overrides],
            ["hydra.sweep.dir"] * len(nums),
            nums,
            [f"job_id_for_{num}" for num in nums],
            [state] * len(nums),
        )
        array = jobs[0].job_id.split("_")[0]
        folder = str(executor.folder).replace("%j", array)
        if "_" in jobs[0].job_id:  # an array; a single job is submitted as a plain one
            tasks = f"{array}_0..{array}_{len(jobs) - 1}"
            print(f"[attnlab] SLURM job {array}: {len(jobs)} tasks ({tasks}); logs in {folder}_*", flush=True)
        else:
            print(f"[attnlab] SLURM job {array}; logs in {folder}", flush=True)
        wait(jobs, poll_s, grace_s)
        return [job.results()[0] for job in jobs]


def written(job: Any) -> bool:
    """Every task of the job has written its result file (a chmod first: a network file system looks again)."""
    with contextlib.suppress(OSError):
        job.paths.folder.chmod(job.paths.folder.stat().st_mode)
    return all(job.task(i).paths.result_pickle.exists() for i in range(job.num_tasks))


def wait(jobs: list[Any], poll_s: float, grace_s: float) -> None:
    """Until every job has written its result or SLURM says it has ended (asked every `poll_s`, with every
    job's result file); submitit.UncompletedJobError for one that ended without a result (cancelled, killed),
    once all have, and once `grace_s` (4x after COMPLETED) has passed for its result to reach this machine."""
    from submitit.core.utils import UncompletedJobError

    ended: dict[str, str] = {}  # job id -> its end, reported by two polls in a row
    ending: dict[str, str] = {}  # ... by the last poll
    pending, asked = list(jobs), 0.0
    while pending:
        if time.monotonic() - asked >= poll_s:
            pending = [j for j in pending if not written(j)]
            now = states({j.job_id.split("_")[0] for j in pending}) if pending else {}
            said = {j.job_id: now[j.job_id] for j in pending if now.get(j.job_id) in END}
            ended |= {job: state for job, state in said.items() if ending.get(job) == state}
            pending, ending, asked = [j for j in pending if j.job_id not in ended], said, time.monotonic()
        while pending and written(pending[0]):  # between polls, the first job still going (as submitit waits)
            pending.pop(0)
        time.sleep(1 if pending else 0)
    for job in jobs:  # a result may reach a shared file system after SLURM says the job ended
        grace = time.monotonic() + (4 if ended.get(job.job_id) == "COMPLETED" else 1) * grace_s
        while not written(job) and time.monotonic() < grace:
            time.sleep(0.5)
        if not written(job):
            why = f"ended {ended[job.job_id]} without a result; its log: {job.paths.stderr}"
            raise UncompletedJobError(f"SLURM job {job.job_id} {why}")


def task_ids(job: str, tasks: str) -> list[str]:
    """A job's task ids: `tasks` as SLURM writes an array's ("4", "[5-7]", "2-3%4", "1,3-5"); a plain job's own id."""
    if not tasks:
        return [job]
    ids = []
    for part in tasks.strip("[]").split("%")[0].split(","):
        first, _, last = part.partition("-")
        ids += [f"{job}_{n}" for n in range(int(first), int(last or first) + 1)]
    return ids


def states(arrays: set[str]) -> dict[str, str]:
    """Each task's state ("<array>_<task>", or a plain job's id -> RUNNING, CANCELLED, ...): from sacct, else
    (no accounting) from scontrol, which knows a job for MinJobAge after it ends."""
    found: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        sacct = subprocess.run(
            ["sacct", "-o", "JobID,State", "--parsable2", "--noheader", f"--jobs={','.join(sorted(arrays))}"],
            capture_output=True, text=True,
        )  # fmt: skip
        if sacct.returncode == 0:
            for line in sacct.stdout.splitlines():
                job, _, state = line.partition("|")
                if state.strip() and "." not in job:  # not a step of a job (123_4.batch)
                    with contextlib.suppress(ValueError):
                        found |= dict.fromkeys(task_ids(*job.partition("_")[::2]), state.split()[0])
            return found
    for array in arrays:
        shown = subprocess.run(["scontrol", "-o", "show", "job", array], capture_output=True, text=True)
        for record in shown.stdout.splitlines():
            fields = dict(item.split("=", 1) for item in record.split() if "=" in item)
            job, tasks = fields.get("ArrayJobId", fields.get("JobId", "")), fields.get("ArrayTaskId", "")
            with contextlib.suppress(ValueError):
                found |= dict.fromkeys(task_ids(job, tasks), fields.get("JobState", "UNKNOWN"))
    return found


@dataclass
class AttnlabSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.attnlab_slurm.AttnlabSlurmLauncher"
    name: str = "attnlab"  # squeue shows it; the job's overrides are in its folder name
    submitit_folder: str = "${hydra.sweep.dir}/.slurm/%j"  # each job's stdout/stderr, by SLURM job id
    timeout_min: int = 60
    signal_delay_s: int = 60  # USR2 this long before the time limit: time to finish a step and save
    poll_s: int = 10  # how often the sweep asks SLURM for its jobs' states (sacct, else scontrol)
    # how long a job's result may take to reach this machine's view of a shared file system after SLURM says the
    # job ended (4x after COMPLETED); a job that ended without one is reported after it
    grace_s: int = 15
    max_num_timeout: int = 20  # requeues after hitting the time limit (each resumes, none starts over)
    additional_parameters: dict[str, Any] = field(default_factory=lambda: {"requeue": True})  # preemption


ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=AttnlabSlurmConf, provider="attnlab")
