"""Wall-clock measurements: how long this process has lived (so that "done in" counts the imports and
checks too), step times and start-up latency."""

import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


def process_age(stat: str | None = None, uptime: str | None = None) -> float | None:
    """Seconds since this process started (from /proc on Linux); None where that is unknown. Given the text
    of another process's /proc/<pid>/stat and of /proc/uptime read at one moment: its age at that moment."""
    try:
        stat = Path("/proc/self/stat").read_text() if stat is None else stat
        uptime = Path("/proc/uptime").read_text() if uptime is None else uptime
        started = int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, ticks
        return float(uptime.split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def process_seconds(began: float) -> float:
    """Seconds since this process started (imports included), or since `began` where unknown."""
    return process_age() or time.perf_counter() - began


class StepClock(pl.Callback):
    """Records when every training step ends, and the start-up: how old the process was at the first step, or
    with `began` (a sweep's job, in a process that ran others before it) the seconds since then. `synchronize`:
    wait for the GPU before reading the clock (the benchmark's fair timing; a host sync per step)."""

    def __init__(self, synchronize: bool = False, began: float | None = None) -> None:
        self.ends: list[tuple[int, float]] = []
        self.startup_seconds: float | None = None
        self.synchronize, self.began = synchronize, began

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: object) -> None:
        if self.startup_seconds is None:
            self.startup_seconds = process_age() if self.began is None else time.perf_counter() - self.began

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: object) -> None:
        if self.synchronize and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.ends.append((trainer.current_epoch, time.perf_counter()))
