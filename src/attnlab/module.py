"""The LightningModule: loss, optimiser and metrics around `AttentionClassifier`."""

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from attnlab.checkpoints import epoch_step, read_checkpoint
from attnlab.errors import ConfigError, first_line
from attnlab.model import AttentionClassifier
from attnlab.resume import check_held_settings, keep_cut_epoch_open

# Kept in `LitClassifier.history`: per validation, the step TensorBoard shows it at, its val/acc and val/loss
# (and attnlab.diagnostics' val/acc_shuffled and attn/entropy); per training epoch, train/acc.
HISTORY = ("step", "val/acc", "val/loss", "val/acc_shuffled", "attn/entropy", "train/acc")


def validation_step_logged(trainer: pl.Trainer) -> int:
    """The step Lightning writes a validation's epoch-end values at: the last training batch's (the history's step,
    attnlab.diagnostics' scalars)."""
    return trainer.global_step - 1


def accuracy_metric(num_classes: int, sync: bool = True) -> MulticlassAccuracy:
    """The project's one accuracy (correct / total, reduced over DDP processes by `compute()` unless `sync` is
    false): train/val/test, shuffled (attnlab.diagnostics) and other lengths (attnlab.evaluate) all count the same
    way."""
    return MulticlassAccuracy(num_classes, average="micro", validate_args=False, sync_on_compute=sync)


