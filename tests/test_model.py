"""The classifier: shapes, and the permutation symmetry that the whole project is about."""

import pytest
import torch

from attnlab.errors import ConfigError
from attnlab.model import AttentionClassifier
from attnlab.pooling import POOLINGS
from attnlab.posenc import POS_ENCODINGS

POSITIONAL = [name for name in POS_ENCODINGS.names() if name != "none"]


def make(**kw) -> AttentionClassifier:
    torch.manual_seed(0)
    return AttentionClassifier(**{"dim": 2, "d_model": 16, "num_heads": 2, "num_layers": 2, **kw}).eval()


@pytest.mark.parametrize("pos_enc", POS_ENCODINGS.names())
@pytest.mark.parametrize("pool", POOLINGS.names())
def test_shapes_and_paths_agree(pos_enc: str, pool: str) -> None:
    model = make(pos_enc=pos_enc, pool=pool)
    x = torch.rand(5, 12, 2)
    logits = model(x)
    assert logits.shape == (5, 2)
    logits_explicit, maps = model.forward_with_weights(x)
    torch.testing.assert_close(logits, logits_explicit, atol=1e-5, rtol=1e-5)
    length = 12 + (pool == "cls")
    assert len(maps) == 2 and maps[0].weights.shape == maps[0].scores.shape == (5, 2, length, length)
    torch.testing.assert_close(maps[1].scores.softmax(-1), maps[1].weights)


@pytest.mark.parametrize("pool", POOLINGS.names())
@pytest.mark.parametrize("scale", ["none", "sqrt", "learned"])
def test_permutation_invariant_without_positions(pool: str, scale: str) -> None:
    model = make(pool=pool, scale=scale)
    x = torch.rand(4, 10, 2)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(x[:, perm]), model(x), atol=1e-5, rtol=1e-5)


def changes(model: AttentionClassifier, x: torch.Tensor, permuted: torch.Tensor) -> bool:
    # well above the ~1e-7 float noise that the invariance test tolerates (learned starts small)
    return bool((model(permuted) - model(x)).abs().max() > 1e-5)


@pytest.mark.parametrize("pos_enc", POSITIONAL)
@pytest.mark.parametrize("pool", POOLINGS.names())
def test_positional_encoding_breaks_the_symmetry(pos_enc: str, pool: str) -> None:
    model = make(pos_enc=pos_enc, pool=pool)
    x = torch.rand(4, 10, 2)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    assert changes(model, x, x[:, perm])


@pytest.mark.parametrize("pos_enc", POSITIONAL)
def test_reversal(pos_enc: str) -> None:
    """Only ALiBi's symmetric |i - j| bias is blind to reversal: halfswap's class B is class A reversed."""
    model = make(pos_enc=pos_enc)
    x = torch.rand(4, 10, 2)
    assert changes(model, x, x.flip(1)) == (pos_enc != "alibi")


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.d_model=10 .*divisible by model.num_heads=4"):
        AttentionClassifier(d_model=10, num_heads=4)
    with pytest.raises(ConfigError, match=r"model.pos_enc='rotory' .*expected one of \['none'"):
        AttentionClassifier(pos_enc="rotory")


def test_rope_needs_an_even_head_dim() -> None:
    with pytest.raises(ConfigError, match=r"model.d_model=12 .*num_heads=4 must be even"):
        AttentionClassifier(d_model=12, num_heads=4, pos_enc="rope")


def test_learned_encoding_refuses_longer_sequences() -> None:
    model = make(pos_enc="learned", max_len=8)
    with pytest.raises(ConfigError, match=r"data.seq_len=9 .*max_len=8"):
        model(torch.rand(1, 9, 2))
