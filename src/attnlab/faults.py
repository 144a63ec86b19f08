"""Surviving faults: signals, and checkpoints that a crash cannot corrupt.

`StopOnSignal`: SIGTERM (SLURM preemption, `kill`) and SIGINT (Ctrl-C) let the current step
finish, then save `checkpoints/interrupted.ckpt`, flush TensorBoard and stop. Lightning 2.6 turns
SIGTERM into a SystemExit with code 0, which a scheduler would read as success; `train` raises
`Interrupted` instead and scripts/train.py exits with 128 + the signal number.

`AtomicCheckpointIO`: a checkpoint is written to `<name>.tmp` and renamed over the old one, so a
full disk or a kill during the write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.plugins.io import TorchCheckpointIO


class StopOnSignal(pl.Callback):
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, checkpoint_path: Path) -> None:
        self.checkpoint_path = checkpoint_path
        self.signum: int | None = None
        self.saved: str | None = None
        self.previous: dict[int, Any] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning registers its own SIGTERM handler right after this hook and keeps ours beside it.
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle(trainer))

    def handle(self, trainer: pl.Trainer) -> Any:
        def handler(signum: int, frame: Any) -> None:
            self.signum = signum
            # Lightning's flag: it stops at the end of the current batch with SIGTERMException.
            trainer._signal_connector.received_sigterm = True

        return handler

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.signum is not None:
            trainer.save_checkpoint(self.checkpoint_path)
            self.saved = str(self.checkpoint_path)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
