"""Where a result came from (metrics.json, TensorBoard's Text tab): git commit and changes, versions, command."""

import functools
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent  # src/attnlab: inside the repository when installed with -e


def git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(SOURCE), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def command() -> str:
    """The command that trains this run again from the start: its overrides (not `resume`), else argv."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        overrides = [o for o in hydra.overrides.task if o.split("=", 1)[0] != "resume"]
        if hydra.job.config_name != "train":  # composed from another config: a run's record (--config-path)
            main = next(s.path for s in hydra.runtime.config_sources if s.provider == "main")
            overrides = ["--config-path", main, "--config-name", hydra.job.config_name, *overrides]
        return shlex.join(["python", "scripts/train.py", *overrides])
    return shlex.join(["python", *sys.argv])


# What a result depends on, from the repository's top (`:/`): a change to the docs or the tests changes no result.
CODE = (":/src", ":/scripts", ":/conf", ":/pyproject.toml")


@functools.cache
def code() -> tuple[str | None, bool | None]:
    """The commit and whether its code (CODE, tracked files) had changed, once per process: the code it imported."""
    commit = git("rev-parse", "HEAD")  # untracked files are not code that ran: not counted as changes
    return commit, bool(git("status", "--porcelain", "--untracked-files=no", "--", *CODE)) if commit else None


def provenance() -> dict[str, Any]:
    import hydra
    import pytorch_lightning
    import torch

    import attnlab

    commit, dirty = code()  # commit None: not run from a git checkout
    versions = {m.__name__: m.__version__ for m in (attnlab, torch, pytorch_lightning, hydra)}
    versions["python"] = platform.python_version()
    return {"git_commit": commit, "git_dirty": dirty, "versions": versions, "command": command()}


def as_markdown(p: dict[str, Any]) -> str:
    state = "unknown (not a git checkout)" if p["git_commit"] is None else f"`{p['git_commit']}`"
    if p["git_dirty"]:
        state += " (with changes to its code)"
    versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items())
    return f"commit: {state}  \nversions: {versions}  \ncommand: `{p['command']}`"
