"""The self-attention sequence classifier of the seeds, from scratch: x (B, L, n) -> input projection ->
[positional encoding] -> num_layers x multi-head self-attention -> pooling over the sequence -> linear head
-> logits (B, 2). Deliberately nothing else (no feed-forward block, residual or normalisation): the point
of the project is what attention + pooling alone can and cannot learn."""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention import attention, attention_scores, fused_attention
from attnlab.pooling import POOLINGS
from attnlab.posenc import POS_ENCODINGS, PositionalEncoding
from attnlab.scaling import SCALES


class AttentionMap(NamedTuple):
    """What one layer attended to, from the explicit path: both (B, H, L, L)."""

    scores: Tensor  # before the softmax (scaled, biased)
    weights: Tensor  # after: each row sums to 1


class SelfAttention(nn.Module):
    """Multi-head self-attention: per head softmax(scale * Q K^T + bias) V, heads concatenated, then out_proj."""

    def __init__(self, d_model: int, num_heads: int, scale: str) -> None:
        super().__init__()
        self.num_heads, self.d_head = num_heads, d_model // num_heads  # divisible: config.validate
        # One matrix each for all positions and all heads: Q = X W_q, K = X W_k, V = X W_v; then the output's.
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model) for _ in range(4))
        self.scale = SCALES.build(scale, self.d_head)

    def forward(
        self, x: Tensor, pos: PositionalEncoding, prefix: int = 0, need_weights: bool = False
    ) -> tuple[Tensor, AttentionMap | None]:
        """x: (B, L, D), whose first `prefix` tokens (a cls token) carry no position: the encoding acts on the
        observations' scores with each other only."""
        B, L, D = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, L, D) each
        q, k, v = (t.view(B, L, self.num_heads, self.d_head).transpose(1, 2) for t in (q, k, v))  # (B, H, L, Dh)
        bias = pos.bias(L - prefix, x)  # over the observations: (H, L - prefix, L - prefix) or None
        if need_weights or (prefix and pos.rotary):
            # Explicit: materialises the (B, H, L, L) scores. Rope beside a cls token always takes this path:
            # the token meets every key unrotated, the observations meet each other rotated, and no single
            # pair (Q, K) for the fused kernel gives both.
            scores = attention_scores(pos.rotate(q[:, :, prefix:]), pos.rotate(k[:, :, prefix:]), self.scale(), bias)
            if prefix:  # a prefix token's row and column: as without positions
                observations, scores = scores, attention_scores(q, k, self.scale())
                scores[:, :, prefix:, prefix:] = observations
            y, weights = attention(scores, v)
            maps = AttentionMap(scores, weights)
        else:  # hot path: fused kernel, same numbers (a prefix comes here only where rotate does nothing)
            if bias is not None and prefix:  # (H, L, L): zero on a prefix token's row and column
                bias = F.pad(bias, (prefix, 0, prefix, 0))
            y, maps = fused_attention(pos.rotate(q), pos.rotate(k), v, self.scale(), bias), None
        y = y.transpose(1, 2).reshape(B, L, D)  # concatenate heads: (B, L, H * Dh)
        return self.out_proj(y), maps


class AttentionClassifier(nn.Module):
    def __init__(
        self, dim: int, d_model: int, num_heads: int, num_layers: int, scale: str, pos_enc: str, pool: str, max_len: int
    ) -> None:
        """The fields of attnlab.config.ModelConfig (their defaults are there, and only there)."""
        super().__init__()
        self.in_proj = nn.Linear(dim, d_model)  # observations of dimension n -> d_model
        self.layers = nn.ModuleList(SelfAttention(d_model, num_heads, scale) for _ in range(num_layers))
        self.head = nn.Linear(d_model, 2)  # logits of class A and class B
        # The variants' own parameters (a learned table, offset biases, a cls token) each draw from a stream
        # of their own, seeded from the run's: for one seed, every encoding and pooling starts from the same
        # projections and head, so a difference between them is the variant's, not the draw's.
        variant_seed = int(torch.randint(0, 2**62, ()))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(variant_seed)
            self.pos_enc = POS_ENCODINGS.build(pos_enc, d_model, num_heads, max_len)
            torch.manual_seed(variant_seed + 1)
            self.pool = POOLINGS.build(pool, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, n) -> logits (B, 2), through the fused attention kernel (rope beside a cls token: explicit)."""
        return self.forward_with_weights(x, need_weights=False)[0]

    def forward_with_weights(self, x: Tensor, need_weights: bool = True) -> tuple[Tensor, list[AttentionMap]]:
        """Logits and each layer's AttentionMap, through explicit attention; with need_weights=False the fused
        kernel and maps of None (except rope beside a cls token, which is always explicit)."""
        # Positions are those of the observations: a pooling token (cls) is added after, without one.
        h = self.pool.prepare(self.pos_enc.embed(self.in_proj(x)))  # (B, L', D)
        maps = []
        for layer in self.layers:
            h, layer_map = layer(h, self.pos_enc, self.pool.prefix, need_weights)
            maps.append(layer_map)
        return self.head(self.pool(h)), maps  # (B, D) -> (B, 2)
