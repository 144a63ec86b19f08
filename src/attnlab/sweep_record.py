"""A sweep's record of its jobs, `<sweep>/jobs.json`: written by the sweeper before any job runs, read by
the jobs (their number of N, their HParams columns, their logger name), a continuation (each job keeps its
folder) and the report (every planned job is a row). A record read back is input: each job's folder must
stay inside the sweep, and a record that does not read is no record.

    {"jobs": [{"overrides": ["data=halfswap", "seed=1"], "dir": "data=halfswap,seed=1"}, ...]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attnlab.errors import ConfigError
from attnlab.run_folder import inside, write_json_atomic

JOBS = "jobs.json"


def write_jobs(sweep_dir: Path, jobs: list[list[str]], folders: list[str]) -> None:
    """Each job's overrides (as the user gave them) and folder (relative to the sweep)."""
    record = [{"overrides": overrides, "dir": folder} for overrides, folder in zip(jobs, folders, strict=True)]
    write_json_atomic(sweep_dir / JOBS, {"jobs": record})


def read_jobs(sweep_dir: Path, key: str = "sweep") -> list[dict[str, Any]]:
    """The sweep's jobs, [] where there is no readable record; ConfigError (naming `key`) for a job folder
    outside the sweep."""
    source = sweep_dir / JOBS
    try:
        jobs = json.loads(source.read_text())["jobs"]
        jobs = [{"overrides": [str(o) for o in job["overrides"]], "dir": job["dir"]} for job in jobs]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    for job in jobs:
        inside(sweep_dir, job["dir"], key, source)
    return jobs


def sweep_of(run_dir: Path) -> list[dict[str, Any]]:
    """The jobs of the sweep `run_dir` is a job of; [] for a single run (or a record that does not read)."""
    try:
        jobs = read_jobs(run_dir.parent)
    except ConfigError:
        return []
    return jobs if run_dir.name in {job["dir"] for job in jobs} else []


def recorded_folders(sweep_dir: Path, grid: list[list[str]], names: list[str]) -> list[str]:
    """The folders the record gave these jobs when the sweep started (a job matches the record whose overrides
    it has, `resume=` aside: a continuation may add some); `names` for jobs it does not hold."""
    saved = [(job["overrides"], job["dir"]) for job in read_jobs(sweep_dir, "resume")]
    kept = []
    for job, name in zip(grid, names, strict=True):
        matches = [folder for overrides, folder in saved if all(o in job or o.startswith("resume=") for o in overrides)]
        kept.append(matches[0] if len(matches) == 1 else name)
    return kept


def run_name(out: Path) -> str:
    """A sweep job's folder name with its sweep's (`2026-11-30_15-02-54_limitations/pos_enc=rope,seed=1`), or a
    single run's folder name: how mlflow and wandb list it."""
    return f"{out.parent.name}/{out.name}" if sweep_of(out) else out.name
