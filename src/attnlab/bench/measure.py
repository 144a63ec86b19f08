"""How the benchmark measures. Each measurement runs in a fresh process (`python -m attnlab.bench`), so that
its memory peak is its own and a crash or out-of-memory becomes a table cell; whole processes are timed by
the wall clock, contestants taking turns round after round, because this machine's speed drifts."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from attnlab.bench.contestants import CONTESTANTS, ROOT
from attnlab.bench.table import Row

MEMORY_LIMIT_GB = 16  # per CPU measurement, below this machine's 24 GB: an explicit (L, L) matrix that
# does not fit fails inside its own process instead of bringing the machine down
OOM_MARKERS = ("can't allocate memory", "MemoryError", "out of memory")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def step_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One per-step measurement, in this (fresh) process."""
    import torch

    from attnlab.timing import samples_per_second

    cuda = spec["device"].startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:  # CUDA reserves a huge virtual address space: an address-space limit would break it
        resource.setrlimit(resource.RLIMIT_AS, ((MEMORY_LIMIT_GB + 8) * 2**30, resource.RLIM_INFINITY))  # + slack
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    result = CONTESTANTS[spec["who"]](spec)
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - result["baseline_mb"]
    ends = result["ends"]
    speed = samples_per_second(ends, spec["batch"], spec["warmup"], spec["window"])
    return {"samples_per_s": speed, "steps": len(ends), "peak_mb": peak_mb}


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


def median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput, with the spread of all rounds."""
    good = sorted((r for r in results if r.get("samples_per_s")), key=lambda r: r["samples_per_s"])
    if not good:
        return results[0]
    spread = (good[0]["samples_per_s"], good[-1]["samples_per_s"])
    return {**good[len(good) // 2], "spread": spread, "rounds": len(good)}


def steps_in_turns(contestants: tuple[str, ...], spec: dict[str, Any], rounds: int, timeout: float) -> list[Row]:
    """[(contestant, spec, result)]: the contestants measured in turns, `rounds` times, each keeping the median
    of its rounds (a long-sequence row: its one measurement, no spread)."""
    runs: dict[str, list[dict[str, Any]]] = {who: [] for who in contestants}
    for _ in range(rounds):
        for who in contestants:
            runs[who].append(measure_step({**spec, "who": who}, timeout))
            log(f"  {who:16} B={spec['batch']:5} L={spec['seq_len']:6} bf16={spec['bf16']}: {runs[who][-1]}")
    return [(who, {**spec, "who": who}, r[0] if spec.get("long") else median_result(r)) for who, r in runs.items()]


def wall(cmd: list[str]) -> float:
    """Seconds the whole process `cmd` took, start-up included; its failure stops the benchmark."""
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def import_seconds(modules: str) -> float:
    """How old a fresh process is once `import <modules>` is done: on the clock of a run's start-up (process
    start to first step, `timing.process_age`), so that the interpreter's own start counts on both sides."""
    from attnlab.timing import process_age  # here: it imports Lightning, which the hand-written replay must not

    code = f"import {modules}; print(open('/proc/self/stat').read().strip(), open('/proc/uptime').read(), sep='\\n')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    stat, uptime = proc.stdout.strip().splitlines()[-2:]
    age = process_age(stat, uptime)
    if age is None:
        raise RuntimeError(f"no process age from /proc: {proc.stdout[-500:]!r}")
    return age


def train_vs_replay(what: str, train_args: list[str], sweep: bool, rounds: int, device: str) -> dict[str, Any]:
    """`python scripts/train.py <train_args>` (a run, or with sweep a multirun) against the same trainings
    by hand (`replay` of the folder it wrote), whole processes timed in turns, `rounds` times."""
    command = ["python", "scripts/train.py", *(["-m"] if sweep else []), *train_args]
    log(f"{what}: {' '.join(command)}")
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
            times["attnlab"].append(wall([sys.executable, *command[1:], where]))
            times["hand-written"].append(wall([sys.executable, "-m", "attnlab.bench", "replay", str(folder), device]))
            metrics = list(folder.glob("**/metrics.json"))
            startup.append(json.loads(metrics[0].read_text())["startup_seconds"])
        log(f"  round {r + 1}: attnlab {times['attnlab'][-1]:.1f} s, hand-written {times['hand-written'][-1]:.1f} s")
    return {
        "what": what,
        "command": " ".join(command),
        "jobs": len(metrics),
        "seconds": {who: (statistics.median(t), min(t), max(t)) for who, t in times.items()},
        "startup_s": statistics.median(startup),
        "imports_s": {m: statistics.median(t) for m, t in floor.items() if t},
        "rounds": rounds,
    }
