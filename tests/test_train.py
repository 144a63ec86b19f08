"""Training end to end through scripts/train.py, the real entry point."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import TINY, read_metrics


def test_fast_dev_run(train_cli) -> None:
    proc, run_dir = train_cli("data=halfswap", "model.pos_enc=sinusoidal", "trainer.fast_dev_run=true", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["global_step"] == 1  # one batch, nothing saved: the final weights are tested, and named so
    assert metrics["tested_checkpoint"] == {
        "file": None,
        "epoch": 1,
        "global_step": 1,
        "selected_by": "none: no checkpoint saved",
    }
    assert "(final weights)" in proc.stdout
    assert metrics["test_sequences"] == 64  # one test batch: the verdict's interval is over these
    assert metrics["settings"]["pos_enc"] == "sinusoidal"


ARGS = ("data=halfswap", "model.pos_enc=learned", "seed=3", *TINY)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """`python scripts/train.py ARGS`: one run that the tests below read."""
    from .conftest import run_train

    tmp = tmp_path_factory.mktemp("cli")
    proc = run_train(*ARGS, f"hydra.run.dir={tmp / 'run'}", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"


def test_a_run_writes_its_files(cli_run: Path) -> None:
    run_dir = cli_run
    metrics = read_metrics(run_dir)
    assert set(metrics) >= {"val/acc_best", "test/acc", "test/loss", "settings"}
    assert metrics["settings"] == {**metrics["settings"], "task": "halfswap", "pos_enc": "learned", "seed": 3}
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert saved["data"]["task"] == "halfswap"
    assert list(run_dir.glob("events.out.tfevents.*"))
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(run_dir / "checkpoints" / name, weights_only=True)  # plain values only
        assert ckpt["hyper_parameters"]["model"]["pos_enc"] == "learned"
    json.dumps(metrics)


def test_a_run_records_where_it_came_from(cli_run: Path) -> None:
    """metrics.json and the Text tab name the commit (and whether tracked files had changed), the versions,
    and the command that runs it again."""
    import subprocess

    import pytorch_lightning

    from attnlab.provenance import CODE

    from .conftest import ROOT, tensorboard_run

    run_dir = cli_run
    origin = read_metrics(run_dir)["provenance"]
    git = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
    assert origin["git_commit"] == git("rev-parse", "HEAD") and len(origin["git_commit"]) == 40
    assert origin["git_dirty"] == bool(git("status", "--porcelain", "--untracked-files=no", "--", *CODE))
    assert origin["versions"]["torch"] == torch.__version__
    assert origin["versions"]["pytorch_lightning"] == pytorch_lightning.__version__
    assert origin["command"] == "python scripts/train.py " + " ".join(ARGS)  # hydra.run.dir is not the run's
    text = tensorboard_run(run_dir).Tensors("provenance/text_summary")
    assert [e.step for e in text] == [0] and origin["git_commit"].encode() in text[0].tensor_proto.string_val[0]


def test_multirun(train_cli, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    proc, _ = train_cli("-m", "data=uniform,halfswap", "trainer.fast_dev_run=true", *TINY, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tasks = sorted(json.loads(p.read_text())["settings"]["task"] for p in sweep.glob("*/metrics.json"))
    assert tasks == ["halfswap", "uniform"]


@pytest.mark.parametrize(
    "preset,steps,checkpoints",
    [
        ("fdr", 1, False),  # one batch of each stage, no checkpoints
        ("overfit", 2, False),  # its 2 batches (the same each epoch: tests/test_data.py), validated every 10th
        ("profiler", 4, True),  # up to 20 batches: TINY has 4
        ("limit", 3, True),  # 3 training batches
    ],
)
def test_debug_presets(compose_cfg, tmp_path, caplog, preset: str, steps: int, checkpoints: bool) -> None:
    from attnlab.train import train

    cfg = compose_cfg(f"debug={preset}", *TINY)
    assert cfg.trainer.max_epochs == 1  # the command line still wins over the preset
    metrics = train(cfg)
    assert metrics["global_step"] == steps
    assert bool(list(tmp_path.glob("checkpoints/*.ckpt"))) == checkpoints
    if preset == "profiler":
        assert "Profiler Report" in caplog.text and "run_training_epoch" in caplog.text


def test_version() -> None:
    import subprocess
    import sys

    from attnlab import __version__

    proc = subprocess.run([sys.executable, "-m", "attnlab", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"attnlab {__version__}"


def test_any_other_trainer_argument_passes_through(compose_cfg) -> None:
    """The schema types the trainer keys attnlab relies on; `+trainer.<arg>` reaches Lightning's Trainer."""
    from attnlab.train import train

    metrics = train(compose_cfg(*TINY, "trainer.max_epochs=5", "+trainer.max_steps=6"))
    assert metrics["global_step"] == 6 and len(metrics["history"]["val/acc"]) == 1  # 4 steps an epoch: in epoch 2


