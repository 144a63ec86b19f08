"""The classifier: shapes, and the permutation symmetry that the whole project is about."""

import pytest
import torch

from attnlab.errors import ConfigError
from attnlab.model import AttentionClassifier, SelfAttention
from attnlab.pooling import POOLINGS
from attnlab.posenc import POS_ENCODINGS

from .conftest import model_args

POSITIONAL = [name for name in POS_ENCODINGS.names() if name != "none"]


# Encodings whose scores see only |i - j| (or nothing): blind to reversing the sequence.
REVERSAL_BLIND = {"none", "alibi", "symmetric"}


def make(**kw) -> AttentionClassifier:
    """A small model at seed 0 (offset biases start at N(0, 1), learned tables at N(0, 0.02^2): both
    already position-dependent)."""
    torch.manual_seed(0)
    return AttentionClassifier(**model_args(**{"dim": 2, "d_model": 16, "num_heads": 2, "num_layers": 2, **kw})).eval()


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


@pytest.mark.parametrize("pos_enc", POS_ENCODINGS.names())
@pytest.mark.parametrize("pool", POOLINGS.names())
def test_reversal(pos_enc: str, pool: str) -> None:
    """Distance-only encodings are blind to reversal, with every pooling (a cls token must not
    give them a position to anchor on); halfswap's class B is class A reversed."""
    model = make(pos_enc=pos_enc, pool=pool)
    x = torch.rand(4, 10, 2)
    if pos_enc in REVERSAL_BLIND:
        torch.testing.assert_close(model(x.flip(1)), model(x), atol=1e-6, rtol=1e-6)
    else:
        assert changes(model, x, x.flip(1))


