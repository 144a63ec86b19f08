"""A study's TensorBoard view: `<sweep>/tensorboard/`, the folder a sweep's last line points to.

TensorBoard selects no run by default once a logdir holds more than 40, so a 42-job study opened at its
sweep folder shows empty charts until runs are ticked by hand. This folder holds one run per cell (the
settings that vary, seeds aside) and one `study` run, well under 40, so every chart is drawn at first
sight:

- each cell: the seeds' mean of val/acc, val/loss, train/loss and the attention entropy at every step,
  with the min and max over the seeds as series of their own (`val/acc/min`, `val/acc/max`);
  custom-scalars charts that put each mean beside its min and max; an HParams row (the keys the sweep
  varies, numbers as numbers; the cell's mean test accuracy as its metric); its verdict and seeds in the
  Text tab;
- `study`: summary.md (verdicts, intervals, budget) in the Text tab;
- `uniform attention, L=<L>`: the entropy attention has when it attends uniformly (log L), a flat line
  in the entropy charts, one run per sequence length (a cls token counts).

Each seed's own run stays in its job folder (`<sweep>/<job>`): `tensorboard --logdir <sweep>` opens
them all. Written by the report (attnlab.report.write_report), so `python scripts/report.py` rewrites it.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

FOLDER = "tensorboard"  # in the sweep folder
EVENTS = "events.out.tfevents.*"  # a TensorBoard run's files (a run's are in its own folder)
# HParams metrics: the runs' own scalars, under short labels. A cell logs its seeds' means under the same tags.
METRICS = {"test/acc": "acc", "test/acc_shuffled": "shuffled", "test/loss": "loss", "val/acc_best": "val best"}
CURVES = ("val/acc", "val/loss", "train/loss", "attn/entropy")  # averaged over the seeds of a cell
# custom scalars: one chart per question, each mean beside its min and max (the entropy's beside the
# uniform-attention runs)
LAYOUT = {
    "cell: mean over seeds, with min and max": {
        f"{tag} (mean, min, max over seeds)": ["Multiline", [rf"^{tag}(/min|/max)?$"]] for tag in CURVES
    }
}


def read_curves(tb_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of a job's TensorBoard run, for CURVES."""
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Its "Directory watcher advancing ..." lines, and its warning about a resumed run's purge ("likely caused
    # by a TensorFlow restart"): the purge is ours (the TensorBoard logger's purge_step), on purpose.
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 1, "histograms": 1, "tensors": 1})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    return {t: {e.step: e.value for e in acc.Scalars(t)} for t in CURVES if t in tags}


def cell_series(jobs: list[Path]) -> dict[str, dict[int, float]]:
    """Mean, min and max over the seeds at every step any of them logged (a seed stopped early adds
    nothing past its last step)."""
    per_seed = [read_curves(j) for j in jobs if any(j.glob(EVENTS))]
    series: dict[str, dict[int, float]] = {}
    for tag in CURVES:
        by_step: dict[int, list[float]] = defaultdict(list)
        for curves in per_seed:
            for step, value in curves.get(tag, {}).items():
                by_step[step].append(value)
        if not by_step:
            continue
        for name, stat in ((tag, statistics.fmean), (f"{tag}/min", min), (f"{tag}/max", max)):
            series[name] = {s: stat(by_step[s]) for s in sorted(by_step)}
    return series


def hparam_value(value: Any) -> Any:
    """Numbers as numbers (TensorBoard prints 256 as "256.00": accepted, for a range filter and a log axis)."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def hparams_summaries(row: dict[str, Any], differs: set[str], declared: dict[str, Any] | None = None) -> list:
    """The HParams summaries of one run (torch's protos): the experiment, declaring `declared` (default: the
    row) with `differs` marked and the metrics' short labels, and the session's `row`. A sweep's jobs and its
    cells declare the same columns, so that TensorBoard, which takes one run's declaration for a whole logdir,
    shows both (a cell has no seed: its cell stays empty)."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams

    experiment, _, _ = hparams({k: hparam_value(v) for k, v in (declared or row).items()}, dict.fromkeys(METRICS, 0))
    _, start, end = hparams({k: hparam_value(v) for k, v in row.items()}, dict.fromkeys(METRICS, 0))
    description = experiment.value[0].metadata.plugin_data
    data = HParamsPluginData.FromString(description.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in differs
    for metric in data.experiment.metric_infos:
        metric.display_name = METRICS[metric.name.tag]
    description.content = data.SerializeToString()
    return [experiment, start, end]


def write_board(sweep_dir: Path, cells: list[dict[str, Any]], summary: str) -> None:
    """Write `<sweep>/tensorboard/` anew: a run per cell, the `study` run, and a run per sequence length
    holding the entropy of uniform attention (log L: a flat line in the entropy charts). Each cell: {"name",
    "hparams" (key -> value), "jobs" (its seeds' folders), "metrics" (their means, and attn/entropy_uniform
    where known), "text"}."""
    from torch.utils.tensorboard import SummaryWriter

    board = sweep_dir / FOLDER
    if board.exists():
        shutil.rmtree(board)  # derived from the jobs: rewritten whole
    steps: set[int] = set()
    for cell in cells:
        series = cell_series(cell["jobs"])
        with SummaryWriter(str(board / cell["name"])) as writer:
            for tag, points in series.items():
                steps.update(points)
                for step, value in points.items():
                    writer.add_scalar(tag, value, step)
            writer.add_custom_scalars(LAYOUT)
            row = cell["hparams"]
            last = max((max(p) for p in series.values() if p), default=0)
            for proto in hparams_summaries(row, set(row), {**row, "seed": 0}):
                writer.file_writer.add_summary(proto, last)
            for tag in METRICS:  # the HParams metrics: the seeds' means
                if tag in cell["metrics"]:
                    writer.add_scalar(tag, cell["metrics"][tag], last)
            writer.add_text("verdict", cell["text"])  # after "summary" in the Text tab (sorted by tag)
    uniform = {round(math.exp(c["metrics"]["attn/entropy_uniform"])): c["metrics"]["attn/entropy_uniform"]
               for c in cells if "attn/entropy_uniform" in c["metrics"]}  # fmt: skip
    for length, entropy in sorted(uniform.items()):
        with SummaryWriter(str(board / f"uniform attention, L={length}")) as writer:
            for step in (min(steps, default=0), max(steps, default=0)):
                writer.add_scalar("attn/entropy", entropy, step)
    with SummaryWriter(str(board / "study")) as writer:
        writer.add_text("summary", summary)
