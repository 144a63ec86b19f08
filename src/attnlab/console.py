"""What a run prints: the config and output folder at start, progress, one line at the end.

`progress=auto` picks Lightning's Rich progress bar on a terminal and one plain line per epoch
elsewhere (log files, CI, SLURM), where a redrawn bar turns into thousands of lines.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_only

SWEEP_SIZE_ENV = "ATTNLAB_SWEEP_JOBS"  # set by the sweeper (hydra_plugins.attnlab_sweeper)


class EpochLines(ProgressBar):
    """One line per epoch: epoch, step, the logged metrics, seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.started = time.perf_counter()

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.enabled and trainer.is_global_zero):
            return
        metrics = self.get_metrics(trainer, pl_module)
        shown = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if "/" in k)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        print(
            f"epoch {trainer.current_epoch + 1}/{epochs} step {trainer.global_step} {shown} "
            f"({time.perf_counter() - self.started:.1f} s)",
            flush=True,
        )


PROGRESS_BARS = {"rich": RichProgressBar, "tqdm": TQDMProgressBar, "plain": EpochLines}


def progress_bar(mode: str) -> ProgressBar:
    if mode == "auto":
        mode = "rich" if sys.stdout.isatty() else "plain"
    return PROGRESS_BARS[mode]()


@rank_zero_only
def announce_start(c: dict[str, Any], out: Path, job: Any | None) -> None:
    """Single run: the resolved config and the folder. Sweep job: which job of how many, and its folder."""
    if job is None:
        print(OmegaConf.to_yaml(c), end="")
        print(f"[attnlab] output folder: {out}", flush=True)
    else:
        total = os.environ.get(SWEEP_SIZE_ENV, "?")
        print(f"[attnlab] job {job.num + 1}/{total}: {job.override_dirname or '(no overrides)'} -> {out}", flush=True)


@rank_zero_only
def announce_end(metrics: dict[str, Any], out: Path, seconds: float) -> None:
    shown = ", ".join(
        f"{k} {metrics[k]:.4f}"
        for k in ("test/acc", "val/acc_best", "test/acc_shuffled", "test/loss")
        if metrics.get(k) is not None
    )
    print(f"[attnlab] done in {seconds:.1f} s: {shown}; files in {out} (metrics.json, checkpoints/, tb/)", flush=True)
