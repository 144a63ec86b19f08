"""Scaled dot-product attention, twice: the seeds' steps from scratch (`attention_scores`, then `attention`:
row-wise softmax, weighted sum of the values), which give the weights to plots and diagnostics; and PyTorch's
fused kernel (`fused_attention`), which never materialises the (L, L) matrix on the flash / memory-efficient
backends: training uses it."""

import torch.nn.functional as F
from torch import Tensor


def attention_scores(q: Tensor, k: Tensor, scale: float | Tensor = 1.0, bias: Tensor | None = None) -> Tensor:
    """q, k: (..., L, Dh) -> scores (..., L, L), scores[i, j] = scale * q_i . k_j + bias[i, j]."""
    scores = (q @ k.transpose(-2, -1)) * scale
    return scores if bias is None else scores + bias


def attention(scores: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """scores (..., L, L), values v (..., L, Dv) -> (output (..., L, Dv), weights (..., L, L)): row i is how
    query i distributes its attention over the keys j."""
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def fused_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | Tensor = 1.0, bias: Tensor | None = None) -> Tensor:
    """`attention(attention_scores(q, k, scale, bias), v)`'s output through the fused kernel; no weights."""
    if isinstance(scale, Tensor):
        # The fused kernel takes the scale as a Python float; a learned scale is a
        # tensor that must stay in the autograd graph, so fold it into q instead.
        q, scale = q * scale, 1.0
    if bias is not None and bias.dim() == 3:
        # (H, L, L) -> (1, H, L, L): PyTorch's CPU flash kernel takes a bias only in 4-D and otherwise falls
        # back to the math path, 3.6x slower at L = 512 (a bias that needs its gradient, learned, always does).
        bias = bias.unsqueeze(0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=float(scale))
