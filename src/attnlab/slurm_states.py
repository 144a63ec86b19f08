"""`python -m attnlab.slurm_states <sacct arguments>`: the states of SLURM jobs, as `sacct --parsable2`
prints them, also on clusters without accounting.

submitit polls `sacct` to learn how the jobs of a sweep ended. Without accounting storage sacct fails,
and a job that ends without writing its result (cancelled, killed, out of memory) is then never seen to
end: the sweep waits for it until submitit gives up, about ten minutes later. Here sacct is asked first
and, where it refuses, `scontrol show job` (which knows every job for MinJobAge after it ends) answers
in sacct's format. hydra/launcher=slurm (`hydra_plugins.attnlab_slurm`) polls through this.
"""

from __future__ import annotations

import subprocess
import sys


def scontrol_states(job_ids: list[str]) -> list[str]:
    """'JobID|State|NodeList' lines for the jobs (array tasks as <array>_<task>) scontrol knows."""
    lines = []
    for job_id in job_ids:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
        for record in shown.stdout.splitlines():
            fields = dict(item.split("=", 1) for item in record.split() if "=" in item)
            array, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId", "")
            if array and not task.isdigit():  # the array's pending remainder ("2-3%4"): pending, as is
                continue
            name = f"{array}_{task}" if array else fields.get("JobId", "")
            lines.append(f"{name}|{fields.get('JobState', 'UNKNOWN')}|{fields.get('NodeList', '')}")
    return lines


def main(argv: list[str]) -> int:
    try:
        sacct = subprocess.run(["sacct", *argv], capture_output=True, text=True)
    except FileNotFoundError:
        sacct = None
    if sacct is not None and sacct.returncode == 0:
        sys.stdout.write(sacct.stdout)
        return 0
    job_ids = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-j"]
    print("\n".join(["JobID|State|NodeList", *scontrol_states(job_ids)]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
