"""Signals in every phase of a run: SIGTERM, SIGINT (and SIGUSR2, SLURM's time-limit warning, where a job runner
handles it) from a run's start to its last write. While fitting, the current step (or the epoch's validation and
its checkpoints) finishes, then `checkpoints/interrupted.ckpt` is saved; a test stops after its batch; elsewhere
the run stops at once. `train` then raises `Interrupted` (exit 128 + signal). Lightning 2.6 alone exits 0 on
SIGTERM, which a scheduler reads as success, and does not guard its test loop against SIGINT.
"""

import signal
from pathlib import Path
from typing import Any, Self

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn, TrainerStatus

from attnlab import errors
from attnlab.errors import Interrupted


class StopOnSignal(pl.Callback):
    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    # SLURM's time-limit warning, when submitit handles it (requeue): the run stops and saves, then hands it over.
    HANDED_OVER = (signal.SIGUSR2,)

    def __init__(self, folder: Path) -> None:
        self.relative = Path("checkpoints", "interrupted.ckpt")  # as INTERRUPTED names it: the folder may move
        self.checkpoint_path = folder / self.relative
        self.signum: int | None = None
        self.saved: str | None = None
        self.trainer: pl.Trainer | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if errors.pending_signal is not None:  # (a sweep's worker got it while this job started)
            raise Interrupted(errors.pending_signal)
        # Installed before the Trainer exists. Lightning then sees a handler and does not add its own.
        for sig in (*self.SIGNALS, *self.HANDED_OVER):
            if sig in self.SIGNALS or callable(signal.getsignal(sig)):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        previous, self.previous = self.previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if self.signum in self.HANDED_OVER:  # the run has stopped and saved: now the runner's own handling
            previous[self.signum](self.signum, None)  # submitit: requeue the job, exit

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a repeat (Ctrl-C reaches a sweep's workers, and the sweep passes it on)
            return  # the run is stopping already: a second stop must not cut its checkpoint's save short
        self.signum = signum
        trainer = self.trainer
        if trainer is None or trainer.state.status != TrainerStatus.RUNNING:
            raise Interrupted(signum, trainer.global_step if trainer else None)
        self.stop(trainer, trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking)
        # Fitting: stop at the next point a checkpoint resumes from exactly (the hooks below). Never in
        # the middle of an epoch's validation: a checkpoint taken there would count the epoch as done
        # and resume past a validation, and a best checkpoint, that never happened.

    def stop(self, trainer: pl.Trainer, now: bool = True) -> None:
        """After a signal, where `now`: Lightning's own flag (no public setter) stops its loops after the current
        batch with SIGTERMException, and `on_exception` saves the checkpoint."""
        if self.signum is not None and now:
            trainer._signal_connector.received_sigterm = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2.6 puts its own SIGTERM handler in front of ours when fitting starts; it raises the stop
        # flag at once, even in the middle of a validation. One process: ours alone decides. (Under DDP
        # Lightning's also forwards the signal to the other processes, so it stays.)
        if trainer.world_size == 1:
            signal.signal(signal.SIGTERM, self.handle)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.signum is not None:
            self.stop(trainer, args[-1] + 1 < trainer.num_training_batches)  # the epoch's last batch: validation first

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop(trainer, not trainer.sanity_checking)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # The epoch's checkpoints are written after this hook runs (best.ckpt, then last.ckpt): a signal
        # during the first lets the second finish, then stops.
        self.stop(trainer, trainer.state.fn == TrainerFn.FITTING)

    def interrupted(self) -> Interrupted:
        assert self.signum is not None
        return Interrupted(self.signum, self.trainer.global_step if self.trainer else None, self.saved)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.signum is not None and trainer.state.fn == TrainerFn.FITTING:
            trainer.save_checkpoint(self.checkpoint_path)
            self.saved = str(self.relative)