class LitClassifier(pl.LightningModule):
    def __init__(self, model: dict[str, Any], lr: float, weight_decay: float) -> None:  # attnlab.config
        super().__init__()
        # Plain dicts and numbers, so checkpoints load with weights_only=True; train.py logs the whole config.
        self.save_hyperparameters(logger=False)
        self.net = AttentionClassifier(**model)
        # Keyed "<stage>_..." because a ModuleDict key "train" would shadow nn.Module.train.
        num_classes = self.net.head.out_features
        self.acc = torch.nn.ModuleDict({f"{s}_acc": accuracy_metric(num_classes) for s in ("train", "val", "test")})
        self.mean_loss = torch.nn.ModuleDict({f"{s}_loss": MeanMetric() for s in ("val", "test")})
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run remembers its best
        # Kept too, and reset as an epoch starts: an epoch stopped part-way (a signal, a cut budget) and resumed
        # counts its train/acc over all its batches, not over those after the resume.
        self.acc["train_acc"].persistent(True)
        # The sequences a test scored (over DDP processes): data.n_test unless trainer.limit_test_batches cut it,
        # the n of test/acc's interval.
        self.test_count = SumMetric()
        self.tested_sequences: int | None = None
        # One value per finished epoch, kept in checkpoints: the report tells from it (through metrics.json)
        # a model at chance from one still learning when its budget ran out.
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY}
        # True while the history's last train/acc is of an epoch a budget cut (its batches so far), kept in
        # checkpoints: the resume that finishes the epoch replaces it with the whole epoch's.
        self.open_epoch = False
        # The checkpoint these weights were last loaded from (epoch counted from 1, global step), read from
        # the same file as the weights: what a test or an evaluation names as the model it scored.
        self.loaded_from: dict[str, int] | None = None
        # True (set by train.py) for a new run's fit from another run's checkpoint (`ckpt_path`); `started_from`:
        # that checkpoint's epoch and step, kept in this run's checkpoints (what its epochs and steps count from).
        self.fresh_start = False
        self.started_from: dict[str, int] | None = None

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self.net(x)  # (B, C)
        loss = F.cross_entropy(logits, y)
        # Accumulated per step, logged once per epoch (`end_epoch`): a `self.log` of a metric object every
        # step moves the metric to the device each time, which cost more than the model's own step.
        self.acc[f"{stage}_acc"].update(logits.argmax(-1), y)
        return loss

    def check_finite(self, loss: Tensor, stage: str) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{stage}/loss is {loss.item()} at step {self.global_step} (epoch {self.current_epoch + 1}): "
                "lower optim.lr or set trainer.gradient_clip_val"
            )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.step(batch, "train")
        self.check_finite(loss, "train")  # before this step's update reaches the weights
        # Only at the steps Lightning writes to the logger (every trainer.log_every_n_steps); the bar shows it.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss = self.step(batch, "val")
        # Weights can be finite and still give NaN logits (an update of 1e30): stop before the epoch's
        # checkpoints are written, which happens after validation.
        self.check_finite(loss, "val")
        self.mean_loss["val_loss"].update(loss, weight=len(batch[1]))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.mean_loss["test_loss"].update(self.step(batch, "test"), weight=len(batch[1]))
        self.test_count.update(len(batch[1]))

    def end_epoch(self, stage: str, prog_bar: bool = True) -> dict[str, float]:
        """Log and return the epoch's accuracy (and loss) of `stage` (compute() reduces over DDP); reset them but
        train/acc, which on_train_epoch_start resets."""
        values = {f"{stage}/acc": self.acc[f"{stage}_acc"].compute()}
        if stage != "train":  # (train/acc: reset as its epoch starts; no epoch loss)
            self.acc[f"{stage}_acc"].reset()
            values[f"{stage}/loss"] = self.mean_loss[f"{stage}_loss"].compute()
            self.mean_loss[f"{stage}_loss"].reset()
        self.log_dict(values, prog_bar=prog_bar)
        return {k: float(v) for k, v in values.items()}

    def on_validation_epoch_end(self) -> None:
        values = self.end_epoch("val")
        if self.trainer.sanity_checking:  # the pre-fit sanity pass is not an epoch
            return
        self.val_acc_best(values["val/acc"])
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)
        for key, value in {"step": validation_step_logged(self.trainer), **values}.items():
            self.history[key].append(value)

    def on_train_epoch_start(self) -> None:
        self.acc["train_acc"].reset()

    def on_train_epoch_end(self) -> None:
        if self.open_epoch:
            self.history["train/acc"].pop()
        self.history["train/acc"].append(self.end_epoch("train")["train/acc"])
        self.open_epoch = False

    def on_test_epoch_end(self) -> None:
        self.end_epoch("test", prog_bar=False)
        self.tested_sequences = int(self.test_count.compute())
        self.test_count.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["history"] = {k: list(v) for k, v in self.history.items()}  # plain floats: weights_only loads
        checkpoint["started_from"] = self.started_from
        with self.acc["train_acc"].sync_context():  # (DDP: every process's counts; a resume gives them to one)
            checkpoint["state_dict"].update(self.acc["train_acc"].state_dict(prefix="acc.train_acc."))
        cut = keep_cut_epoch_open(checkpoint, self.trainer.num_training_batches)  # a resume finishes the epoch
        checkpoint["open_epoch"] = cut or self.open_epoch

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning calls this before it restores anything from `checkpoint`, to let the module change it. A new
        run from another run's checkpoint takes its weights, its optimiser's state and its loops' position, not its
        record: the history (the verdict's convergence), val/acc_best and every callback's state (the best
        checkpoint, early stopping's count, the timer) start afresh, as in a run of its own."""
        if self.fresh_start:
            self.fresh_start = False  # (the test's load of this run's best checkpoint restores as usual)
            checkpoint.update(history={}, callbacks={}, started_from=epoch_step(checkpoint))
            checkpoint["state_dict"].update(self.val_acc_best.state_dict(prefix="val_acc_best."))  # as initialised
        if self.global_rank > 0:  # the train counts saved are every DDP process's: restored to the first alone
            checkpoint["state_dict"].update(self.acc["train_acc"].state_dict(prefix="acc.train_acc."))  # (zeros)
        saved = checkpoint.get("history", {})
        self.history = {k: list(saved.get(k, [])) for k in HISTORY}
        self.started_from = checkpoint.get("started_from")
        self.open_epoch = checkpoint.get("open_epoch") is True and bool(self.history["train/acc"])
        self.loaded_from = epoch_step(checkpoint)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning names the running hook on the module ~50 times a training step, and nn.Module's checks of each
        # value (isinstance against Parameter's and Buffer's metaclasses) cost 3-5% of a job. Text or None over a
        # plain attribute (in __dict__: never a parameter, buffer or submodule) is what nn.Module would do, unchecked.
        if name in self.__dict__ and (value is None or type(value) is str):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def configure_model(self) -> None:
        # Lightning restores a checkpoint's weights before its precision plugin converts the module: under 64-true a
        # resume's (or a test's) doubles would pass through float32, and the resumed run differ from the one not cut
        if str(self.trainer.precision) == "64-true":
            self.double()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # fused: one kernel updates every parameter; unfused, Adam on a CPU runs ~10 small ops per parameter, a
        # sizeable part of this small model's step. (Lightning has moved the model.)
        fused = self.device.type in ("cpu", "cuda") or None
        hp = self.hparams
        return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)


def load_module(path: str | Path, run: dict[str, Any], key: str = "ckpt") -> LitClassifier:
    """The LightningModule of a checkpoint of the run whose config is `run`, in eval mode; `loaded_from` (epoch,
    step) comes from the same read as the weights, so a checkpoint replaced meanwhile by a resume cannot mislabel
    them. ConfigError (naming `key` and the file) for a file that does not load or holds another model."""
    ckpt = read_checkpoint(path, key)
    # this run's model, not another's: compared before it is built (a crafted 10^9 layers would fill the memory)
    check_held_settings(ckpt["hyper_parameters"], run, key, Path(path))
    try:
        module = LitClassifier(**ckpt["hyper_parameters"])
        module.load_state_dict(ckpt["state_dict"])
    except Exception as e:  # hyperparameters or weights of another model
        reason = f"not a loadable attnlab checkpoint ({type(e).__name__}: {first_line(e)})"
        raise ConfigError(key, str(path), reason) from e
    module.loaded_from = epoch_step(ckpt)
    return module.eval()
