"""Sequence pooling, `model.pool`: (B, L, D) -> (B, D), the sequence vector fed to the head. A pooling may
also `prepare` the sequence before the attention layers (cls prepends its token)."""

import torch
from torch import Tensor, nn

from attnlab.registry import Registry

POOLINGS: Registry[type[nn.Module]] = Registry("model.pool")


class Pooling(nn.Module):
    prefix = 0  # tokens `prepare` puts before the observations; they carry no position

    def __init__(self, d_model: int) -> None:
        super().__init__()

    def prepare(self, x: Tensor) -> Tensor:  # (B, L, D) -> (B, L', D)
        return x


@POOLINGS.register("max")
class MaxPool(Pooling):
    """The seeds' choice: a feature fires if it fires anywhere. Permutation invariant."""

    def forward(self, h: Tensor) -> Tensor:
        return h.amax(dim=1)


@POOLINGS.register("mean")
class MeanPool(Pooling):
    """Average over positions. Also permutation invariant."""

    def forward(self, h: Tensor) -> Tensor:
        return h.mean(dim=1)


@POOLINGS.register("cls")
class ClsPool(Pooling):
    """A learned token prepended to every sequence; its output is the sequence vector (BERT's [CLS])."""

    prefix = 1

    def __init__(self, d_model: int) -> None:
        super().__init__(d_model)
        self.token = nn.Parameter(0.02 * torch.randn(1, 1, d_model))

    def prepare(self, x: Tensor) -> Tensor:
        return torch.cat((self.token.expand(len(x), -1, -1), x), dim=1)  # (B, 1 + L, D)

    def forward(self, h: Tensor) -> Tensor:
        return h[:, 0]
