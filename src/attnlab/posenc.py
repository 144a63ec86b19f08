"""Positional encodings, `model.pos_enc`.

Self-attention followed by max/mean pooling is permutation invariant: it sees a set,
not a sequence. A positional encoding is what breaks that symmetry. Every encoding
is one class with the same three hooks; each overrides the hook it needs:

- `embed(x)`: added to the token embeddings before the first layer (sinusoidal, learned);
- `rotate(q, k)`: applied to queries and keys inside every layer (rotary);
- `bias(L)`: an additive (H, L, L) term on the attention scores (distance biases).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.registry import Registry

POS_ENCODINGS: Registry[type[nn.Module]] = Registry("model.pos_enc")


class PositionalEncoding(nn.Module):
    """No position information: every hook is the identity."""

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__()
        self.d_model, self.num_heads, self.max_len = d_model, num_heads, max_len

    @staticmethod
    def check(seq_len: int, d_model: int, num_heads: int, max_len: int) -> None:
        """Raise ConfigError if this encoding cannot serve these settings (called before training)."""

    def embed(self, x: Tensor) -> Tensor:  # (B, L, D) -> (B, L, D)
        return x

    def rotate(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:  # (B, H, L, Dh) each
        return q, k

    def bias(self, length: int, like: Tensor) -> Tensor | None:  # -> (H, L, L) or None
        return None

    def table(self, length: int) -> Tensor | None:
        """A (L, D) picture of the encoding, for plots; None where there is nothing to draw."""
        return None


POS_ENCODINGS.register("none")(PositionalEncoding)


def sinusoid_table(length: int, dim: int) -> Tensor:
    """(L, D) table of Vaswani et al.: PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(...)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


@POS_ENCODINGS.register("sinusoidal")
class SinusoidalEncoding(PositionalEncoding):
    """Fixed sin/cos table added to the embeddings; defined for any length."""

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__(d_model, num_heads, max_len)
        # Cached for max_len, recomputed only for a longer sequence; not saved in checkpoints.
        self.register_buffer("pe", sinusoid_table(max_len, d_model), persistent=False)

    def table(self, length: int) -> Tensor:
        if length > self.pe.shape[0]:
            self.pe = sinusoid_table(length, self.d_model).to(self.pe.device)
        return self.pe[:length]

    def embed(self, x: Tensor) -> Tensor:
        return x + self.table(x.shape[1]).to(x.dtype)  # (B, L, D) + (L, D)


@POS_ENCODINGS.register("learned")
class LearnedEncoding(PositionalEncoding):
    """One trained vector per position, up to `max_len` positions (and no further)."""

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__(d_model, num_heads, max_len)
        self.pe = nn.Parameter(0.02 * torch.randn(max_len, d_model))

    @staticmethod
    def check(seq_len: int, d_model: int, num_heads: int, max_len: int) -> None:
        if seq_len > max_len:
            raise ConfigError("data.seq_len", seq_len, f"pos_enc=learned has model.max_len={max_len} positions")

    def table(self, length: int) -> Tensor:
        self.check(length, self.d_model, self.num_heads, self.max_len)
        return self.pe[:length]

    def embed(self, x: Tensor) -> Tensor:
        return x + self.table(x.shape[1])


@POS_ENCODINGS.register("rope")
class RotaryEncoding(PositionalEncoding):
    """Rotary embedding (Su et al.): rotate each (q, k) pair of channels by an angle proportional to
    the position, so q_i . k_j depends on the signed offset i - j. Defined for any length."""

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__(d_model, num_heads, max_len)
        self.check(0, d_model, num_heads, max_len)
        self.d_head = d_model // num_heads
        inv_freq = 10000.0 ** (-torch.arange(0, self.d_head, 2, dtype=torch.float32) / self.d_head)  # (Dh/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @staticmethod
    def check(seq_len: int, d_model: int, num_heads: int, max_len: int) -> None:
        if (d_model // num_heads) % 2:
            raise ConfigError(
                "model.d_model", d_model, f"rope rotates channel pairs: d_model / num_heads={num_heads} must be even"
            )

    def angles(self, length: int) -> Tensor:  # (L, Dh/2)
        return torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)[:, None] * self.inv_freq

    def rotate(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        angles = self.angles(q.shape[-2])
        cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)

        def rot(t: Tensor) -> Tensor:  # (B, H, L, Dh): pairs (t1, t2) = (first half, second half)
            t1, t2 = t.chunk(2, dim=-1)
            return torch.cat((t1 * cos - t2 * sin, t1 * sin + t2 * cos), dim=-1)

        return rot(q), rot(k)

    def table(self, length: int) -> Tensor:
        return torch.cat((self.angles(length).cos(), self.angles(length).sin()), dim=-1)  # (L, Dh)


@POS_ENCODINGS.register("alibi")
class ALiBiEncoding(PositionalEncoding):
    """Symmetric ALiBi (Press et al., without the causal mask): bias -m_h * |i - j| on the scores.

    A negative control: the bias depends only on |i - j|, so it cannot tell a sequence from its
    reverse, and halfswap's class B is class A reversed. The model stays at chance there.
    """

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__(d_model, num_heads, max_len)
        # The geometric slopes of the paper: 2^(-8 h / H), h = 1..H.
        slopes = 2.0 ** (-8.0 * torch.arange(1, num_heads + 1, dtype=torch.float32) / num_heads)
        self.register_buffer("slopes", slopes, persistent=False)

    def bias(self, length: int, like: Tensor) -> Tensor:
        pos = torch.arange(length, device=like.device)
        distance = (pos[None, :] - pos[:, None]).abs().to(like.dtype)  # (L, L)
        return -self.slopes.to(like.dtype)[:, None, None] * distance  # (H, L, L)

    def table(self, length: int) -> Tensor:
        return self.bias(length, self.slopes)[0]  # (L, L) bias of the first head