def test_the_tested_checkpoint_is_the_lowest_val_loss_not_the_first_to_touch_the_best_accuracy(tmp_path) -> None:
    """uniform reaches val/acc 1.0 in a few epochs and its val/loss keeps falling: the model tested (and
    named in metrics.json and the closing line) is the epoch of the lowest val/loss, with that epoch's
    weights, and the attention statistics reported beside its accuracy are of those same weights."""
    from attnlab.config import to_plain
    from attnlab.data import SyntheticDataModule
    from attnlab.diagnostics import STAT_EXAMPLES, attention_stats
    from attnlab.module import load_module
    from attnlab.train import train

    from .conftest import compose_train

    cfg = compose_train(tmp_path, *TINY, "diagnostics=true", "data=uniform", "trainer.max_epochs=8")
    metrics = train(cfg)
    val_loss, val_acc = metrics["history"]["val/loss"], metrics["history"]["val/acc"]
    first_at_best_acc = val_acc.index(max(val_acc)) + 1  # what the old rule (val/acc, strict gain) tested
    best_epoch = val_loss.index(min(val_loss)) + 1
    assert max(val_acc) == 1.0 and first_at_best_acc < best_epoch
    tested = metrics["tested_checkpoint"]
    assert tested == {"file": "checkpoints/best.ckpt", "epoch": best_epoch, "global_step": 4 * best_epoch,
                      "selected_by": "lowest val/loss"}  # fmt: skip
    module = load_module(tmp_path / "checkpoints" / "best.ckpt", to_plain(cfg))
    assert module.loaded_from == {"epoch": best_epoch, "global_step": 4 * best_epoch}
    data = SyntheticDataModule(**metrics_data(cfg), train_seed=0)
    data.setup("fit")
    x_val = data.splits["val"][0]
    with torch.no_grad():
        _, maps = module.net.forward_with_weights(x_val[:STAT_EXAMPLES])  # the sequences every validation used
    expected = {k: float(v) for k, v in attention_stats(maps).items()}
    assert metrics["diagnostics"] == pytest.approx(expected, rel=1e-5)


def metrics_data(cfg) -> dict:
    from attnlab.config import to_plain

    return to_plain(cfg)["data"]


@pytest.mark.parametrize(
    ("requested", "n_jobs", "threads"), [(None, 2, 3), (None, 4, 1), (None, 8, 1), (None, -1, 1), (5, 2, 5)]
)
def test_threads_divide_the_cores_this_process_may_use(monkeypatch, requested, n_jobs, threads) -> None:
    """Under a parallel launcher in a SLURM allocation of 6 cores on a 64-core node: 6 // n_jobs threads each."""
    from omegaconf import OmegaConf

    from attnlab.train import set_threads

    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(10, 16)))
    before = torch.get_num_threads()
    try:
        set_threads(requested, OmegaConf.create({"launcher": {"n_jobs": n_jobs}}))
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("limit", "scored"), [(None, 128), (1, 64)])
def test_metrics_say_how_many_test_sequences_were_scored(tmp_path, limit, scored) -> None:
    """TINY: data.n_test=128 in batches of 64; trainer.limit_test_batches=1 scores the first batch only."""
    from attnlab.train import train

    from .conftest import compose_train

    extra = [] if limit is None else [f"trainer.limit_test_batches={limit}"]
    assert train(compose_train(tmp_path, *TINY, *extra))["test_sequences"] == scored


def test_help_says_how_attnlab_is_run(tmp_path) -> None:
    from .conftest import run_train

    proc = run_train("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("attnlab: ") and "== Configuration groups ==" in lines
    for usage in ("python scripts/train.py -m experiment=limitations", "python scripts/train.py resume=<run folder>"):
        assert any(line.strip().startswith(usage) for line in lines), usage


@pytest.mark.parametrize(("args", "batches"), [([], 4), (["debug=overfit"], 2), (["trainer.limit_train_batches=3"], 3)])
def test_an_epochs_training_batches_count_what_overfitting_trains(compose_cfg, args, batches) -> None:
    """debug=overfit trains 2 batches an epoch: counted as 4, the logging interval stayed at 4 and Lightning warned
    that 2 batches are fewer than it."""
    from attnlab.config import to_plain, training_batches

    assert training_batches(to_plain(compose_cfg(*TINY, *args))) == batches
