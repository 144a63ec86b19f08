"""What a run prints. Quiet by default: a run prints its folder, one progress display and one
closing line; a sweep job one line when it starts and one when it ends. `verbose=true` adds the
resolved config, Lightning's messages, the model summary and the test table.

`progress=auto` picks Lightning's Rich progress bar on a terminal and one plain line per epoch
elsewhere (log files, CI, SLURM), where a redrawn bar turns into thousands of lines. Both number
epochs from 1, as the closing and resume lines do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_only

from attnlab.run_folder import METRICS
from attnlab.sweep_record import sweep_of


def hide_lightning_warnings() -> None:
    """Lightning's warnings that say nothing to an attnlab user (once per process: at import)."""
    # Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per run; nothing for a user to do.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # A resume continues its own checkpoints folder, by design (Lightning warns that it is not empty).
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    if "SLURM_JOB_ID" not in os.environ:  # not in an allocation: a workstation or a login node with SLURM
        # installed, where the hint to prepend `srun` is wrong: attnlab reaches the cluster through
        # hydra/launcher=slurm. Inside an allocation (salloc, then python without srun) it stays.
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


hide_lightning_warnings()  # before any Trainer: config.check_trainer's comes before the run's

LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric")  # "GPU available", tips, "Restoring states", ...
PROFILER_LOGGER = "pytorch_lightning.profilers"  # the report trainer.profiler (debug=profiler) asked for: kept


class EpochLines(ProgressBar):
    """One line per epoch: epoch, step, the epoch's logged metrics, seconds.

    Printed when the next epoch starts (or training ends): at the callbacks' `on_train_epoch_end` the
    LightningModule has not yet computed the epoch's train/acc, and the line would show the last one."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.started = time.perf_counter()
        self.pending: tuple[int, int, float] | None = None  # (epoch, step, seconds) of a finished epoch

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush(trainer, pl_module)
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.pending = (trainer.current_epoch, trainer.global_step, time.perf_counter() - self.started)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush(trainer, pl_module)

    def flush(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pending is None or not (self.enabled and trainer.is_global_zero):
            return
        epoch, step, seconds = self.pending
        self.pending = None
        metrics = self.get_metrics(trainer, pl_module)
        shown = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if "/" in k)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        print(f"epoch {epoch + 1}/{epochs} step {step} {shown} ({seconds:.1f} s)", flush=True)


class RichBar(RichProgressBar):
    """Lightning's Rich bar, with epochs numbered from 1 like the plain lines ("Epoch 1/10", not "0/9").
    Lightning has no public setting for this label; its `_get_train_description` is the one hook
    (tests/test_console.py checks the label, so a Lightning change shows up there)."""

    def _get_train_description(self, current_epoch: int) -> str:
        cap = self.trainer.max_epochs
        label = f"Epoch {current_epoch + 1}" + (f"/{cap}" if cap and cap > 0 else "")
        return f"{label:{len(self.validation_description)}}"  # as wide as "Validation": no flicker


def progress_bar(mode: str) -> ProgressBar:
    if mode == "auto":
        mode = "rich" if sys.stdout.isatty() else "plain"
    # Rich keeps each finished epoch's bar on the terminal (by default it redraws one bar over them)
    return {"rich": lambda: RichBar(leave=True), "tqdm": TQDMProgressBar, "plain": EpochLines}[mode]()


@contextlib.contextmanager
def lightning_messages(verbose: bool, level: int = logging.WARNING) -> Iterator[None]:
    """Lightning's info messages only when verbose; its messages of `level` and above always."""
    levels = {lg: lg.level for lg in map(logging.getLogger, (*LIGHTNING_LOGGERS, PROFILER_LOGGER))}
    if not verbose:
        for lg in levels:
            lg.setLevel(level if lg.name in LIGHTNING_LOGGERS else logging.INFO)
    try:
        yield
    finally:
        for lg, level in levels.items():
            lg.setLevel(level)


@rank_zero_only
def announce_start(c: dict[str, Any], out: Path, job: Any | None) -> None:
    """Single run: its folder (and the resolved config when verbose). Sweep job: which job of how many."""
    if job is None:
        if c["verbose"]:
            print(OmegaConf.to_yaml(c), end="")
        print(f"[attnlab] output folder: {out}", flush=True)
    elif c["verbose"]:  # a sweep prints a line per finished job; its folder is in that line
        print(f"[attnlab] job {job.num + 1}/{len(sweep_of(out)) or '?'} started: {out}", flush=True)


@rank_zero_only
def announce_end(metrics: dict[str, Any], out: Path, seconds: float, job: Any | None) -> None:
    """The closing line (under 100 columns: the folder goes on a line of its own): the tested checkpoint's
    scores, and which checkpoint that is. A sweep job: one line, with the sweep's progress (k/N done)."""
    names = {"test/acc": "test/acc", "test/acc_shuffled": "shuffled", "test/loss": "loss"}
    shown = ", ".join(f"{n} {metrics[k]:.4f}" for k, n in names.items() if metrics.get(k) is not None)
    tested = metrics["tested_checkpoint"]
    which = f"tested epoch {tested['epoch']} of {metrics['epochs']}" if tested["file"] else "final weights"
    if job is None:
        print(f"[attnlab] done in {seconds:.1f} s: {shown} ({which})\n[attnlab] files in {out}", flush=True)
    else:  # k/N: how many of the sweep's jobs have finished, this one included (they run in parallel)
        jobs = sweep_of(out)
        done = f"{sum((out.parent / j['dir'] / METRICS).is_file() for j in jobs)}/{len(jobs) or '?'}"
        acc = metrics["test/acc"]
        print(f"[attnlab] {done} done: {out.name}: test/acc {acc:.4f} ({which}, {seconds:.1f} s)", flush=True)
