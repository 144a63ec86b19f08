"""Length generalisation: a trained checkpoint scored on test sets of other sequence lengths.

Each length gets a fresh test set from the run's `data.seed` (and the length), so the numbers are
reproducible and never overlap training data; the training length gets the run's own test set, so
with the best checkpoint and `eval.n` = `data.n_test` (the default) it gives back the run's test/acc.

Results go to the run's metrics.json, to a figure (`length_generalization.png` in the run folder, and the
image `eval/acc_vs_seq_len` in TensorBoard at the checkpoint's step; a figure, because lengths on a
scalar chart's step axis get smoothed and clipped away):
`length_generalization` {seq_len: acc} of the checkpoint named in `length_generalization_checkpoint`
(file and training step). Evaluating the same checkpoint again adds lengths to it; another checkpoint
starts a new table, and the old one moves to `length_generalization_earlier` with its checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from attnlab import runs
from attnlab.checkpoint import checkpoint_path, load_module
from attnlab.config import check_seq_len
from attnlab.errors import ConfigError
from attnlab.runs import run_config
from attnlab.tasks import derive_seed, make_split, split_seed

FIGURE = "length_generalization.png"  # in the run folder, and as an image in TensorBoard (eval/acc_vs_seq_len)
KEY = "length_generalization"  # in metrics.json; train.py carries its keys over when a run is resumed


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    from attnlab.module import accuracy_metric  # here: a refused length answers before Lightning is imported

    metric = accuracy_metric(net.head.out_features)  # counted as the run's own test/acc was
    for i in range(0, len(x), batch_size):
        metric.update(net(x[i : i + batch_size]).argmax(-1), y[i : i + batch_size])
    return float(metric.compute())


def evaluate_lengths(
    run_dir: str | Path, seq_lens: list[int], ckpt: str = "best", n: int | None = None, batch_size: int = 256
) -> dict[int, float]:
    run_dir = Path(run_dir)
    c = run_config(run_dir)
    state, reason = runs.status(run_dir)
    if state != "ok":  # its metrics.json would make a failed run look finished
        why = f" ({reason})" if reason else ""
        raise ConfigError("run_dir", str(run_dir), f"the run did not finish: {state}{why}; resume it first")
    data, model = c["data"], c["model"]
    n = data["n_test"] if n is None else n
    for key, value in (("eval.n", n), ("eval.batch_size", batch_size)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ConfigError(key, value, "must be an integer > 0")
    for length in seq_lens:  # refuse every impossible length before evaluating any
        try:
            if length <= 0:
                raise ConfigError("eval.seq_lens", length, "lengths must be > 0")
            check_seq_len(data, model, length)
        except ConfigError as e:
            raise ConfigError("eval.seq_lens", length, e.allowed) from e
    path = checkpoint_path(run_dir, ckpt)
    module = load_module(path)
    results = {}
    for length in seq_lens:
        # The training length: the run's own test set (the data module's seed); others: one set per length.
        own = length == data["seq_len"]
        seed = (
            split_seed("test", run_seed=0, data_seed=data["seed"]) if own else derive_seed(data["seed"], "test", length)
        )
        x, y = make_split(data["task"], n, length, data["dim"], seed)
        results[length] = accuracy(module.net, x, y, batch_size)

    metrics_path = run_dir / runs.METRICS
    metrics: dict[str, Any] = json.loads(metrics_path.read_text())
    which = {"file": os.path.relpath(path.resolve(), run_dir.resolve()), "global_step": checkpoint_step(path)}
    table = {str(k): v for k, v in results.items()}
    if metrics.get(KEY) and metrics.get(f"{KEY}_checkpoint") == which:  # more lengths of the same weights
        table = {**metrics[KEY], **table}
    elif metrics.get(KEY):  # another checkpoint (or the same file after more training): keep the old table
        earlier = {"checkpoint": metrics.get(f"{KEY}_checkpoint"), "acc": metrics[KEY]}
        metrics[f"{KEY}_earlier"] = [*metrics.get(f"{KEY}_earlier", []), earlier]
    metrics[KEY] = dict(sorted(table.items(), key=lambda kv: int(kv[0])))
    metrics[f"{KEY}_checkpoint"] = which
    runs.write_json_atomic(metrics_path, metrics)
    figure = length_figure(metrics[KEY], data["seq_len"], which)
    figure.savefig(run_dir / FIGURE, dpi=120)
    if (run_dir / "tb").is_dir():  # a run logged to TensorBoard (logger=tensorboard, the default)
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(run_dir / "tb")) as writer:
            writer.add_figure("eval/acc_vs_seq_len", figure, global_step=which["global_step"])
    return results


def length_figure(table: dict[str, float], train_len: int, which: dict[str, Any]) -> Any:
    """Test accuracy against sequence length (log scale), the training length marked, chance drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = [int(k) for k in table]
    fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
    ax.plot(lengths, list(table.values()), "o-", color="tab:blue", label="test/acc")
    ax.axvline(train_len, color="tab:red", linestyle="--", label=f"training length {train_len}")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("sequence length")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"length generalisation ({which['file']}, step {which['global_step']})", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    return fig
