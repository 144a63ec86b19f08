"""The TensorBoard diagnostics: written, readable back, and meaning what they say."""

import contextlib
from pathlib import Path

import pytest
import torch
from tensorboard.plugins.hparams import plugin_data_pb2

from attnlab.board import METRICS
from attnlab.dashboard import HPARAMS
from attnlab.diagnostics import attention_stats, heatmap, shuffle_positions
from attnlab.model import AttentionMap
from attnlab.train import train

from .conftest import TINY, compose_train, tensorboard_run


def read_events(run_dir: Path) -> dict:
    """All tags of all event files of a run: {"scalars": {tag: [values]}, "images": {...}, ...}."""
    acc = tensorboard_run(run_dir / "tb")
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
            out, *TINY, "data=halfswap", f"model.pos_enc={pos_enc}", "model.num_heads=2", "model.num_layers=2",
            "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
        )  # fmt: skip
        result[pos_enc] = (train(cfg), read_events(out))
        result[f"{pos_enc} folder"] = out
    return result


def test_images_every_layer_head_class_and_epoch(runs) -> None:
    _, events = runs["sinusoidal"]
    expected = {f"attention/class_{c}/layer{la}_head{h}" for c in "AB" for la in (0, 1) for h in (0, 1)}
    assert set(events["images"]) == expected | {"pos_enc"}
    for tag, images in events["images"].items():
        assert len(images) == 2, tag  # one per validation epoch
        assert images[0].width >= 192 and images[0].encoded_image_string[:4] == b"\x89PNG"
    _, events_none = runs["none"]
    assert "pos_enc" not in events_none["images"]  # nothing to draw without an encoding


def test_scalars(runs) -> None:
    _, events = runs["sinusoidal"]
    s = events["scalars"]
    for tag in ("attn/entropy", "attn/entropy_uniform", "attn/max_prob", "attn/score_std", "train/grad_norm"):
        assert len(s[tag]) == 2, tag
    length = 8
    assert s["attn/entropy_uniform"] == pytest.approx([torch.log(torch.tensor(length)).item()] * 2)
    assert all(0 < e <= u + 1e-6 for e, u in zip(s["attn/entropy"], s["attn/entropy_uniform"], strict=True))
    assert all(1 / length <= p <= 1 for p in s["attn/max_prob"])
    assert all(g > 0 for g in s["train/grad_norm"])


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
    assert set(hparams) == set(HPARAMS)  # the key settings, not the 40 keys of the config
    assert hparams["pos_enc"].string_value == "sinusoidal" and hparams["seq_len"].number_value == 8
    assert hparams["lr"].number_value == pytest.approx(3e-3)
    assert "hp_metric" not in events["scalars"]


def test_tensorboard_serves_the_real_curves(runs) -> None:
    """val/acc_best over the epochs and test/acc at the last step, as TensorBoard serves them, and no
    one-point copies for the HParams tab (it reads these scalars themselves)."""
    from .conftest import tensorboard_run

    metrics, _ = runs["sinusoidal"]
    acc = tensorboard_run(runs["sinusoidal folder"] / "tb")
    steps_per_epoch = metrics["global_step"] // metrics["epochs"]
    best = [(e.step, e.value) for e in acc.Scalars("val/acc_best")]
    assert [s for s, _ in best] == [steps_per_epoch * (i + 1) - 1 for i in range(metrics["epochs"])]
    assert best[-1][1] == pytest.approx(metrics["val/acc_best"])
    test = [(e.step, e.value) for e in acc.Scalars("test/acc")]
    assert test == [(metrics["global_step"], pytest.approx(metrics["test/acc"]))]
    assert not [t for t in acc.Tags()["scalars"] if t.startswith("hparams/")]


def test_attention_images_share_one_colour_scale() -> None:
    """A near-uniform map looks flat (not stretched into stripes); the bar at the right is the scale."""
    near_uniform = torch.full((32, 32), 1 / 32) + 0.004 * torch.rand(32, 32)
    image = heatmap(near_uniform, value_range=(0.0, 1.0))
    cells = image[:, :, :192]
    assert image.shape[1] == 192 and image.shape[2] > 192  # the colour bar
    assert (cells.int() - cells[:, :1, :1].int()).abs().max() <= 2  # one colour, to within rounding
    stretched = heatmap(near_uniform)  # own range: for tables, not attention
    assert (stretched.int() - stretched[:, :1, :1].int()).abs().max() > 100
    sharp = torch.eye(4)
    assert heatmap(sharp, value_range=(0.0, 1.0))[:, 0, 0].tolist() == [253, 231, 36]  # viridis(1.0): yellow


def test_heatmap_and_stats_units() -> None:
    image = heatmap(torch.tensor([[0.0, 1.0], [0.5, 0.25]]))
    assert image.shape == (3, 192, 192) and image.dtype == torch.uint8
    uniform = torch.full((1, 1, 4, 4), 0.25)
    stats = attention_stats([AttentionMap(torch.zeros(1, 1, 4, 4), uniform)])
    torch.testing.assert_close(stats["attn/entropy"], stats["attn/entropy_uniform"])
    assert stats["attn/max_prob"] == pytest.approx(0.25) and stats["attn/score_std"] == 0
    x = torch.arange(12.0).view(2, 6, 1)
    shuffled = shuffle_positions(x, seed=0)
    assert torch.equal(shuffled.sort(dim=1).values, x) and not torch.equal(shuffled, x)
