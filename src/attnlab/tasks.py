"""The synthetic classification tasks, `data.task`: each turns balanced labels y (N,), class A = 0 and
class B = 1, into sequences x (N, L, n)."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from attnlab.errors import ConfigError
from attnlab.registry import Registry

TASKS: Registry[type[Task]] = Registry("data.task")


class Task:
    def check(self, seq_len: int) -> None:
        """Raise ConfigError if the task is ill-posed at this length (called before training)."""

    def sample(self, y: Tensor, seq_len: int, dim: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


@TASKS.register("uniform")
class Uniform(Task):
    """Class A: every observation ~ U(0, 1). Class B: ~ U(1, 2). Solvable without positions."""

    def sample(self, y: Tensor, seq_len: int, dim: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(len(y), seq_len, dim, generator=generator)  # (N, L, n) in [0, 1)
        return u + y.view(-1, 1, 1).float()


@TASKS.register("halfswap")
class HalfSwap(Task):
    """Class A: first half ~ U(0, 1), second half ~ U(1, 2). Class B: the reverse.

    Both classes hold the same multiset of value ranges, so a permutation-invariant model is at chance; only
    position information separates them."""

    def check(self, seq_len: int) -> None:
        if seq_len % 2:
            # With an odd length the classes differ in how many values are high, and a
            # permutation-invariant model beats chance (measured ~0.68): the experiment breaks.
            raise ConfigError("data.seq_len", seq_len, "halfswap needs an even length (two equal halves)")

    def sample(self, y: Tensor, seq_len: int, dim: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(len(y), seq_len, dim, generator=generator)
        first_half = torch.arange(seq_len) < seq_len // 2  # (L,)
        # offset 1 ("high") where: class A and second half, or class B and first half
        high = first_half[None, :] == y[:, None].bool()  # (N, L)
        return u + high.unsqueeze(-1).float()


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts, e.g. (seed, "train"): independent streams per split."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def split_seed(split: str, run_seed: int, data_seed: int) -> int:
    """The seed of a split's data: the training set follows the run's `seed`, validation and test follow
    `data.seed` only, so runs with different model seeds are scored on exactly the same sequences."""
    return derive_seed(run_seed if split == "train" else data_seed, split)


def make_split(task: str, n: int, seq_len: int, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    """n sequences (n, seq_len, dim) and labels (n,), classes balanced to within one."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2)[torch.randperm(n, generator=g)]
    return TASKS.build(task).sample(y, seq_len, dim, g), y
