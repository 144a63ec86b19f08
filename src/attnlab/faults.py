"""Surviving faults: signals in every phase, checkpoints a crash cannot corrupt, runs that can move.

`StopOnSignal`: SIGTERM (SLURM preemption, `kill`) and SIGINT (Ctrl-C) are handled from the start
of a run to its last write; so is SIGUSR2 (SLURM's time-limit warning) where a job runner handles it.
While Lightning fits, the current step (or the epoch's validation, with its checkpoints) finishes,
then `checkpoints/interrupted.ckpt` is saved; a test stops after its batch; outside Lightning's loops
(building, between fit and test, writing metrics.json) the run stops at once. Either way `train` ends
with `Interrupted`, which scripts/train.py turns into exit code 128 + signal and the command that
continues the run. (Lightning 2.6 alone turns SIGTERM into exit code 0, which a scheduler reads as
success, and does not guard its test loop against SIGINT at all.)

`AtomicCheckpointIO`: a checkpoint is written to `<name>.tmp` and renamed over the old one, so a
full disk or a kill during the write leaves the previous checkpoint whole.

`RunCheckpoint`: Lightning's ModelCheckpoint drops its best score when the folder it was saved from
differs from the folder it runs in, so a run moved (`mv`) or copied (`cp -r`) and resumed would
overwrite best.ckpt with a worse epoch, or test the *original* folder's file. Here the saved state
follows the run: in the same run it is re-pointed at this folder; in a new run started from
another's checkpoint (`ckpt_path`) it is dropped, and the new run tracks its own best.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerFn, TrainerStatus

from attnlab.errors import Interrupted


class StopOnSignal(pl.Callback):
    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    # SLURM's time-limit warning, when a job runner (submitit) handles it: it requeues the job. Ours first
    # stops the run at a safe point with its checkpoint, then hands the signal over (see __exit__).
    HANDED_OVER = (signal.SIGUSR2,)

    def __init__(self, checkpoint_path: Path) -> None:
        self.checkpoint_path = checkpoint_path
        self.signum: int | None = None
        self.saved: str | None = None
        self.trainer: pl.Trainer | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        # Installed before the Trainer exists. Lightning then sees a handler and does not add its own.
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle)
        for sig in self.HANDED_OVER:
            if callable(signal.getsignal(sig)):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        previous, self.previous = self.previous, {}
        if self.signum in self.HANDED_OVER:  # the run has stopped and saved: now the runner's own handling
            previous[self.signum](self.signum, None)  # submitit: requeue the job, exit

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        trainer = self.trainer
        if trainer is None or trainer.state.status != TrainerStatus.RUNNING:
            raise Interrupted(signum, trainer.global_step if trainer else None)
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            self.stop(trainer)
        # Fitting: stop at the next point a checkpoint resumes from exactly (the hooks below). Never in
        # the middle of an epoch's validation: a checkpoint taken there would count the epoch as done
        # and resume past a validation, and a best checkpoint, that never happened.

    @staticmethod
    def stop(trainer: pl.Trainer) -> None:
        # Lightning's own flag (no public setter): its loops stop at the end of the current batch with
        # SIGTERMException, after which `on_exception` saves the checkpoint.
        trainer._signal_connector.received_sigterm = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2.6 puts its own SIGTERM handler in front of ours when fitting starts; it raises the stop
        # flag at once, even in the middle of a validation. One process: ours alone decides. (Under DDP
        # Lightning's also forwards the signal to the other processes, so it stays.)
        if trainer.world_size == 1:
            signal.signal(signal.SIGTERM, self.handle)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        batch_idx = args[-1]
        if self.signum is not None and batch_idx + 1 < trainer.num_training_batches:  # the epoch's last: validation
            self.stop(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signum is not None and not trainer.sanity_checking:
            self.stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signum is not None:
            self.stop(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # The epoch's checkpoints are written after this hook runs (best.ckpt, then last.ckpt): a signal
        # during the first lets the second finish, then stops.
        if self.signum is not None and trainer.state.fn == TrainerFn.FITTING:
            self.stop(trainer)

    def interrupted(self) -> Interrupted:
        assert self.signum is not None
        return Interrupted(self.signum, self.trainer.global_step if self.trainer else None, self.saved)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.signum is not None and trainer.state.fn == TrainerFn.FITTING:
            trainer.save_checkpoint(self.checkpoint_path)
            self.saved = str(self.checkpoint_path)


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


class RunCheckpoint(ModelCheckpoint):
    def __init__(self, *args: Any, same_run: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.same_run = same_run  # resuming this run (maybe moved), or a new run from another's checkpoint

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_dir = state_dict.get("dirpath", self.dirpath)
        if saved_dir == self.dirpath:
            return super().load_state_dict(state_dict)
        if not self.same_run:
            return None  # another run's bookkeeping: this run starts its own

        def here(path: str) -> str:
            return os.path.join(self.dirpath, os.path.basename(path)) if path else path

        moved = {
            **state_dict,
            "dirpath": self.dirpath,
            "best_model_path": here(state_dict.get("best_model_path", "")),
            "kth_best_model_path": here(state_dict.get("kth_best_model_path", "")),
            "last_model_path": here(state_dict.get("last_model_path", "")),
            "best_k_models": {here(k): v for k, v in state_dict.get("best_k_models", {}).items()},
        }
        return super().load_state_dict(moved)
