"""A study's TensorBoard view, `<sweep>/tensorboard/` (README: "A study's view"), written by the report: a run per
cell (the settings that vary, seeds aside: the seeds' mean, min and max curves, from their metrics.json's history;
an HParams row, the verdict), the `study` run (summary.md) and `uniform attention, L=<L>` (log L, a flat line in
the entropy charts). TensorBoard selects no run past 40 in a logdir (a 42-job study opened at its folder shows
empty charts): here every chart is drawn at first sight."""

import bisect
import math
import statistics
from pathlib import Path
from typing import Any

FOLDER = "tensorboard"  # in the sweep folder
EVENTS = "events.out.tfevents.*"  # a TensorBoard run's files (a run's are in its own folder)
# HParams metrics: the runs' own scalars, under short labels. A cell logs its seeds' means under the same tags.
METRICS = {"test/acc": "acc", "test/acc_shuffled": "shuffled", "test/loss": "loss", "val/acc_best": "val best"}
CURVES = ("val/acc", "val/loss", "val/acc_shuffled", "attn/entropy")  # averaged over the seeds of a cell
LAYOUT = {
    "cell: mean over seeds, with min and max (a seed stopped early holds its last value)": {
        f"{tag} (mean, min, max over seeds)": ["Multiline", [rf"^{tag}(/min|/max)?$"]] for tag in CURVES
    }
}


def curves(history: dict[str, list[Any]]) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of a run's CURVES, from its metrics.json's history (the values its TensorBoard run
    holds: reading those back costs a second a study, checksumming the figures). Paired with the validations'
    steps from the last one back: a run started from a checkpoint without diagnostics has them only later."""
    steps = list(map(step, history.get("step", [])))[::-1]
    return {t: dict(zip(steps, map(float, history[t][::-1]), strict=False)) for t in CURVES if history.get(t)}


def step(value: Any) -> int:
    """A recorded step, as TensorBoard can take it; ValueError for anything else (a record is input)."""
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValueError(f"history step {value!r} is not a step")
    return value


def cell_series(runs: list[dict[str, dict[int, float]]]) -> dict[str, dict[int, float]]:
    """Mean, min and max over the seeds (`curves` of each) at every step any of them logged. A seed stopped early
    holds its last value from then on: a mean over only the seeds still training would jump where one stops."""
    series = {}
    for tag in sorted({tag for run in runs for tag in run}):
        seeds = [(sorted(run[tag]), run[tag]) for run in runs if run.get(tag)]  # (its steps, {step: value})
        at: dict[int, list[float]] = {}
        for step in sorted({s for steps, _ in seeds for s in steps}):
            # each seed's value at its latest step up to this one (none before its first)
            at[step] = [points[steps[i - 1]] for steps, points in seeds if (i := bisect.bisect_right(steps, step))]
        for suffix, stat in (("", statistics.fmean), ("/min", min), ("/max", max)):
            series[tag + suffix] = {s: stat(values) for s, values in at.items()}
    return series


def hparam_value(value: Any) -> Any:
    """Numbers as numbers (TensorBoard prints 256 as "256.00": accepted, for a range filter and a log axis)."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def hparams_summaries(row: dict[str, Any], differs: set[str], declared: dict[str, Any] | None = None) -> list:
    """The HParams summaries of one run: the experiment, declaring `declared` (default: the row) with `differs`
    marked and the metrics' short labels, and the session's `row`. A sweep's jobs and its cells declare the same
    columns: TensorBoard takes one run's declaration for a whole logdir (a cell has no seed: its cell is empty)."""
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


def write_board(board: Path, cells: list[dict[str, Any]], summary: str) -> None:
    """The study view's TensorBoard runs, derived from the jobs, written into the new folder `board` (the report's
    work folder's: renamed in whole). Each cell: {"name", "hparams" (key -> value), "curves" (its seeds'),
    "metrics" (their means, and attn/entropy_uniform where known), "text"}."""
    from torch.utils.tensorboard import SummaryWriter

    steps: set[int] = set()
    for cell in cells:
        series = cell_series(cell["curves"])
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
            for tag in [t for t in METRICS if t in cell["metrics"]]:  # the HParams metrics: the seeds' means
                writer.add_scalar(tag, cell["metrics"][tag], last)
            writer.add_text("verdict", cell["text"])  # after "summary" in the Text tab (sorted by tag)
    uniform = [cell["metrics"]["attn/entropy_uniform"] for cell in cells if "attn/entropy_uniform" in cell["metrics"]]
    for length, entropy in sorted({round(math.exp(e)): e for e in uniform}.items()):
        with SummaryWriter(str(board / f"uniform attention, L={length}")) as writer:
            for step in (min(steps, default=0), max(steps, default=0)):
                writer.add_scalar("attn/entropy", entropy, step)
    with SummaryWriter(str(board / "study")) as writer:
        writer.add_text("summary", summary)
