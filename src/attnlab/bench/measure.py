"""How the benchmark measures: every measurement in a fresh process, whole processes by the wall clock."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnlab.bench.contestants import CONTESTANTS, ROOT

MEMORY_LIMIT_GB = 16  # per CPU measurement, below this machine's 24 GB: an explicit (L, L) matrix that
# does not fit fails inside its own process instead of bringing the machine down
OOM_MARKERS = ("can't allocate memory", "MemoryError", "out of memory", "CUDA out of memory")


def step_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One per-step measurement, in this (fresh) process."""
    import torch

    from attnlab.timing import samples_per_second

    cuda = spec["device"].startswith("cuda")
    if not cuda:  # CUDA reserves a huge virtual address space: an address-space limit would break it
        limit = MEMORY_LIMIT_GB * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit + 8 * 2**30, resource.RLIM_INFINITY))  # + slack
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = CONTESTANTS[spec["who"]](spec)
    out = {
        "samples_per_s": samples_per_second(result["ends"], spec["batch"], spec["warmup"], spec["window"]),
        "steps": len(result["ends"]),
    }
    if cuda:
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - result["baseline_mb"]
    return out


def measure_step(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """`step_worker(spec)` in a fresh process; an error or out-of-memory becomes {"error": ...}."""
    cmd = [sys.executable, "-m", "attnlab.bench", "step", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        oom = any(s in proc.stderr for s in OOM_MARKERS) or proc.returncode == -9
        return {"error": "out of memory" if oom else f"failed (exit {proc.returncode})"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wall(cmd: list[str]) -> float:
    """Seconds the whole process `cmd` took, start-up included; its failure stops the benchmark."""
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def import_seconds(modules: str) -> float:
    """Seconds `import <modules>` takes in a fresh process, timed inside it (the interpreter's own start and
    exit left out)."""
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def train_vs_replay(
    train_args: list[str], sweep: bool, rounds: int, device: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """`python scripts/train.py <train_args>` (a run, or with sweep a multirun) against the same trainings
    by hand (`replay` of the folder it wrote), whole processes timed in turns, `rounds` times."""
    times: dict[str, list[float]] = {"attnlab": [], "hand-written": []}
    startup: list[float] = []
    floor: dict[str, list[float]] = {"torch": [], "torch, pytorch_lightning": []}  # imports in a bare process
    for r in range(rounds):
        if not sweep:
            for modules in floor:
                floor[modules].append(import_seconds(modules))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "out"
            where = f"hydra.{'sweep' if sweep else 'run'}.dir={folder}"
            cmd = [sys.executable, "scripts/train.py", *(["-m"] if sweep else []), *train_args, where]
            times["attnlab"].append(wall(cmd))
            times["hand-written"].append(wall([sys.executable, "-m", "attnlab.bench", "replay", str(folder), device]))
            startup += [json.loads(p.read_text())["startup_seconds"] for p in folder.glob("**/metrics.json")][:1]
            jobs = len(list(folder.glob("**/metrics.json")))
        log(f"  round {r + 1}: attnlab {times['attnlab'][-1]:.1f} s, hand-written {times['hand-written'][-1]:.1f} s")
    return {
        "command": " ".join(["python scripts/train.py", *(["-m"] if sweep else []), *train_args]),
        "jobs": jobs,
        "seconds": {who: (statistics.median(t), min(t), max(t)) for who, t in times.items()},
        "startup_s": statistics.median(startup) if startup else None,
        "imports_s": {m: statistics.median(t) for m, t in floor.items() if t},
        "rounds": rounds,
    }
