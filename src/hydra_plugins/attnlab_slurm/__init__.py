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
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

# A job in one of these is not over (submitit's own list); any other state is an end.
GOING = {"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED", "CONFIGURING", "SUSPENDED"}
POLL_S = 10  # how often the states are asked for; result files are looked for every second


class AttnlabSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        """As submitit's Hydra launcher: one array of jobs, each running Hydra's job in its folder."""
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(
            folder=params.pop("submitit_folder"), cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
        )
        common = set(BaseQueueConf.__dataclass_fields__)
        executor.update_parameters(**{k if k in common else f"slurm_{k}": v for k, v in params.items()})
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
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
        tasks = f"{array}_0..{array}_{len(jobs) - 1}"
        print(f"[attnlab] SLURM job {array}: {len(jobs)} tasks ({tasks}); logs in {folder}_*", flush=True)
        wait(jobs)
        return [job.results()[0] for job in jobs]


def wait(jobs: list[Any]) -> None:
    """Until every job has written its result or SLURM says it has ended; submitit.UncompletedJobError for
    one that ended without a result (cancelled, killed), once all have."""
    from submitit.core.utils import UncompletedJobError

    ended: dict[str, str] = {}
    asked = 0.0
    while pending := [j for j in jobs if j.job_id not in ended and not j.paths.result_pickle.exists()]:
        if time.monotonic() - asked >= POLL_S:
            asked, now = time.monotonic(), states({j.job_id.split("_")[0] for j in pending})
            ended |= {j.job_id: now[j.job_id] for j in pending if now.get(j.job_id, "UNKNOWN") not in GOING}
        time.sleep(1)
    for job in jobs:  # a completed job's result may reach a shared file system after SLURM says it ended
        grace = time.monotonic() + (60 if ended.get(job.job_id) == "COMPLETED" else 2)
        while not job.paths.result_pickle.exists() and time.monotonic() < grace:
            time.sleep(0.5)
        if not job.paths.result_pickle.exists():
            raise UncompletedJobError(f"SLURM job {job.job_id} ended {ended[job.job_id]} without a result")


def states(arrays: set[str]) -> dict[str, str]:
    """Each task's state ("<array>_<task>" -> RUNNING, CANCELLED, ...): from sacct, else from scontrol."""
    with contextlib.suppress(FileNotFoundError):
        sacct = subprocess.run(
            ["sacct", "-o", "JobID,State", "--parsable2", "--noheader", f"--jobs={','.join(sorted(arrays))}"],
            capture_output=True, text=True,
        )  # fmt: skip
        if sacct.returncode == 0:
            return {job: state.split()[0] for job, state in (line.split("|")[:2] for line in sacct.stdout.splitlines())}
    found = {}
    for array in arrays:
        shown = subprocess.run(["scontrol", "-o", "show", "job", array], capture_output=True, text=True)
        for record in shown.stdout.splitlines():
            fields = dict(item.split("=", 1) for item in record.split() if "=" in item)
            task = fields.get("ArrayTaskId", "")
            if task.isdigit():  # not the array's pending remainder ("2-3%4"): pending, as is
                found[f"{fields.get('ArrayJobId')}_{task}"] = fields.get("JobState", "UNKNOWN")
    return found


@dataclass
class AttnlabSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.attnlab_slurm.AttnlabSlurmLauncher"
    name: str = "attnlab"  # squeue shows it; the job's overrides are in its folder name
    submitit_folder: str = "${hydra.sweep.dir}/.slurm/%j"  # each job's stdout/stderr, by SLURM job id
    timeout_min: int = 60
    signal_delay_s: int = 60  # USR2 this long before the time limit: time to finish a step and save
    max_num_timeout: int = 20  # requeues after hitting the time limit (each resumes, none starts over)
    additional_parameters: dict[str, Any] = field(default_factory=lambda: {"requeue": True})  # preemption


ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=AttnlabSlurmConf, provider="attnlab")
