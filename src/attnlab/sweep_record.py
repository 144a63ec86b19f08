"""`<sweep>/jobs.json`, written before any job runs: {"jobs": [{"overrides": [...], "dir": "<folder>"}]}. Read
back as input by the jobs, a continuation and the report: folders stay inside the sweep; an unreadable one is
refused (ConfigError), an absent one is none (a sweep stopped before its jobs were planned)."""

import functools
import json
import os
from pathlib import Path
from typing import Any

from attnlab.errors import ConfigError
from attnlab.run_folder import inside, write_json_atomic


def write_jobs(sweep_dir: Path, jobs: list[list[str]], folders: list[str]) -> None:
    record = [{"overrides": overrides, "dir": folder} for overrides, folder in zip(jobs, folders, strict=True)]
    write_json_atomic(sweep_dir / "jobs.json", {"jobs": record})


def read_jobs(sweep_dir: Path, key: str = "sweep") -> list[dict[str, Any]]:
    """The jobs, [] without a record; ConfigError for an unreadable one, a folder outside the sweep, or one named
    twice (its run would count as two jobs)."""
    try:  # each job of a sweep reads it twice: checked once per state of the record and of the sweep's folder
        state = tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in map(os.stat, (sweep_dir / "jobs.json", sweep_dir)))
    except OSError:
        return []
    return [{"overrides": list(o), "dir": d} for o, d in checked_jobs(os.path.realpath(sweep_dir), key, state)]


@functools.lru_cache(maxsize=8)
def checked_jobs(sweep_dir: str, key: str, state: tuple) -> tuple[tuple[tuple[str, ...], str], ...]:
    source = Path(sweep_dir) / "jobs.json"
    try:
        jobs = json.loads(source.read_text())["jobs"]
        jobs = [(tuple(str(o) for o in job["overrides"]), job["dir"]) for job in jobs]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:  # (else: jobs unseen)
        why = f"is not a record of jobs this program wrote ({type(e).__name__}): move it away, or restore it"
        raise ConfigError(key, str(source), why) from e
    seen: set[str] = set()
    for _, folder in jobs:
        if (real := inside(Path(sweep_dir), folder, key, source, sweep_dir)) in seen:
            raise ConfigError(key, str(source), f"names the job folder {folder!r} twice")
        seen.add(real)
    return tuple(jobs)


def sweep_of(run_dir: Path) -> list[dict[str, Any]]:
    """The jobs of the sweep `run_dir` is a job of; [] for a single run."""
    try:
        jobs = read_jobs(run_dir.parent)
    except ConfigError:
        return []
    return jobs if run_dir.name in {job["dir"] for job in jobs} else []


def in_sweep(run_dir: Path) -> bool:
    """A job of a sweep: by its jobs.json, or, that missing or cut short (a kill), by the multirun.yaml beside it."""
    return bool(sweep_of(run_dir)) or (run_dir.parent / "multirun.yaml").is_file()


def recorded_folders(sweep_dir: Path, grid: list[list[str]], names: list[str]) -> list[str]:
    """The folders the record gave these jobs (matched by overrides, `resume=` aside); else `names`."""
    saved = [(job["overrides"], job["dir"]) for job in read_jobs(sweep_dir, "resume")]
    kept = []
    for job, name in zip(grid, names, strict=True):
        matches = [folder for overrides, folder in saved if all(o in job or o.startswith("resume=") for o in overrides)]
        kept.append(matches[0] if len(matches) == 1 else name)
    return kept


def check_same_jobs(sweep_dir: Path, folders: list[str]) -> None:
    """A continued sweep runs the jobs it planned: a grid given now that adds or leaves out a job (`seed=7`) would
    rewrite jobs.json, and the planned jobs left out would vanish from its report. ConfigError, naming them."""
    planned = [job["dir"] for job in read_jobs(sweep_dir, "resume")]
    added, left = [f for f in folders if f not in planned], [f for f in planned if f not in folders]
    if planned and (added or left):
        # by their folders' names, each quoted: a name lists the values that vary (`lr=0.001,n_train=256`)
        differ = "; ".join(f"{what} {', '.join(map(repr, f[:3]))}{' ...' * (len(f) > 3)}" for what, f in
                           (("adds the jobs", added), ("leaves out the jobs", left)) if f)  # fmt: skip
        why = f"continues the {len(planned)} jobs it planned; this grid {differ}: start a new sweep for other values"
        raise ConfigError("resume", str(sweep_dir), why)


def run_name(run_dir: Path) -> str:
    """How mlflow and wandb list a run: `<sweep>/<job>`, or a single run's folder name."""
    return f"{run_dir.parent.name}/{run_dir.name}" if sweep_of(run_dir) else run_dir.name
