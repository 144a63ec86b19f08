"""What a researcher sees in TensorBoard, checked against a real TensorBoard server on 127.0.0.1 through
its HTTP data API (the same calls its web app makes), for a small sweep and a debug run beside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from attnlab.board import METRICS
from attnlab.dashboard import LAYOUT, is_debug
from attnlab.naming import KEY_SETTINGS
from attnlab.tbserver import get_json, tensorboard

from .conftest import CLI_ENV, ROOT, TINY, python, read_metrics, run_train

pytestmark = pytest.mark.slow
GRID = ["data=halfswap,uniform", "model.pos_enc=none,rope"]
NAMES = [
    "data=halfswap,pos_enc=none",
    "data=halfswap,pos_enc=rope",
    "data=uniform,pos_enc=none",
    "data=uniform,pos_enc=rope",
]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    """logs/sweep: 2 tasks x 2 encodings, 2 epochs each; logs/debug: a debug=limit run."""
    logs = tmp_path_factory.mktemp("logs")
    sweep = run_train(
        "-m", *TINY, "diagnostics=true", "trainer.max_epochs=2", *GRID, f"hydra.sweep.dir={logs / 'sweep'}", cwd=logs
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    debug = run_train(*TINY, "debug=limit", f"hydra.run.dir={logs / 'debug'}", cwd=logs)
    assert debug.returncode == 0, debug.stderr[-3000:]
    return logs


@pytest.fixture(scope="module")
def served(logdir: Path):
    with tensorboard(logdir) as base:
        yield base


def session_groups(base: str) -> list[dict]:
    query = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 100,
    }
    return get_json(f"{base}/data/plugin/hparams/session_groups", query)["sessionGroups"]


def test_run_names_are_the_values_that_vary(logdir: Path, served: str) -> None:
    runs = get_json(f"{served}/data/runs")
    board = [f"sweep/tensorboard/{n.replace('data=', 'task=')}" for n in NAMES]
    board += ["sweep/tensorboard/study", "sweep/tensorboard/uniform attention, L=8"]
    assert sorted(runs) == sorted(["debug", *(f"sweep/{n}" for n in NAMES), *board])  # jobs, the study view
    assert sorted(p.name for p in (logdir / "sweep").iterdir() if p.is_dir()) == [*NAMES, "tensorboard"]


def test_scalars_images_and_layout_are_served(logdir: Path, served: str) -> None:
    run = f"sweep/{NAMES[1]}"
    tags = get_json(f"{served}/data/plugin/scalars/tags")[run]
    for tag in ("train/acc", "val/acc", "val/acc_shuffled", "train/loss", "val/loss", "attn/entropy"):
        assert tag in tags
    assert "attn/entropy_uniform" not in tags  # a constant: no flat chart of its own
    assert "epoch" not in tags  # Lightning's 0, 1, 2, ... chart is dropped
    points = get_json(f"{served}/data/plugin/scalars/scalars?run={run}&tag=val/acc_best")
    metrics = read_metrics(logdir / "sweep" / NAMES[1])
    assert len(points) == metrics["epochs"] and points[-1][2] == pytest.approx(metrics["val/acc_best"])
    images = get_json(f"{served}/data/plugin/images/tags")[run]
    assert set(images) == {"attention/layer0_head0", "pos_enc"}  # NAMES[1]: sinusoidal, one layer and head
    tested = metrics["tested_checkpoint"]["global_step"]
    assert [e["step"] for e in get_json(f"{served}/data/plugin/images/images?run={run}&tag=pos_enc")] == [tested]
    layout = get_json(f"{served}/data/plugin/custom_scalars/layout")
    charts = {c["title"]: c["multiline"]["tag"] for c in layout["category"][0]["chart"]}
    assert list(charts) == list(LAYOUT["attnlab"])  # the questions, in order
    assert all(len(tags) == 1 for tags in charts.values())  # one series per run: TensorBoard colours by run


def test_hparams_show_what_the_sweep_varies_seed_last_numbers_as_numbers(logdir: Path, served: str) -> None:
    experiment = get_json(f"{served}/data/plugin/hparams/experiment", {"experimentName": ""})
    infos = {h["name"]: h for h in experiment["hparamInfos"]}
    # what the sweep varies, and the seed; the constants (d_model, lr, ...) are in the Text tab's config
    assert set(infos) == {"task", "pos_enc", "seed"}
    assert [n for n, h in infos.items() if h.get("differs")] == [n for n in infos if n != "seed"]
    assert infos["seed"]["type"] == "DATA_TYPE_FLOAT64" and infos["task"]["type"] == "DATA_TYPE_STRING"
    labels = {m["name"]["tag"]: m["displayName"] for m in experiment["metricInfos"]}
    assert labels == METRICS  # the run's own scalars, under short names

    groups = [g for g in session_groups(served) if not g["name"].startswith("sweep/tensorboard/")]  # the jobs
    assert sorted(g["name"] for g in groups) == [f"sweep/{n}" for n in NAMES]  # not the debug run
    for group in groups:
        folder = logdir / "sweep" / group["name"].split("/")[1]
        metrics = read_metrics(folder)
        hp = group["hparams"]
        assert folder.name == f"data={hp['task']},pos_enc={hp['pos_enc']}" and hp["seed"] == 0
        served_metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        for m in METRICS:
            assert served_metrics[m] == pytest.approx(metrics[m])
    tags = get_json(f"{served}/data/plugin/scalars/tags")[groups[0]["name"]]
    assert not [t for t in tags if t.startswith("hparams/")]  # no one-point copies in the Scalars tab


def test_a_single_run_shows_every_key_setting_seed_last() -> None:
    from attnlab.board import hparam_value as shown
    from attnlab.config import to_plain
    from attnlab.dashboard import hparams_of

    from .conftest import compose_train

    row, differs = hparams_of(to_plain(compose_train("/tmp/x", "data=halfswap")), Path("/tmp/x"))
    assert list(row)[-1] == "seed" and set(row) == set(KEY_SETTINGS) - {"patience"}  # null: no "None" text
    patient, _ = hparams_of(to_plain(compose_train("/tmp/x", "early_stop.patience=4")), Path("/tmp/x"))
    assert patient["patience"] == 4
    # shown at first sight: what tells one run from another (none marked: TensorBoard showed batch_size, d_model,
    # dim, lr, max_epochs, the first five by name)
    assert differs == {"task", "pos_enc", "seq_len", "scale", "pool", "seed"}
    assert shown(256) == 256 and shown(3e-3) == 3e-3 and shown("rope") == "rope" and shown(True) == "True"


def test_debug_runs_are_no_hparams_rows(compose_cfg) -> None:
    from attnlab.config import to_plain

    for preset in ("fdr", "limit", "overfit", "profiler"):
        assert is_debug(to_plain(compose_cfg(f"debug={preset}")))
    assert not is_debug(to_plain(compose_cfg("experiment=limitations")))


CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium): no screenshots")
def test_screenshots_of_every_tab(logdir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *python(),
            str(ROOT / "scripts" / "screenshots.py"),
            str(logdir / "sweep"),
            str(tmp_path),
            "--runs",
            "rope",
        ],
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for tab in ("scalars", "images", "hparams", "custom_scalars"):
        png = (tmp_path / f"tensorboard_{tab}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a drawn page, not a blank one