@pytest.mark.parametrize("pos_enc", POSITIONAL)
def test_the_cls_token_carries_no_position(pos_enc: str) -> None:
    """rotate and bias leave every score between the cls token and any token as it is without them."""
    model = make(pos_enc=pos_enc, pool="cls", num_layers=1)
    x = torch.rand(3, 10, 2)
    _, (positioned,) = model.forward_with_weights(x)
    model.pos_enc.rotate = lambda t: t  # embed stays: it is the observations' own
    model.pos_enc.bias = lambda length, like: None
    _, (plain,) = model.forward_with_weights(x)
    torch.testing.assert_close(positioned.scores[..., 0, :], plain.scores[..., 0, :], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(positioned.scores[..., :, 0], plain.scores[..., :, 0], atol=1e-6, rtol=1e-6)
    if pos_enc in ("rope", "alibi", "relative", "symmetric"):  # ...while the observations' scores do change
        assert not torch.allclose(positioned.scores[..., 1:, 1:], plain.scores[..., 1:, 1:], atol=1e-4)


@pytest.mark.parametrize("pos_enc", POSITIONAL)
def test_what_the_cls_token_scores_see_of_positions(pos_enc: str) -> None:
    """The README's sentence, exactly: in the first layer, rope, relative, symmetric and alibi leave the
    cls token's scores as they are without positions (the same model with pos_enc=none: the same weights,
    tests below); sinusoidal and learned do not (every token carries its position in its embedding).
    From the second layer on, no encoding does: the tokens the cls token meets have mixed in positions."""
    x = torch.rand(3, 10, 2)
    _, maps = make(pos_enc=pos_enc, pool="cls").forward_with_weights(x)
    _, plain = make(pos_enc="none", pool="cls").forward_with_weights(x)
    first_layer_same = all(
        torch.allclose(a, b, atol=1e-6)
        for a, b in (
            (maps[0].scores[..., 0, :], plain[0].scores[..., 0, :]),
            (maps[0].scores[..., :, 0], plain[0].scores[..., :, 0]),
        )
    )
    assert first_layer_same == (pos_enc in ("rope", "relative", "symmetric", "alibi"))
    assert not torch.allclose(maps[1].scores[..., 0, :], plain[1].scores[..., 0, :], atol=1e-6)


def test_rope_beside_a_cls_token() -> None:
    """One layer, rope, a cls token: the token's scores with every token, both ways, are those without
    positions; the observations' scores with each other are rope's without the token, and depend on the
    offset i - j only (identical observations: every diagonal constant, and not all diagonals alike)."""
    torch.manual_seed(0)
    layer = SelfAttention(d_model=16, num_heads=2, scale="sqrt")
    rope, none = POS_ENCODINGS.build("rope", 16, 2, 32), POS_ENCODINGS.build("none", 16, 2, 32)
    x = torch.randn(3, 11, 16)  # the token, then 10 observations
    out, positioned = layer(x, rope, prefix=1, need_weights=True)
    _, plain = layer(x, none, prefix=1, need_weights=True)
    torch.testing.assert_close(positioned.scores[..., 0, :], plain.scores[..., 0, :], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(positioned.scores[..., :, 0], plain.scores[..., :, 0], atol=1e-6, rtol=1e-6)
    _, alone = layer(x[:, 1:], rope, need_weights=True)
    torch.testing.assert_close(positioned.scores[..., 1:, 1:], alone.scores, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(layer(x, rope, prefix=1)[0], out)  # the layer's default path: same output

    _, same = layer(torch.randn(1, 1, 16).expand(1, 11, 16), rope, prefix=1, need_weights=True)
    observations = same.scores[0, :, 1:, 1:]  # (H, 10, 10)
    firsts = []
    for offset in range(-9, 10):
        diagonal = observations.diagonal(offset, dim1=-2, dim2=-1)  # (H, 10 - |offset|)
        torch.testing.assert_close(diagonal, diagonal[:, :1].expand_as(diagonal), atol=1e-5, rtol=1e-5)
        firsts.append(diagonal[:, 0])
    assert torch.stack(firsts).std(0).min() > 1e-2


@pytest.mark.parametrize("seed", [0, 1])
def test_every_variant_starts_from_the_same_projections_and_head(seed: int) -> None:
    """Paired comparisons: for one seed, the input projection, every attention layer and the head start
    from the same weights whatever the encoding, pooling or max_len (the variants draw from streams of
    their own), so a difference between cells is the variant's, not the draw's."""
    shared = ("in_proj.", "layers.", "head.")
    starts = []
    for pos_enc in POS_ENCODINGS.names():
        for pool in POOLINGS.names():
            for max_len in (16, 512):
                torch.manual_seed(seed)
                model = AttentionClassifier(**model_args(pos_enc=pos_enc, pool=pool, max_len=max_len, num_layers=2))
                starts.append({k: v for k, v in model.state_dict().items() if k.startswith(shared)})
                after = torch.rand(3)  # the global stream after building: the data order, dropout, ...
                starts[-1]["after"] = after
    for start in starts[1:]:
        assert start.keys() == starts[0].keys()
        for key, value in start.items():
            assert torch.equal(value, starts[0][key]), key


def reference_get_slopes(n: int) -> list[float]:
    """ALiBi's reference code (ofirpress/attention_with_linear_biases, models/transformer.py), verbatim."""
    import math

    def get_slopes_power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return (
        get_slopes_power_of_2(closest_power_of_2)
        + reference_get_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2]
    )


@pytest.mark.parametrize("num_heads", [1, 2, 3, 5, 6, 8, 12, 16])
def test_alibi_slopes_are_the_reference(num_heads: int) -> None:
    from attnlab.posenc import alibi_slopes

    assert alibi_slopes(num_heads) == pytest.approx(reference_get_slopes(num_heads), rel=1e-12)
    enc = POS_ENCODINGS.build("alibi", 2 * num_heads, num_heads, 8)
    assert enc.slopes.tolist() == pytest.approx(reference_get_slopes(num_heads), rel=1e-6)
    if num_heads == 6:  # the 4-head slopes, then every other one of the 8-head slopes
        assert alibi_slopes(6) == pytest.approx([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])


def test_an_unknown_encoding_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"model.pos_enc='rotory' .*expected one of \['none'"):
        AttentionClassifier(**model_args(pos_enc="rotory"))


@pytest.mark.parametrize("pos_enc", ["learned", "relative", "symmetric"])
def test_learned_encodings_refuse_longer_sequences(pos_enc: str, compose_cfg) -> None:
    """Checked once, when the config is validated (training length) or evaluate.py is asked for a length."""
    from attnlab.config import check_seq_len, to_plain, validate

    c = to_plain(compose_cfg(f"model.pos_enc={pos_enc}", "model.max_len=8", "data.seq_len=8"))
    validate(c)
    with pytest.raises(ConfigError, match=rf"data.seq_len=9 .*pos_enc={pos_enc} .*max_len=8"):
        check_seq_len(c["data"], c["model"], 9)


def test_offset_biases_index_by_offset() -> None:
    """relative: b[i - j], a different value before and after; symmetric: b[|i - j|]; alibi: -|i - j| / 2^8."""
    for name in ("relative", "symmetric"):
        enc = POS_ENCODINGS.build(name, 4, 1, 6)
        with torch.no_grad():
            enc.values.copy_(torch.arange(enc.values.shape[1], dtype=torch.float32)[None])
        bias = enc.bias(4, enc.values)[0]
        offsets = torch.arange(4)[:, None] - torch.arange(4)[None, :]
        expected = offsets + 5 if name == "relative" else offsets.abs()
        torch.testing.assert_close(bias, expected.float())
    alibi = POS_ENCODINGS.build("alibi", 4, 1, 6).bias(3, torch.zeros(1))[0]
    torch.testing.assert_close(alibi, -torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]]) / 256)


