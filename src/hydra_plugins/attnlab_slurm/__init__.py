"""`hydra/launcher=slurm`: submitit's SLURM launcher, with defaults under which a job SLURM stops comes back and
resumes. SIGUSR2 before the time limit, or SIGTERM on preemption: the run saves `interrupted.ckpt`, submitit or
SLURM (`--requeue`) requeues it, and it continues its own folder (`run_folder.requeued`). submitit polls `sacct`,
which fails without accounting and never reports a job that ended without a result: the poll goes through
`attnlab.slurm_states` (falls back on `scontrol`).
"""

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class AttnlabSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        import submitit
        import submitit.slurm.slurm as submitit_slurm

        # Without accounting, sacct fails on every poll (and says so on the terminal): ask scontrol instead.
        logging.getLogger("submitit").addFilter(lambda record: "Bypassing sacct error" not in record.getMessage())
        executor, watcher = submitit.AutoExecutor, submitit_slurm.SlurmInfoWatcher
        submit, sacct = executor.map_array, watcher._make_command

        def poll_command(self: Any) -> Any:
            command = sacct(self)
            return None if command is None else [sys.executable, "-m", "attnlab.slurm_states", *command[1:]]

        # Say once what was submitted and where its logs go (Hydra's launcher submits and waits in one call).
        def map_array(self: Any, fn: Any, *iterable: Any) -> Any:
            jobs = submit(self, fn, *iterable)
            array = jobs[0].job_id.split("_")[0]
            folder = str(self.folder).replace("%j", array)
            tasks = f"{array}_0..{array}_{len(jobs) - 1}"
            print(f"[attnlab] SLURM job {array}: {len(jobs)} tasks ({tasks}); logs in {folder}_*", flush=True)
            return jobs

        executor.map_array, watcher._make_command = map_array, poll_command
        try:  # (the launch waits for its jobs: submitit polls only until this returns)
            return super().launch(job_overrides, initial_job_idx)
        finally:
            executor.map_array, watcher._make_command = submit, sacct


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
