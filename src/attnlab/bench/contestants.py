"""What the benchmark times.

Per training step, the same model size, batch and sequence length:
  seed loop       what a user writes from the seeds: explicit softmax(QK^T/sqrt(d))V materialising
                  the (L, L) matrix, Adam, data as tensors, a plain Python loop;
  naive Lightning the same model in a LightningModule fed by DataLoader(TensorDataset), with
                  self.log every step: the usual template recipe;
  attnlab         scripts/train.py's own path (attnlab.train.train), default logging, metrics,
                  diagnostics and checkpointing on.
Whole processes (`replay`): the trainings a run or sweep folder holds, written by hand in one process.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnlab.config import run_config
from attnlab.tasks import make_split, split_seed

ROOT = Path(__file__).resolve().parents[3]


def rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())[1]) / 1024


# ----------------------------------------------------------------- per step
class SeedAttention(nn.Module):
    """The seeds' classifier as a user would write it: explicit attention, max-pool, linear head."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.embed = nn.Linear(1, d_model)
        self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)
        self.head = nn.Linear(d_model, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)  # (B, L, L)
        return self.head(self.out(weights @ v).amax(dim=1))


def tensors(spec: dict[str, Any], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An epoch of halfswap sequences, `steps_per_epoch` batches."""
    x, y = make_split("halfswap", spec["batch"] * spec["steps_per_epoch"], spec["seq_len"], 1, seed=0)
    return x.to(device), y.to(device)


def epoch_steps(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, bf16: bool = False
) -> Iterator[None]:
    """The steps of one epoch by hand, whole-tensor batches in a shuffled order: yields after each."""
    order = torch.randperm(len(x), device=x.device)
    for i in range(0, len(x), batch):
        idx = order[i : i + batch]
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield


def run_seed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    device = spec["device"]
    torch.manual_seed(0)
    model = SeedAttention(spec["d_model"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = tensors(spec, device)
    baseline = rss_mb()
    ends: list[tuple[int, float]] = []
    for epoch in itertools.count():
        for _ in epoch_steps(model, opt, x, y, spec["batch"], spec["bf16"]):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            ends.append((epoch, time.perf_counter()))
            if len(ends) == spec["steps"]:
                return {"ends": ends, "baseline_mb": baseline}


def run_naive_lightning(spec: dict[str, Any]) -> dict[str, Any]:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from attnlab.timing import StepClock

    class Naive(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = SeedAttention(spec["d_model"])

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            self.log("train_loss", loss, on_step=True, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(*tensors(spec, "cpu")), batch_size=spec["batch"], shuffle=True)
    clock = StepClock(synchronize=spec["device"].startswith("cuda"))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="gpu" if spec["device"].startswith("cuda") else "cpu",
            devices=1,
            max_steps=spec["steps"],
            precision="bf16-mixed" if spec["bf16"] else "32-true",
            callbacks=[clock],
            default_root_dir=tmp,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        baseline = rss_mb()
        trainer.fit(Naive(), loader)
    return {"ends": clock.ends, "baseline_mb": baseline}


def run_attnlab(spec: dict[str, Any]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from attnlab.config import register_configs
    from attnlab.timing import StepClock
    from attnlab.train import train

    register_configs()
    cuda, batch, seq_len = spec["device"].startswith("cuda"), spec["batch"], spec["seq_len"]
    epochs = math.ceil(spec["steps"] / spec["steps_per_epoch"])
    overrides = (
        f"data=halfswap model.pos_enc=sinusoidal model.d_model={spec['d_model']} model.max_len={seq_len} "
        f"data.seq_len={seq_len} data.batch_size={batch} data.n_train={batch * spec['steps_per_epoch']} "
        f"data.n_val={batch} data.n_test={batch} trainer.max_epochs={epochs} trainer.enable_progress_bar=false "
        f"trainer.accelerator={'gpu' if cuda else 'cpu'} "
        f"trainer.precision={'bf16-mixed' if spec['bf16'] else '32-true'}"
    ).split()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [f"output_dir={tmp}", *overrides])
        clock = StepClock(synchronize=cuda)
        baseline = rss_mb()
        train(cfg, extra_callbacks=[clock])
    return {"ends": clock.ends, "baseline_mb": baseline}


CONTESTANTS = {"seed loop": run_seed_loop, "naive Lightning": run_naive_lightning, "attnlab": run_attnlab}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    with torch.no_grad():
        correct = sum((model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum() for i in range(0, len(x), batch))
    return float(correct) / len(x)


def replay(folder: str | Path, device: str = "cpu") -> dict[str, Any]:
    """The trainings of a finished run or sweep folder, written by hand in this process: for each run,
    its data (the same splits), attnlab's model with the run's settings (fused kernel), Adam, whole-tensor
    batches, a validation every epoch keeping the best weights, and a test of them, for as many epochs
    as the run trained. No logging, checkpoints or diagnostics: the reference a framework's cost is
    measured against. Returns {"runs": n, "seconds": time spent in here}."""
    from attnlab.model import AttentionClassifier

    began = time.perf_counter()
    runs = sorted(p.parent for p in Path(folder).glob("**/metrics.json") if (p.parent / ".hydra").is_dir())
    for run in runs:
        epochs = json.loads((run / "metrics.json").read_text())["epochs"]
        c = run_config(run)  # resolved: model.dim is ${data.dim} in the file
        seed, data, batch = c["seed"], c["data"], c["data"]["batch_size"]
        torch.manual_seed(seed)
        split = {}
        for s in ("train", "val", "test"):
            x, y = make_split(
                data["task"], data[f"n_{s}"], data["seq_len"], data["dim"], split_seed(s, seed, data["seed"])
            )
            split[s] = (x.to(device), y.to(device))
        model = AttentionClassifier(**c["model"]).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=c["optim"]["lr"], weight_decay=c["optim"]["weight_decay"])
        best, best_state = -1.0, None
        for _ in range(epochs):
            model.train()
            for _ in epoch_steps(model, opt, *split["train"], batch):
                pass
            model.eval()
            if (acc := accuracy(model, *split["val"], batch)) > best:
                best, best_state = acc, copy.deepcopy(model.state_dict())
        if best_state is not None:
            model.load_state_dict(best_state)
        accuracy(model, *split["test"], batch)
    return {"runs": len(runs), "seconds": time.perf_counter() - began}
