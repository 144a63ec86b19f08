"""What TensorBoard shows of a run beyond its curves: the HParams row and a pinned chart layout (`LAYOUT`); the
loggers' classes, each holding the test's numbers back for the tested checkpoint's step (`HoldsTest`).

A sweep job's HParams row holds what its sweep varies, `seed` last; a single run's, the key settings
(`naming.KEY_SETTINGS`); its metrics are the run's own test scalars (board.METRICS). Debug runs measure nothing and
log no row.
"""

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

from attnlab.board import hparams_summaries  # one definition for runs and cells
from attnlab.naming import KEY_SETTINGS, lookup, varying_keys
from attnlab.sweep_record import sweep_of

GROUP_KEYS = {"data": "data.task"}  # a config group override that varies -> the key it is shown by

LAYOUT = {  # custom-scalars plugin: one chart per question, one tag each (TensorBoard colours by run)
    "attnlab": {
        "did it learn? val/acc": ["Multiline", ["^val/acc$"]],
        "does it use position? val/acc with positions shuffled": ["Multiline", ["^val/acc_shuffled$"]],
        "is it still learning? val/loss": ["Multiline", ["^val/loss$"]],
        "train/loss": ["Multiline", ["^train/loss$"]],
        "attention entropy (nats; uniform attention: log L)": ["Multiline", ["^attn/entropy$"]],
    }
}


class HoldsTest:
    """Mixed into each logger (attnlab.loggers): the test's scalars held back (`tested`). Lightning would log them
    at the last step, and the tested checkpoint may be an earlier one: train.py logs them at its step."""

    tested: Mapping[str, float] = MappingProxyType({})  # replaced by each logging call, never changed in place

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        held = {k: float(v) for k, v in metrics.items() if k.startswith("test/")}
        self.tested = {**self.tested, **held}
        rest = {k: v for k, v in metrics.items() if k not in held}
        if set(rest) - {"epoch"}:  # (the epoch Lightning adds to the test's scalars: nothing left to go with)
            super().log_metrics(rest, step)  # type: ignore[misc]

    def log_tested(self, step: int) -> None:
        if self.tested:  # (none under fast_dev_run: Lightning's DummyLogger took them)
            super().log_metrics(self.tested, step)  # type: ignore[misc]


# The other loggers (attnlab.loggers), here at module level: a logger is pickled into ddp_spawn's processes.
class CSV(HoldsTest, CSVLogger): ...


class MLflow(HoldsTest, MLFlowLogger): ...


class Wandb(HoldsTest, WandbLogger): ...


class TensorBoard(HoldsTest, TensorBoardLogger):
    """Lightning's TensorBoardLogger without the `epoch` series it adds to every logging call (a chart of 0, 1,
    2, ... that opens first and says nothing the x axis does not), and without its hparams.yaml. The test's
    scalars are written beside the tested checkpoint's figures (`write_tested`)."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

    def save(self) -> None:  # no hparams.yaml beside the events: the run's config is config.json
        self.experiment.flush()


def is_debug(cfg: dict[str, Any]) -> bool:
    """A run of the debug presets (or their trainer settings): a pipeline check, not a result."""
    trainer = cfg["trainer"]
    limits = (trainer["limit_train_batches"], trainer["limit_val_batches"], trainer["limit_test_batches"])
    debug = trainer["fast_dev_run"] or trainer["overfit_batches"] or trainer["profiler"]
    return bool(debug or any(v is not None for v in limits))


# A single run's columns TensorBoard shows at first sight (those marked `differs`; with none marked it shows the
# first five by name: batch_size, d_model, dim, lr, max_epochs, the same in most runs): what tells runs apart.
SINGLE_RUN_SHOWN = {"task", "pos_enc", "seq_len", "scale", "pool", "seed"}


def hparams_of(cfg: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], set[str]]:
    """The run's HParams row (name -> value, as in the config) and the names shown at first sight: those its
    sweep varies, or a single run's SINGLE_RUN_SHOWN."""
    names = {key: name for name, key in KEY_SETTINGS.items()}
    _, varying = varying_keys([job["overrides"] for job in sweep_of(run_dir)])  # none for a single run
    varying = [GROUP_KEYS.get(k, k) for k in varying]
    keys = [k for k in varying if k != "seed" and lookup(cfg, k) is not None]
    keys = [*(keys or [k for k in KEY_SETTINGS.values() if k != "seed"]), "seed"]
    # a null (early_stop.patience's default) left out: TensorBoard would show the text "None" in a column of numbers
    row = {names.get(k, k): lookup(cfg, k) for k in keys if lookup(cfg, k) is not None}
    return row, {names.get(k, k) for k in varying} or SINGLE_RUN_SHOWN


def write_hparams(logger: TensorBoardLogger, row: dict[str, Any], differs: set[str], step: int) -> None:
    # the metrics' values are the run's own scalars (test/acc, ...): no copies
    write_summaries(logger.log_dir, [(summary, step) for summary in hparams_summaries(row, differs)])


def write_tested(logger: TensorBoard, figures: list[Any], step: int) -> None:
    """The tested checkpoint's test scalars and figures, at its step, in the run's one file of them."""
    from torch.utils.tensorboard.summary import scalar

    summaries = [scalar(tag, value) for tag, value in logger.tested.items()] + figures
    write_summaries(logger.log_dir, [(summary, step) for summary in summaries], replaces="tested")


def write_summaries(folder: str | Path, summaries: list[tuple[Any, int]], replaces: str = "") -> None:
    """Ready-made summaries (HParams, encoded images, scalars), each at its step, into a TensorBoard run's folder
    with the public FileWriter (a logger's SummaryWriter is closed after fit; reopening it is private).
    `replaces`: the name of the run's one file of this kind, which this one replaces once written. For what is
    drawn again whole (the tested checkpoint's, an evaluation's): TensorBoard hides what a resume logs again
    only from the resume's step on, so an earlier attempt's copy at an earlier step would show twice."""
    from torch.utils.tensorboard.writer import FileWriter

    earlier = list(Path(folder).glob(f"events.out.tfevents.*.{replaces}")) if replaces else []
    writer = FileWriter(str(folder), filename_suffix=f".{replaces}" if replaces else "")
    for summary, step in summaries:
        writer.add_summary(summary, step)
    writer.close()
    for path in earlier:
        path.unlink(missing_ok=True)
