"""Positional encodings, `model.pos_enc`.

Self-attention followed by max/mean pooling is permutation invariant: it sees a set, not a sequence. A
positional encoding breaks that symmetry. Each is one class that overrides the hook of `PositionalEncoding`
it needs: `embed` (the token embeddings), `rotate` (queries and keys) or `bias` (the scores). The hooks see
only the observations, at positions 0..L-1: a leading token that is not one (the `cls` pooling token)
carries no position, and the layer (`model.SelfAttention`) keeps the encoding off its scores.

| name | hook | what the scores can see |
|---|---|---|
| none | - | nothing: a set |
| sinusoidal, learned | embed | absolute positions |
| rope | rotate | the signed offset i - j |
| relative | bias | the signed offset i - j (one learned value per head and offset, as T5's) |
| symmetric | bias | the distance abs(i - j) only (one learned value per head and distance): a control |
| alibi | bias | the distance abs(i - j), fixed slope m_h = 2^(-8h/H) (m = 1/256 with one head): a control |

The two distance-only encodings cannot tell a sequence from its reverse, and halfswap's class B is class A
reversed: they stay at chance there (`tests/test_science.py`).
"""

import itertools
import math

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.registry import Registry

POS_ENCODINGS: Registry[type[nn.Module]] = Registry("model.pos_enc")


@POS_ENCODINGS.register("none")
class PositionalEncoding(nn.Module):
    """No position information: every hook is the identity."""

    rotary = False  # whether `rotate` does anything (the fused kernel cannot serve it beside a cls token)
    per_position = False  # one trained parameter per position or offset, up to max_len (and no further)
    per_position_text = "model.max_len={} positions"  # what it has, in the refusal of a longer seq_len
    table_columns = "channel"  # what a column of `table` is (a figure's x axis)

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__()
        self.d_model, self.num_heads, self.max_len = d_model, num_heads, max_len

    @classmethod
    def check(cls, seq_len: int, d_model: int, num_heads: int, max_len: int) -> None:
        """Raise ConfigError if this encoding cannot serve these settings (called before training)."""
        if cls.per_position and seq_len > max_len:
            name = POS_ENCODINGS.name_of(cls)
            raise ConfigError("data.seq_len", seq_len, f"pos_enc={name} has {cls.per_position_text.format(max_len)}")

    def embed(self, x: Tensor) -> Tensor:  # token embeddings before the first layer: (B, L, D) -> (B, L, D)
        return x

    def rotate(self, t: Tensor) -> Tensor:  # queries and keys in every layer: (B, H, L, Dh) -> (B, H, L, Dh)
        return t

    def bias(self, length: int, like: Tensor) -> Tensor | None:  # added to every layer's scores: (H, L, L)
        return None

    def table(self, length: int) -> Tensor | None:  # an (L, ·) picture of the encoding for plots, if any
        return None


def sinusoid_table(length: int, dim: int) -> Tensor:
    """(L, D) table of Vaswani et al.: PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(...)."""
    angles = torch.arange(length)[:, None] * torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)[:, :dim]  # sin, cos interleaved


@POS_ENCODINGS.register("sinusoidal")
class SinusoidalEncoding(PositionalEncoding):
    """Fixed sin/cos table added to the embeddings; defined for any length, precomputed up to max_len."""

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__(d_model, num_heads, max_len)
        self.register_buffer("pe", sinusoid_table(max_len, d_model), persistent=False)

    def table(self, length: int) -> Tensor:
        return self.pe[:length] if length <= len(self.pe) else sinusoid_table(length, self.d_model).to(self.pe.device)

    def embed(self, x: Tensor) -> Tensor:
        return x + self.table(x.shape[1]).to(x.dtype)  # (B, L, D) + (L, D)


@POS_ENCODINGS.register("learned")
class LearnedEncoding(PositionalEncoding):
    """One trained vector per position."""

    per_position = True

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__(d_model, num_heads, max_len)
        self.pe = nn.Parameter(0.02 * torch.randn(max_len, d_model))

    def table(self, length: int) -> Tensor:
        return self.pe[:length]

    def embed(self, x: Tensor) -> Tensor:
        return x + self.table(x.shape[1])


