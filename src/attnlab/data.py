"""Synthetic data as whole tensors, served as whole batches: the model is tiny, so a per-sample Dataset +
collate would dominate the step time. Each split is generated once as (x, y) tensors (seeds:
`attnlab.tasks.split_seed`); an epoch is one permutation, and each batch one indexing operation."""

from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from attnlab.tasks import derive_seed, make_split, split_seed


class TensorBatches:
    """An iterable of (x, y) batches sliced from whole tensors; reshuffled every epoch.

    The shuffle of epoch e (the trainer's `current_epoch` as the pass starts) is a pure function of (seed, e),
    so a resumed run sees the same batches as one that never stopped; under DDP each rank takes every
    world_size-th sample of it. Lightning keeps `state_dict()` in checkpoints, so a run stopped after k batches
    of an epoch (`interrupted.ckpt`, or a budget's cut) continues that epoch with batch k + 1. Batches are counted
    as they reach a training step (`SyntheticDataModule.on_after_batch_transfer`), not as they are fetched:
    Lightning fetches one ahead."""

    def __init__(
        self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, seed: int = 0, trainer: Any = None
    ) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.trainer = trainer  # a pl.Trainer: its current_epoch picks each pass's permutation (0 without one)
        self.done = 0  # batches of the current pass that reached a training step
        self.epoch = 0  # the current pass's
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches done): a checkpoint's, for its epoch's pass
        self.rank, self.world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        self.n = len(x) // self.world_size  # equal share per rank, so every rank runs the same steps

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.epoch = epoch = self.trainer.current_epoch if self.trainer else 0
        g = torch.Generator().manual_seed(derive_seed(self.seed, "shuffle", epoch))
        order = torch.randperm(len(self.x), generator=g) if self.shuffle else torch.arange(len(self.x))
        order = order.to(self.x.device)[self.rank :: self.world_size][: self.n]
        at, self.resume_at = self.resume_at, None
        self.done = at[1] if at and at[0] == epoch and at[1] < len(self) else 0  # (another epoch: from its start)
        for start in range(self.done * self.batch_size, self.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = (state["epoch"], state["batches_done"])


class SyntheticDataModule(pl.LightningDataModule):
    def __init__(self, *, train_seed: int, **data: Any) -> None:  # data: the fields of attnlab.config.DataConfig
        super().__init__()
        # Kept in checkpoints (datamodule_hyper_parameters): a new run from one says what data it was trained on.
        self.save_hyperparameters(logger=False)
        self.data, self.train_seed = data, train_seed
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    def setup(self, stage: str | None = None) -> None:
        data_cfg = self.data
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        for split in ("train", "val", "test"):
            if split not in self.splits:
                # Generated on the CPU (same numbers on every device), then moved once: no per-step copy.
                seed = split_seed(split, self.train_seed, data_cfg["seed"])
                x, y = make_split(data_cfg["task"], data_cfg[f"n_{split}"], data_cfg["seq_len"], data_cfg["dim"], seed)
                self.splits[split] = (x.to(device), y.to(device))

    def batches(self, split: str, shuffle: bool = False) -> TensorBatches:
        return TensorBatches(*self.splits[split], self.data["batch_size"], shuffle, self.train_seed, self.trainer)

    def train_dataloader(self) -> TensorBatches:
        # `trainer.overfit_batches` means the same few batches every epoch: no reshuffle (Lightning turns
        # shuffling off only for loaders with a sampler, which this one is not).
        self.train_batches = self.batches("train", shuffle=not (self.trainer and self.trainer.overfit_batches))
        return self.train_batches

    def val_dataloader(self) -> TensorBatches:
        return self.batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self.batches("test")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:  # a training batch about to reach its step
            self.train_batches.done += 1
        return batch
