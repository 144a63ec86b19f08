"""Attention score scaling, `model.scale`: the factor that multiplies QK^T before the softmax."""

import math

import torch
from torch import Tensor, nn

from attnlab.registry import Registry

SCALES: Registry[type[nn.Module]] = Registry("model.scale")


@SCALES.register("none")
class NoScale(nn.Module):
    """Raw dot products, as in the seeds' worked example."""

    def __init__(self, d_head: int) -> None:
        super().__init__()
        self.value = 1.0

    def forward(self) -> float:
        return self.value


@SCALES.register("sqrt")
class SqrtScale(NoScale):
    """1/sqrt(d_head) (Vaswani et al.): keeps score variance ~1 at init whatever d_head is."""

    def __init__(self, d_head: int) -> None:
        super().__init__(d_head)
        self.value = 1.0 / math.sqrt(d_head)


@SCALES.register("learned")
class LearnedScale(nn.Module):
    """A learned inverse temperature, exp(log_scale) > 0, initialised at 1/sqrt(d_head)."""

    def __init__(self, d_head: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(d_head)))

    def forward(self) -> Tensor:
        return self.log_scale.exp()