@POS_ENCODINGS.register("rope")
class RotaryEncoding(PositionalEncoding):
    """Rotary embedding (Su et al.): rotate each pair of channels (c, c + Dh/2) of a query or key at position
    p by the angle p * theta_c, so that q_i . k_j depends on the signed offset i - j. Defined for any length."""

    rotary = True

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__(d_model, num_heads, max_len)
        d_head = d_model // num_heads  # even: `check`, when the config is validated
        inv_freq = 10000.0 ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)  # theta_c: (Dh/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @classmethod
    def check(cls, seq_len: int, d_model: int, num_heads: int, max_len: int) -> None:
        if (d_head := d_model // num_heads) % 2:
            raise ConfigError("model.d_model", d_model, f"rope rotates channel pairs: {d_head} per head is odd")

    def angles(self, length: int) -> Tensor:  # (L, Dh/2)
        return torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)[:, None] * self.inv_freq

    def rotate(self, t: Tensor) -> Tensor:
        angles = self.angles(t.shape[-2])
        cos, sin = angles.cos().to(t.dtype), angles.sin().to(t.dtype)
        t1, t2 = t.chunk(2, dim=-1)  # (B, H, L, Dh/2) each: the pairs' two coordinates
        return torch.cat((t1 * cos - t2 * sin, t1 * sin + t2 * cos), dim=-1)

    def table(self, length: int) -> Tensor:
        return torch.cat((self.angles(length).cos(), self.angles(length).sin()), dim=-1)  # (L, Dh)


class OffsetBias(PositionalEncoding):
    """Base of the encodings that add a bias b_h(i - j) to the scores; subclasses give `offset_bias`."""

    table_columns = "key position j (bias of i - j, head 0)"

    def offset_bias(self, offset: Tensor) -> Tensor:  # (L, L) of i - j -> (H, L, L)
        raise NotImplementedError

    def bias(self, length: int, like: Tensor) -> Tensor:
        pos = torch.arange(length, device=like.device)
        return self.offset_bias(pos[:, None] - pos[None, :]).to(like.dtype)

    def table(self, length: int) -> Tensor:
        like = next(itertools.chain(self.parameters(), self.buffers()))
        return self.bias(length, like)[0].detach()  # (L, L), first head


@POS_ENCODINGS.register("relative")
class RelativeBias(OffsetBias):
    """One trained scalar bias per head and signed offset i - j (T5's, without its buckets): tells before from
    after. Starts at N(0, 1) per offset (T5 starts near zero), so it shapes attention from the first step: from
    zero, a distance-only bias (`symmetric`) could not help tell halfswap's classes apart (a sequence from its
    reverse), would stay near zero, and that control would hardly touch attention."""

    signed = True  # False: one bias per distance |i - j|
    per_position = True
    per_position_text = "offsets for model.max_len={}"

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__(d_model, num_heads, max_len)
        self.values = nn.Parameter(torch.randn(num_heads, 2 * max_len - 1 if self.signed else max_len))

    def offset_bias(self, offset: Tensor) -> Tensor:
        return self.values[:, offset + self.max_len - 1 if self.signed else offset.abs()]  # (H, L, L)


@POS_ENCODINGS.register("symmetric")
class SymmetricBias(RelativeBias):
    """Learned bias per distance |i - j|: as free as `relative`, but blind to direction. A control:
    it can reshape attention (near vs far) yet cannot tell a sequence from its reverse."""

    signed = False


def alibi_slopes(num_heads: int) -> list[float]:
    """The slopes of the ALiBi paper's reference code (`get_slopes`): 2^(-8h/H), h = 1..H, for a power of
    two; otherwise those of the largest power of two below H, then every other slope of twice that."""
    if num_heads & (num_heads - 1) == 0:
        return [2.0 ** (-8.0 * h / num_heads) for h in range(1, num_heads + 1)]
    below = 1 << (num_heads.bit_length() - 1)
    return alibi_slopes(below) + alibi_slopes(2 * below)[0::2][: num_heads - below]


@POS_ENCODINGS.register("alibi")
class ALiBiEncoding(OffsetBias):
    """Symmetric ALiBi (Press et al., without the causal mask): bias -m_h * |i - j| on the scores, with the
    paper's fixed slopes (one head: m = 2^-8, at most 0.12 at L = 32, a light touch). A negative control."""

    def __init__(self, d_model: int, num_heads: int, max_len: int) -> None:
        super().__init__(d_model, num_heads, max_len)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(num_heads)), persistent=False)

    def offset_bias(self, offset: Tensor) -> Tensor:
        return -self.slopes[:, None, None] * offset.abs()
