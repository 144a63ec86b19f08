"""On a CUDA device (`make gpu-check`; skipped, saying so, where there is none): every positional
encoding trains in fp32 and bf16 mixed precision, and the fused kernel agrees with the explicit
attention there, outputs and gradients, for every encoding and pooling."""

from __future__ import annotations

import math

import pytest
import torch

from attnlab.model import AttentionClassifier
from attnlab.pooling import POOLINGS
from attnlab.posenc import POS_ENCODINGS

from .conftest import TINY, model_args

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (make gpu-check on one)"),
]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("pos_enc", POS_ENCODINGS.names())
def test_every_encoding_trains_on_the_gpu(compose_cfg, pos_enc: str, precision: str) -> None:
    from attnlab.train import train

    cfg = compose_cfg(*TINY, "data=halfswap", "trainer=gpu", f"trainer.precision={precision}",
                      f"model.pos_enc={pos_enc}", "trainer.max_epochs=2")  # fmt: skip
    metrics = train(cfg)
    assert math.isfinite(metrics["test/loss"]) and metrics["global_step"] == 2 * 256 // 64
    assert metrics["settings"]["pos_enc"] == pos_enc


@pytest.mark.parametrize("pool", POOLINGS.names())
@pytest.mark.parametrize("pos_enc", POS_ENCODINGS.names())
def test_fused_equals_explicit_on_the_gpu(pos_enc: str, pool: str) -> None:
    torch.manual_seed(0)
    args = model_args(d_model=32, num_heads=4, num_layers=2, pos_enc=pos_enc, pool=pool, max_len=64)
    model = AttentionClassifier(**args).cuda()
    x = torch.rand(16, 64, 1, device="cuda")
    fused = model(x)
    explicit, maps = model.forward_with_weights(x)
    torch.testing.assert_close(fused, explicit, atol=1e-4, rtol=1e-4)
    grads = [torch.autograd.grad(out.sum(), list(model.parameters()), allow_unused=True) for out in (fused, explicit)]
    for g_fused, g_explicit in zip(*grads, strict=True):
        if g_fused is not None:
            torch.testing.assert_close(g_fused, g_explicit, atol=1e-4, rtol=1e-3)
    assert all(m.weights.is_cuda for m in maps)