def test_the_optimiser_is_fused_adam_and_steps_as_the_plain_one() -> None:
    """configure_optimizers gives fused Adam on a CPU (one kernel a step; unfused, a loop of small ops per
    parameter): the same updates as PyTorch's plain Adam, to rounding."""
    from attnlab.module import LitClassifier

    torch.manual_seed(0)
    fused = LitClassifier(model_args(d_model=8, num_heads=2, pos_enc="sinusoidal"), lr=3e-3, weight_decay=0.01)
    plain = LitClassifier(**fused.hparams)
    plain.load_state_dict(start := {k: v.clone() for k, v in fused.state_dict().items()})
    optimisers = fused.configure_optimizers(), torch.optim.Adam(plain.parameters(), lr=3e-3, weight_decay=0.01)
    assert optimisers[0].defaults["fused"] is True
    x, y = torch.rand(16, 12, 1), torch.randint(0, 2, (16,))
    for _ in range(3):
        for module, optimiser in zip((fused, plain), optimisers, strict=True):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(module.net(x), y).backward()
            optimiser.step()
    weights = {k: v for k, v in fused.state_dict().items() if k.startswith("net.")}
    assert all(not torch.equal(v, start[k]) for k, v in weights.items() if k.endswith("weight"))  # (all trained)
    for name, value in weights.items():
        torch.testing.assert_close(value, plain.state_dict()[name], atol=1e-6, rtol=1e-5)


def test_text_set_on_the_module_is_set_as_nn_module_would() -> None:
    """LitClassifier sets text and None over a plain attribute without nn.Module's checks (a speed-up: Lightning
    names each hook on the module); a parameter, buffer or submodule's name keeps nn.Module's handling."""
    from attnlab.module import LitClassifier

    module = LitClassifier(model_args(), lr=1e-3, weight_decay=0.0)
    module.note = "a"  # new: through nn.Module
    module.note = None
    module.note = "b"  # over a plain attribute: the fast path
    assert module.note == "b" and "note" in module.__dict__
    with pytest.raises(TypeError, match="cannot assign 'str' as child module 'net'"):
        module.net = "x"
    module.register_buffer("kept", torch.zeros(1))
    module.kept = None  # nn.Module: a buffer set to None stays registered, as None
    assert "kept" in module._buffers and module.kept is None and "kept" not in module.__dict__
    module.weight = torch.nn.Parameter(torch.ones(1))  # a parameter over nothing plain: registered
    assert "weight" in dict(module.named_parameters())
