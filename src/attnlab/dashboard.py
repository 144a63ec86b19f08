"""What TensorBoard shows of a run beyond its curves: the HParams row and a pinned chart layout.

HParams. Each finished run is one row: the key settings (`HPARAMS`) plus any other key its sweep varies,
beside `hparams/<metric>` for `METRICS`. The run writes the experiment description itself, with the keys
the sweep varies marked as differing: TensorBoard takes one run's description for the whole logdir and
shows the differing keys first (its first five columns), so the sweep's own keys are the ones in view.
Whole numbers go in as text ("256"), because the HParams table prints every number with five significant
digits ("256.00", "8192.0"); fractional values (lr) stay numbers. Open TensorBoard on one sweep folder to
compare its jobs (the sweep's last line prints the command). Debug runs (fast_dev_run, overfit_batches,
limit_*_batches, a profiler) log no row: they measure nothing.

Custom scalars. A layout with the charts a researcher reads first: accuracy (train, val, val with
positions shuffled), loss, and attention entropy beside its uniform reference log L.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams

from attnlab.config import varying_keys

# name shown in HParams -> config key
HPARAMS = {
    "task": "data.task",
    "seq_len": "data.seq_len",
    "dim": "data.dim",
    "pos_enc": "model.pos_enc",
    "scale": "model.scale",
    "pool": "model.pool",
    "d_model": "model.d_model",
    "num_heads": "model.num_heads",
    "num_layers": "model.num_layers",
    "lr": "optim.lr",
    "seed": "seed",
    "max_epochs": "trainer.max_epochs",
    "n_train": "data.n_train",
}
GROUP_KEYS = {"data": "data.task"}  # a config group override that varies -> the key it is shown by
METRICS = ("val/acc_best", "test/acc", "test/acc_shuffled", "test/loss")  # logged as hparams/<metric>
LAYOUT = {  # custom-scalars plugin: category -> chart title -> ["Multiline", [tag regexes]]
    "attnlab": {
        "accuracy": ["Multiline", ["^train/acc$", "^val/acc$", "^val/acc_shuffled$"]],
        "loss": ["Multiline", ["^train/loss$", "^val/loss$"]],
        "attention entropy (nats) vs uniform log L": ["Multiline", ["^attn/entropy$", "^attn/entropy_uniform$"]],
    }
}


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoardLogger without the `epoch` series Lightning adds to every logging call:
    a chart of 0, 1, 2, ... that opens first in the Scalars tab and says nothing the x axis does not."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)


def is_debug(c: dict[str, Any]) -> bool:
    """A run of the debug presets (or their trainer settings): a pipeline check, not a result."""
    t = c["trainer"]
    limits = (t["limit_train_batches"], t["limit_val_batches"], t["limit_test_batches"])
    return bool(t["fast_dev_run"] or t["overfit_batches"] or t["profiler"] or any(v is not None for v in limits))


def lookup(c: dict[str, Any], key: str) -> Any:
    node: Any = c
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def sweep_varying(run_dir: Path) -> list[str]:
    """The config keys whose values differ between the jobs of the sweep this run belongs to (read from
    the sweep's jobs.json, which the sweeper writes before any job starts); [] for a single run."""
    record = run_dir.parent / "jobs.json"
    try:
        jobs = json.loads(record.read_text())["jobs"]
        if run_dir.name not in {job["dir"] for job in jobs}:
            return []
        _, varying = varying_keys([job["overrides"] for job in jobs])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [GROUP_KEYS.get(k, k) for k in varying]


def shown(value: Any) -> Any:
    """An HParams value: text for whole numbers and anything that is not a number or a bool."""
    if isinstance(value, bool | float):
        return value
    return str(value)


def hparams_of(c: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], set[str]]:
    """The HParams row of a run (name -> value, as in the config) and the names its sweep varies."""
    names = {key: name for name, key in HPARAMS.items()}
    varying = sweep_varying(run_dir)
    row = {name: lookup(c, key) for name, key in HPARAMS.items()}
    for key in varying:
        if key not in names and lookup(c, key) is not None:
            names[key] = key
            row[key] = lookup(c, key)
    return row, {names[k] for k in varying if k in names}


def write_hparams(
    logger: TensorBoardLogger, row: dict[str, Any], differs: set[str], metrics: dict[str, Any], step: int
) -> None:
    """The run's HParams row (with the experiment description) and its metrics, at `step`."""
    row = {name: shown(value) for name, value in row.items()}
    experiment, start, end = hparams(row, {f"hparams/{m}": 0 for m in METRICS})  # torch's protos, types included
    # ... plus which keys differ within the sweep, which torch's builder has no argument for.
    description = experiment.value[0].metadata.plugin_data
    data = HParamsPluginData.FromString(description.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in differs
    description.content = data.SerializeToString()
    writer = logger.experiment
    # SummaryWriter has no public call for a ready-made summary; `_get_file_writer` is what torch's own
    # add_hparams and Lightning's log_hyperparams use (and it reopens a writer Lightning closed after fit).
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary, step)
    for m in METRICS:
        if metrics.get(m) is not None:
            writer.add_scalar(f"hparams/{m}", metrics[m], step)
    writer.flush()


def write_layout(logger: TensorBoardLogger) -> None:
    logger.experiment.add_custom_scalars(LAYOUT)
