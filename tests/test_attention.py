"""The two attention implementations: the seeds' worked example, and explicit == fused."""

import pytest
import torch

from attnlab.attention import attention, attention_scores, fused_attention
from attnlab.model import SelfAttention
from attnlab.posenc import PositionalEncoding

# The worked example of shared/seeds/002_*.txt: three inputs of dimension 4, weights 4x3, no scaling.
X = torch.tensor([[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]], dtype=torch.float32)
W_KEY = torch.tensor([[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]], dtype=torch.float32)
W_QUERY = torch.tensor([[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]], dtype=torch.float32)
W_VALUE = torch.tensor([[0, 2, 0], [0, 3, 0], [1, 0, 3], [1, 1, 0]], dtype=torch.float32)


def test_seed_worked_example() -> None:
    k, q, v = X @ W_KEY, X @ W_QUERY, X @ W_VALUE
    assert torch.equal(k, torch.tensor([[0.0, 1, 1], [4, 4, 0], [2, 3, 1]]))
    assert torch.equal(q, torch.tensor([[1.0, 0, 2], [2, 2, 2], [2, 1, 3]]))
    assert torch.equal(v, torch.tensor([[1.0, 2, 3], [2, 8, 0], [2, 6, 3]]))
    scores = attention_scores(q, k, scale=1.0)
    assert torch.equal(scores, torch.tensor([[2.0, 4, 4], [4, 16, 12], [4, 12, 10]]))
    out, weights = attention(scores, v)
    expected_weights = torch.tensor(
        [
            [6.3379e-02, 4.6831e-01, 4.6831e-01],
            [6.0337e-06, 9.8201e-01, 1.7986e-02],
            [2.9539e-04, 8.8054e-01, 1.1917e-01],
        ]
    )
    expected_out = torch.tensor([[1.9366, 6.6831, 1.5951], [2.0000, 7.9640, 0.0540], [1.9997, 7.7599, 0.3584]])
    torch.testing.assert_close(weights, expected_weights, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(out, expected_out, atol=1e-4, rtol=0)
    torch.testing.assert_close(fused_attention(q, k, v, scale=1.0), expected_out, atol=1e-4, rtol=0)


def test_seed_example_through_the_layer() -> None:
    """The same numbers through SelfAttention, with the seed's matrices loaded into q/k/v_proj."""
    layer = SelfAttention(d_model=4, num_heads=1, scale="none")
    with torch.no_grad():
        for proj, w in ((layer.q_proj, W_QUERY), (layer.k_proj, W_KEY), (layer.v_proj, W_VALUE)):
            proj.weight.zero_()
            proj.weight[:3] = w.T  # nn.Linear computes x @ W.T; a 4th output column of zeros
            proj.bias.zero_()
        layer.out_proj.weight.copy_(torch.eye(4))
        layer.out_proj.bias.zero_()
    out, maps = layer(X[None], PositionalEncoding(4, 1, 8), need_weights=True)
    torch.testing.assert_close(out[0, 0, :3], torch.tensor([1.9366, 6.6831, 1.5951]), atol=1e-4, rtol=0)
    torch.testing.assert_close(maps.scores[0, 0], torch.tensor([[2.0, 4, 4], [4, 16, 12], [4, 12, 10]]))
    assert maps.weights.shape == (1, 1, 3, 3)


@pytest.mark.parametrize("scale", [1.0, 0.25, torch.tensor(0.7, requires_grad=True)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_explicit_equals_fused(scale: float | torch.Tensor, with_bias: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 5, generator=g) for _ in range(3))  # (B, H, L, Dh)
    bias = torch.randn(2, 7, 7, generator=g) if with_bias else None
    out, weights = attention(attention_scores(q, k, scale, bias), v)
    torch.testing.assert_close(fused_attention(q, k, v, scale, bias), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 7))
    assert (weights >= 0).all()


@pytest.mark.parametrize("scale", ["none", "sqrt", "learned"])
@pytest.mark.parametrize("num_heads", [1, 4])
def test_layer_paths_agree(scale: str, num_heads: int) -> None:
    """The hot path (fused) and the plotting path (explicit) of the layer give the same output and gradients."""
    torch.manual_seed(0)
    layer = SelfAttention(d_model=8, num_heads=num_heads, scale=scale)
    x = torch.randn(4, 6, 8)
    pos = PositionalEncoding(8, num_heads, 16)
    fused, none = layer(x, pos)
    explicit, maps = layer(x, pos, need_weights=True)
    assert none is None and maps.weights.shape == (4, num_heads, 6, 6)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    grads = [torch.autograd.grad(out.sum(), list(layer.parameters())) for out in (fused, explicit)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_scales() -> None:
    from attnlab.scaling import SCALES

    assert SCALES.build("none", 16)() == 1.0
    assert SCALES.build("sqrt", 16)() == 0.25
    learned = SCALES.build("learned", 16)
    torch.testing.assert_close(learned(), torch.tensor(0.25))
    assert learned.log_scale.requires_grad


def test_a_fixed_bias_takes_the_flash_kernel() -> None:
    """alibi's (H, L, L) bias reaches the fused flash kernel (a 3-D mask would send it to the math path)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    bias = torch.randn(3, 16, 16)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises "No available kernel" if it cannot be used
        out = fused_attention(q, k, v, 0.5, bias)
    torch.testing.assert_close(out, attention(attention_scores(q, k, 0.5, bias), v)[0], atol=1e-5, rtol=1e-5)
