"""`python -m attnlab.slurm_states <sacct arguments>`: job states as `sacct --parsable2` prints them; where sacct
fails (no accounting), from `scontrol show job`, which knows a job for MinJobAge after it ends."""

import contextlib
import subprocess
import sys


def main(argv: list[str]) -> int:
    with contextlib.suppress(FileNotFoundError):
        sacct = subprocess.run(["sacct", *argv], capture_output=True, text=True)
        if sacct.returncode == 0:
            sys.stdout.write(sacct.stdout)
            return 0
    print("JobID|State|NodeList")  # and a line for each job scontrol knows, array tasks as <array>_<task>
    for job_id in [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-j"]:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
        for record in shown.stdout.splitlines():
            fields = dict(item.split("=", 1) for item in record.split() if "=" in item)
            array, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId", "")
            if array and not task.isdigit():  # the array's pending remainder ("2-3%4"): pending, as is
                continue
            name = f"{array}_{task}" if array else fields.get("JobId", "")
            print(f"{name}|{fields.get('JobState', 'UNKNOWN')}|{fields.get('NodeList', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
