"""Length generalisation: a trained checkpoint scored on test sets of other sequence lengths.

Each length gets a fresh test set from the run's `data.seed` (and the length), so the numbers are
reproducible and never overlap training data. Results go to the run's metrics.json
(`length_generalization`: {seq_len: acc}) and to TensorBoard (`eval/acc_vs_seq_len`, step = seq_len).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from attnlab import runs
from attnlab.checkpoint import checkpoint_path, load_module
from attnlab.config import check_seq_len
from attnlab.data import derive_seed, make_split
from attnlab.errors import ConfigError
from attnlab.runs import run_config


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    correct = sum(
        int((net(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    return correct / len(x)


def evaluate_lengths(
    run_dir: str | Path, seq_lens: list[int], ckpt: str = "best", n: int = 1024, batch_size: int = 256
) -> dict[int, float]:
    run_dir = Path(run_dir)
    c = run_config(run_dir)
    state, reason = runs.status(run_dir)
    if state != "ok":  # its metrics.json would make a failed run look finished
        why = f" ({reason})" if reason else ""
        raise ConfigError("run_dir", str(run_dir), f"the run did not finish: {state}{why}; resume it first")
    for key, value in (("eval.n", n), ("eval.batch_size", batch_size)):
        if not value > 0:
            raise ConfigError(key, value, "must be > 0")
    data, model = c["data"], c["model"]
    for length in seq_lens:  # refuse every impossible length before evaluating any
        try:
            if length <= 0:
                raise ConfigError("eval.seq_lens", length, "lengths must be > 0")
            check_seq_len(data, model, length)
        except ConfigError as e:
            raise ConfigError("eval.seq_lens", length, e.allowed) from e
    module = load_module(checkpoint_path(run_dir, ckpt))
    results = {}
    for length in seq_lens:
        x, y = make_split(data["task"], n, length, data["dim"], derive_seed(data["seed"], "test", length))
        results[length] = accuracy(module.net, x, y, batch_size)

    metrics_path = run_dir / "metrics.json"
    metrics: dict[str, Any] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["length_generalization"] = {str(k): v for k, v in results.items()}
    runs.write_json_atomic(metrics_path, metrics)
    with SummaryWriter(str(run_dir / "tb")) as writer:
        for length, acc in results.items():
            writer.add_scalar("eval/acc_vs_seq_len", acc, global_step=length)
    return results
