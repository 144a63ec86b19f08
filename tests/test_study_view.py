"""A study at first sight: the TensorBoard command a sweep prints opens on drawn curves, without a click.

A real 42-job study (experiment=limitations at test sizes), its printed `tensorboard --logdir ...`, a
real TensorBoard server and headless Chromium: the Scalars and Custom Scalars tabs have curves drawn (a
page of empty charts, what a logdir of more than 40 runs opens on, has almost no coloured pixels), the
Text tab holds summary.md, HParams the keys the sweep varies."""

from __future__ import annotations

import math
import re
import shutil
import sys
import urllib.parse
from pathlib import Path

import pytest

from attnlab.tbserver import get_json, tensorboard

from .conftest import ROOT, TINY, run_train

pytestmark = pytest.mark.slow
CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
DRAWN = 4000  # coloured pixels in the chart area: drawn curves (~9,000 to 20,000); empty charts (~1,500)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str]:
    """A 42-job limitations study at test sizes; its folder and the logdir its last line prints."""
    tmp = tmp_path_factory.mktemp("study")
    proc = run_train(
        "-m",
        "experiment=limitations",
        *TINY,
        "diagnostics=true",
        "trainer.max_epochs=3",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (printed,) = re.findall(r"^\[attnlab\] curves: tensorboard --logdir (\S+)$", proc.stdout, re.M)
    return tmp / "sweep", printed


def coloured_pixels(png: Path) -> int:
    import matplotlib.image

    image = matplotlib.image.imread(png)[:, :, :3]
    body = image[80:, 360:]  # below the toolbar, right of the run list
    return int(((body.max(-1) - body.min(-1)) > 0.35).sum())


def test_the_printed_view_has_few_enough_runs_and_the_summary(study) -> None:
    sweep, printed = study
    assert Path(printed) == sweep / "tensorboard"
    with tensorboard(Path(printed)) as base:
        runs = get_json(f"{base}/data/runs")
        uniform = sorted(r for r in runs if r.startswith("uniform attention"))
        assert uniform == ["uniform attention, L=8"]  # TINY's seq_len (a cls token would add one)
        assert len(runs) == 14 + 1 + 1 and "study" in runs  # cells, the study, references: under TensorBoard's 40
        tags = get_json(f"{base}/data/plugin/scalars/tags")
        cell = set(tags["task=halfswap,pos_enc=rope"])
        assert {"val/acc", "val/acc/min", "val/acc/max", "val/loss", "val/acc_shuffled", "attn/entropy"} <= cell
        assert not [t for t in cell if "uniform" in t]  # no flat reference chart of a cell's own ...
        query = urllib.parse.urlencode({"run": "uniform attention, L=8", "tag": "attn/entropy"})
        line = get_json(f"{base}/data/plugin/scalars/scalars?{query}")
        assert [v for _, _, v in line] == pytest.approx([math.log(8)] * 2)  # ... a flat line in the entropy chart
        text = get_json(f"{base}/data/plugin/text/text?run=study&tag=summary%2Ftext_summary")
        assert "Sweep summary" in text[0]["text"] and "Wilson 95% interval" in text[0]["text"]
        experiment = get_json(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        names = [h["name"] for h in experiment["hparamInfos"]]
        assert sorted(names[:-1]) == ["pos_enc", "task"] and names[-1] == "seed"  # what varies, seed last
        assert all(h.get("differs") for h in experiment["hparamInfos"][:-1])


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium): no browser test")
def test_a_browser_sees_curves_at_first_sight(study, tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from screenshots import screenshot

    sweep, printed = study
    with tensorboard(Path(printed)) as base:
        for tab in ("scalars", "custom_scalars"):
            png = tmp_path / f"{tab}.png"
            assert screenshot(CHROMIUM, f"{base}/#{tab}", png, (1400, 1000))  # no run selection in the URL
            assert coloured_pixels(png) > DRAWN, tab
    with tensorboard(sweep) as base:  # the whole sweep (57 runs): TensorBoard selects none, draws nothing
        png = tmp_path / "everything.png"
        assert screenshot(CHROMIUM, f"{base}/#scalars", png, (1400, 1000))
        assert coloured_pixels(png) < DRAWN
