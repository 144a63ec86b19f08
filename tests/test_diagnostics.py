"""The TensorBoard diagnostics: written, readable back, and meaning what they say."""

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.plugins.hparams import plugin_data_pb2

from attnlab.board import METRICS
from attnlab.diagnostics import (
    attention_figure,
    attention_stats,
    checkpoint_title,
    encoding_figure,
    shuffle_positions,
)
from attnlab.model import AttentionClassifier, AttentionMap
from attnlab.naming import KEY_SETTINGS
from attnlab.train import train

from .conftest import TINY, compose_train, scalar_steps, scalar_values, tensorboard_run


def read_events(run_dir: Path) -> dict:
    """All tags of all event files of a run: {"scalars": {tag: [values]}, "images": {...}, ...}."""
    acc = tensorboard_run(run_dir)
    tags = acc.Tags()
    out: dict = {
        "scalars": {tag: [e.value for e in acc.Scalars(tag)] for tag in tags["scalars"]},
        "images": {tag: acc.Images(tag) for tag in tags["images"]},
        "text": [t for t in tags["tensors"] if t.startswith("config")],
        "hparams": {},
    }
    with contextlib.suppress(KeyError):  # a run without hparams
        out["hparams"] = acc.PluginTagToContent("hparams")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Two short halfswap runs, without and with a positional encoding, and their events."""
    result = {}
    for pos_enc in ("none", "sinusoidal"):
        out = tmp_path_factory.mktemp(pos_enc)
        cfg = compose_train(
            out, *TINY, "diagnostics=true", "data=halfswap", f"model.pos_enc={pos_enc}", "model.num_heads=2",
            "model.num_layers=2", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
        )  # fmt: skip
        result[pos_enc] = (train(cfg), read_events(out))
        result[f"{pos_enc} folder"] = out
    return result


def test_figures_of_the_tested_checkpoint_every_layer_and_head(runs) -> None:
    metrics, events = runs["sinusoidal"]
    expected = {f"attention/layer{la}_head{h}" for la in (0, 1) for h in (0, 1)}
    assert set(events["images"]) == expected | {"pos_enc"}
    for tag, images in events["images"].items():
        assert [i.step for i in images] == [metrics["tested_checkpoint"]["global_step"]], tag  # drawn once
        assert images[0].width >= 600 and images[0].encoded_image_string[:4] == b"\x89PNG"
    _, events_none = runs["none"]
    assert "pos_enc" not in events_none["images"]  # nothing to draw without an encoding


@pytest.mark.parametrize("pool", ["max", "cls"])
def test_the_attention_figure_labels_itself(pool: str) -> None:
    """Axes named, both maps on one colour scale with a bar with ticks, each input strip over the key
    positions it feeds (after a cls token's column), and the title naming the checkpoint."""
    net = AttentionClassifier(
        dim=1, d_model=8, num_heads=1, num_layers=1, pos_enc="sinusoidal", max_len=8, pool=pool, scale="sqrt"
    )
    x = torch.rand(2, 6, 1)
    fig = attention_figure(net, x, 0, 0, checkpoint_title("halfswap", {"epoch": 3, "global_step": 12}))
    strip_a, _, map_a, map_b, colour = fig.axes  # the subplots row by row, then the colour bar
    assert "tested checkpoint: epoch 3, step 12" in fig.get_suptitle()
    assert map_a.get_ylabel() == "query position i" and map_a.get_xlabel().startswith("key position j")
    assert colour.get_ylabel() == "weight" and len(colour.get_yticks()) >= 3
    assert map_a.get_images()[0].get_clim() == map_b.get_images()[0].get_clim() == (0, fig_max(map_a, map_b))
    prefix = 1 if pool == "cls" else 0
    (step,) = strip_a.patches  # one step per input position, centred on its key column
    assert list(step.get_data().edges + 0.5) == list(range(prefix, prefix + 7))
    assert list(step.get_data().values) == x[0, :, 0].tolist()
    assert map_a.get_images()[0].get_array().shape == (6 + prefix, 6 + prefix)
    assert strip_a.get_xlim() == map_a.get_xlim()  # the strip lines up with the key columns


def test_a_nan_in_one_map_leaves_the_other_drawn() -> None:
    """A diverged input (NaN) in one class's sequence: the other map keeps a finite shared scale."""
    net = AttentionClassifier(
        dim=1, d_model=8, num_heads=1, num_layers=1, pos_enc="sinusoidal", max_len=8, pool="max", scale="sqrt"
    )
    x = torch.rand(2, 6, 1)
    x[1, 2, 0] = float("nan")
    _, _, map_a, map_b, _ = attention_figure(net, x, 0, 0, "nan").axes
    low, high = map_a.get_images()[0].get_clim()
    assert low == 0 and math.isfinite(high) and high == fig_max(map_a)
    assert map_b.get_images()[0].get_clim() == (low, high)


def test_an_infinite_input_is_left_out_of_its_strip_as_a_nan_is() -> None:
    """A diverged input (inf, -inf, NaN) leaves a gap in its strip; the strips' range is the finite inputs'."""
    net = AttentionClassifier(
        dim=1, d_model=8, num_heads=1, num_layers=1, pos_enc="sinusoidal", max_len=8, pool="max", scale="sqrt"
    )
    x = torch.full((2, 6, 1), 0.5)
    x[0, 1, 0], x[0, 2, 0], x[1, 3, 0] = math.inf, -math.inf, math.nan
    given = x.clone()
    strip_a, strip_b = attention_figure(net, x, 0, 0, "diverged").axes[:2]
    assert torch.equal(x.isinf(), given.isinf())  # the caller's sequences (the run's fixed examples) untouched
    assert [math.isnan(v) for v in strip_a.patches[0].get_data().values] == [False, True, True, False, False, False]
    assert [math.isnan(v) for v in strip_b.patches[0].get_data().values] == [False, False, False, True, False, False]
    assert strip_a.get_ylim() == (0, 0.5)


@pytest.mark.parametrize("pool", ["max", "cls"])
def test_a_figure_redrawn_with_new_data_is_the_figure_drawn_anew(pool: str) -> None:
    """Figures are laid out once per shape and redrawn (diagnostics.*_layout): nothing of the previous
    model's drawing (its maps, scale, input, prediction, title, table) may be left in the next one's; and the
    PNG logged (diagnostics.png: the unchanging parts rendered once, the rest drawn over them) is, pixel for
    pixel, the figure drawn whole."""
    from attnlab import diagnostics

    def net(seed: int) -> AttentionClassifier:
        torch.manual_seed(seed)
        return AttentionClassifier(
            dim=1, d_model=8, num_heads=1, num_layers=1, pos_enc="learned", max_len=8, pool=pool, scale="sqrt"
        )

    first, second = net(0), net(1)
    x0, x1 = torch.rand(2, 6, 1) * 2, torch.rand(2, 6, 1) * 2  # inputs alike: their strips' axes drawn once
    x0[0, 0, 0] = x1[0, 0, 0] = 1.9
    diagnostics.attention_layout.cache_clear()
    diagnostics.encoding_layout.cache_clear()
    drawn = [attention_figure(first, x0, 0, 0, "first"), encoding_figure(first.pos_enc, 6, "first")]
    first_pngs = [drawn_whole(fig) for fig in drawn]
    assert [pixels(diagnostics.png(fig)) for fig in drawn] == [pixels(p) for p in first_pngs]
    redrawn = [attention_figure(second, x1, 0, 0, "second"), encoding_figure(second.pos_enc, 6, "second")]
    assert [id(fig) for fig in redrawn] == [id(fig) for fig in drawn]  # the same figures, redrawn
    strips = redrawn[0].axes[:2]  # both inputs on one scale: 0 and the inputs, out to the ticks around them
    assert strips[0].get_ylim() == strips[1].get_ylim() == (0, 2)
    pngs = [drawn_whole(fig) for fig in redrawn]
    assert [pixels(diagnostics.png(fig)) for fig in redrawn] == [pixels(p) for p in pngs]
    small = attention_figure(second, x1 / 10, 0, 0, "inputs ten times smaller")  # laid out anew, fitted to them
    assert small is not redrawn[0] and small.axes[0].get_ylim() == pytest.approx((0, 0.2))
    assert pixels(diagnostics.png(small)) == pixels(drawn_whole(small))
    diagnostics.attention_layout.cache_clear()
    diagnostics.encoding_layout.cache_clear()
    anew = [attention_figure(second, x1, 0, 0, "second"), encoding_figure(second.pos_enc, 6, "second")]
    assert [drawn_whole(fig) for fig in anew] == pngs
    assert pngs[0] != first_pngs[0] and pngs[1] != first_pngs[1]


@pytest.mark.parametrize(
    ("inputs", "limits"),
    [
        ([0.1, 1.97], (0, 2)),
        ([0.19, 0.05], (0, 0.2)),
        ([-0.3, 0.4], (-0.5, 0.5)),
        ([-0.3, 1.2], (-2, 2)),
        ([-2, -1], (-2, 0)),
        ([5.0000001], (0, 10)),
        ([0, 0], (0, 1)),
        ([math.nan, 1.5], (0, 2)),
        ([math.nan], (0, 1)),
    ],
)
def test_the_input_strips_cover_0_and_the_inputs_on_a_few_ranges(inputs: list, limits: tuple) -> None:
    """Out to 1, 2 or 5 times a power of ten, symmetric about 0 for both signs: a task's inputs share one range
    (one layout, the strips' axes drawn once), never cut off."""
    from attnlab.diagnostics import strip_limits

    assert strip_limits(np.array(inputs)) == pytest.approx(limits)


@pytest.mark.parametrize("pool", ["max", "cls"])
def test_the_logged_png_is_the_figure_drawn_whole_after_a_nan_and_under_any_style(pool: str) -> None:
    """diagnostics.png draws what changes over the rest, rendered once: a NaN cell (drawn transparent) must show
    what a whole draw shows there, not the previous figure's map, a matplotlibrc's grid or inward ticks must
    not end up under the maps, and its title location must not leave the previous prediction in the titles."""
    import matplotlib

    from attnlab import diagnostics

    net = AttentionClassifier(
        dim=1, d_model=8, num_heads=1, num_layers=1, pos_enc="learned", max_len=8, pool=pool, scale="sqrt"
    )
    diverged = torch.rand(2, 6, 1)
    diverged[1, 2, 0] = float("nan")
    style = {"axes.grid": True, "xtick.direction": "in", "ytick.direction": "in", "axes.titlelocation": "left"}
    with matplotlib.rc_context(style):
        diagnostics.attention_layout.cache_clear()
        diagnostics.encoding_layout.cache_clear()
        for x, predicted in [(torch.rand(2, 6, 1), 0), (torch.rand(2, 6, 1), 1), (diverged, 0)]:
            with torch.no_grad():  # the head's bias decides the prediction: the strips' titles change between them
                net.head.bias.copy_(torch.tensor([10.0, -10.0]) * (1 if predicted == 0 else -1))
            fig = attention_figure(net, x, 0, 0, "title")
            assert f"(predicted {'AB'[predicted]})" in fig.axes[0].get_title("left")
            assert pixels(diagnostics.png(fig)) == pixels(drawn_whole(fig))
        for nan in (False, True):
            if nan:
                with torch.no_grad():
                    net.pos_enc.pe[3, 0] = float("nan")  # a learned table's row, diverged
            fig = encoding_figure(net.pos_enc, 6, "title")
            assert pixels(diagnostics.png(fig)) == pixels(drawn_whole(fig))
    diagnostics.attention_layout.cache_clear()  # laid out under the style above
    diagnostics.encoding_layout.cache_clear()


def drawn_whole(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def pixels(png: bytes) -> bytes:
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


def fig_max(*axes) -> float:
    return max(float(ax.get_images()[0].get_array().max()) for ax in axes)


def test_scalars(runs) -> None:
    metrics, events = runs["sinusoidal"]
    s = events["scalars"]
    for tag in ("attn/entropy", "attn/max_prob", "attn/score_std", "train/grad_norm"):
        assert len(s[tag]) == 2, tag
    length = 8
    assert "attn/entropy_uniform" not in s  # a constant: in the tested checkpoint's statistics, not a chart
    assert metrics["diagnostics"]["attn/entropy_uniform"] == pytest.approx(math.log(length))
    assert all(0 < e <= math.log(length) + 1e-6 for e in s["attn/entropy"])
    assert all(1 / length <= p <= 1 for p in s["attn/max_prob"])
    assert all(g > 0 for g in s["train/grad_norm"])


def test_epoch_diagnostics_lie_at_the_validation_steps_and_in_the_history(runs) -> None:
    metrics, _ = runs["sinusoidal"]
    folder, history = runs["sinusoidal folder"], metrics["history"]
    steps = scalar_steps(folder, "val/acc")
    assert steps == history["step"] and len(steps) == 2
    for tag in ("val/acc_shuffled", "attn/entropy", "attn/max_prob", "attn/score_std", "train/grad_norm"):
        assert scalar_steps(folder, tag) == steps, tag
    assert scalar_values(folder, "val/acc_shuffled") == pytest.approx(history["val/acc_shuffled"])
    assert scalar_values(folder, "attn/entropy") == pytest.approx(history["attn/entropy"])


def test_shuffled_accuracy_equals_accuracy_without_positions(runs) -> None:
    metrics, events = runs["none"]
    assert events["scalars"]["val/acc_shuffled"] == events["scalars"]["val/acc"]
    assert metrics["test/acc_shuffled"] == metrics["test/acc"]


def test_hparams_and_config_text(runs) -> None:
    _, events = runs["sinusoidal"]
    assert events["text"] == ["config/text_summary"]
    assert set(events["hparams"]) >= {"_hparams_/experiment", "_hparams_/session_start_info"}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(events["hparams"]["_hparams_/experiment"]).experiment
    assert {m.name.tag: m.display_name for m in experiment.metric_infos} == METRICS  # the run's own scalars
    start = plugin_data_pb2.HParamsPluginData.FromString(events["hparams"]["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    # the key settings, not the 40 keys of the config; early_stop.patience null: left out (not the text "None")
    assert set(hparams) == set(KEY_SETTINGS) - {"patience"}
    assert hparams["pos_enc"].string_value == "sinusoidal" and hparams["seq_len"].number_value == 8
    assert hparams["lr"].number_value == pytest.approx(3e-3)
    assert "hp_metric" not in events["scalars"]


def test_tensorboard_serves_the_real_curves(runs) -> None:
    """val/acc_best over the epochs and test/acc at the last step, as TensorBoard serves them, and no
    one-point copies for the HParams tab (it reads these scalars themselves)."""
    from .conftest import tensorboard_run

    metrics, _ = runs["sinusoidal"]
    acc = tensorboard_run(runs["sinusoidal folder"])
    steps_per_epoch = metrics["global_step"] // metrics["epochs"]
    best = [(e.step, e.value) for e in acc.Scalars("val/acc_best")]
    assert [s for s, _ in best] == [steps_per_epoch * (i + 1) - 1 for i in range(metrics["epochs"])]
    assert best[-1][1] == pytest.approx(metrics["val/acc_best"])
    test = [(e.step, e.value) for e in acc.Scalars("test/acc")]  # at the tested checkpoint's step, as its figures
    assert test == [(metrics["tested_checkpoint"]["global_step"], pytest.approx(metrics["test/acc"]))]
    assert not [t for t in acc.Tags()["scalars"] if t.startswith("hparams/")]


def test_stats_units() -> None:
    uniform = torch.full((1, 1, 4, 4), 0.25)
    stats = attention_stats([AttentionMap(torch.zeros(1, 1, 4, 4), uniform)])
    torch.testing.assert_close(stats["attn/entropy"], stats["attn/entropy_uniform"])
    assert stats["attn/max_prob"] == pytest.approx(0.25) and stats["attn/score_std"] == 0
    scores = torch.randn(3, 2, 5, 7) * 4 + 100  # a large mean: the std must not lose its digits to it
    stats = attention_stats([AttentionMap(scores, scores.softmax(-1))])
    torch.testing.assert_close(stats["attn/score_std"], scores.std(-1).mean())
    x = torch.arange(12.0).view(2, 6, 1)
    shuffled = shuffle_positions(x, seed=0)
    assert torch.equal(shuffled.sort(dim=1).values, x) and not torch.equal(shuffled, x)
