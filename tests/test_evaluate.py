"""scripts/evaluate.py: length generalisation, and clear errors for what cannot be evaluated."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab.checkpoint import load_module
from attnlab.errors import ConfigError
from attnlab.evaluate import evaluate_lengths

from .conftest import ROOT, TINY, read_metrics, run_train, tensorboard_run

EVALUATE = ROOT / "scripts" / "evaluate.py"


def evaluate(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EVALUATE), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def refused_early(*args: str, cwd) -> str:
    """scripts/evaluate.py refusing ARGS: its one-line error, after checking that it answered before
    Lightning was imported."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run(
        [sys.executable, str(EVALUATE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    lines = proc.stderr.strip().splitlines()
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")]
    said = [line for line in lines if not line.startswith("import time:")]
    assert proc.returncode == 1, said[-20:]
    assert "torch" in imported and "pytorch_lightning" not in imported
    assert "Traceback" not in proc.stderr
    return said[-1]


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    """One tiny trained halfswap run with a learned encoding of 16 positions."""
    tmp = tmp_path_factory.mktemp("eval")
    run_dir = tmp / "run"
    proc = run_train(
        *TINY, "data=halfswap", "model.pos_enc=learned", "model.max_len=16", f"hydra.run.dir={run_dir}", cwd=tmp
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def test_lengths_written_to_metrics_and_tensorboard(learned_run, tmp_path) -> None:
    before = read_metrics(learned_run)
    proc = evaluate(f"run_dir={learned_run}", "eval.seq_lens=[4,8,16]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = read_metrics(learned_run)
    results = metrics["length_generalization"]
    assert list(results) == ["4", "8", "16"]
    # the training length, the best checkpoint and eval.n = data.n_test: the run's own test set, its test/acc
    assert results["8"] == before["test/acc"]
    assert metrics["length_generalization_checkpoint"] == {
        "file": "checkpoints/best.ckpt",
        "global_step": before["global_step"],
    }
    assert {k: v for k, v in metrics.items() if not k.startswith("length_generalization")} == before  # kept
    assert f"       8  {before['test/acc']:.4f}" in proc.stdout
    assert not list(tmp_path.iterdir())  # writes only into the run it evaluates

    # a figure (lengths on a scalar chart's step axis were smoothed away), at the checkpoint's step
    acc = tensorboard_run(learned_run / "tb")
    scalars = [t for t in acc.Tags()["scalars"] if t.startswith("eval/")]
    images = acc.Images("eval/acc_vs_seq_len")
    assert not scalars
    assert [i.step for i in images] == [before["global_step"]]
    assert images[0].width > 300 and images[0].height > 200
    assert (learned_run / "length_generalization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def fresh_copy(run_dir, dest):
    """A copy of the run as training left it (without what other tests evaluated into it)."""
    shutil.copytree(run_dir, dest)
    metrics = read_metrics(dest)
    clean = {k: v for k, v in metrics.items() if not k.startswith("length_generalization")}
    (dest / "metrics.json").write_text(json.dumps(clean))
    return dest


def test_lengths_of_the_same_checkpoint_merge_and_another_checkpoint_keeps_the_old(learned_run, tmp_path) -> None:
    run = fresh_copy(learned_run, tmp_path / "run")
    for lengths in ([4], [16]):
        evaluate_lengths(run, lengths)
    first = read_metrics(run)["length_generalization"]
    assert list(first) == ["4", "16"]
    evaluate_lengths(run, [8], ckpt="last")
    metrics = read_metrics(run)
    assert list(metrics["length_generalization"]) == ["8"]
    assert metrics["length_generalization_checkpoint"]["file"] == "checkpoints/last.ckpt"
    assert metrics["length_generalization_earlier"] == [
        {"checkpoint": {"file": "checkpoints/best.ckpt", "global_step": metrics["global_step"]}, "acc": first}
    ]


def test_a_resume_keeps_the_lengths(learned_run, tmp_path) -> None:
    run = fresh_copy(learned_run, tmp_path / "run")
    evaluate_lengths(run, [4, 16])
    evaluated = read_metrics(run)
    proc = run_train(f"resume={run}", "trainer.max_epochs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(run)
    assert metrics["epochs"] == 2 and not (run / "metrics.previous.json").exists()
    for key in ("length_generalization", "length_generalization_checkpoint"):
        assert metrics[key] == evaluated[key]  # with the checkpoint (and step) they were measured on


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["eval.seq_lens=[8,32]"],
            "error: eval.seq_lens=32 is invalid: pos_enc=learned has model.max_len=16 positions",
        ),
        (["eval.seq_lens=[8,9]"], "error: eval.seq_lens=9 is invalid: halfswap needs an even length"),
        (["eval.ckpt=nope.ckpt", "eval.seq_lens=[8]"], "error: ckpt='nope.ckpt' is invalid: no such checkpoint file"),
    ],
)
def test_refused_before_evaluating(learned_run, tmp_path, args, message) -> None:
    before = (learned_run / "metrics.json").read_text()
    assert refused_early(f"run_dir={learned_run}", *args, cwd=tmp_path).startswith(message)
    assert (learned_run / "metrics.json").read_text() == before


def test_missing_run_dir(tmp_path) -> None:
    assert "not a run folder" in refused_early(f"run_dir={tmp_path / 'nope'}", cwd=tmp_path)
    assert not (tmp_path / "nope").exists()


def test_corrupt_checkpoint_through_the_cli(learned_run, tmp_path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    proc = evaluate(f"run_dir={learned_run}", f"eval.ckpt={bad}", "eval.seq_lens=[8]", cwd=tmp_path)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: ckpt='{bad}' is invalid: not a loadable attnlab checkpoint")
    )


@pytest.mark.parametrize("content", [b"", b"garbage", "truncate", "foreign"])
def test_corrupt_checkpoint_is_refused(learned_run, tmp_path, content) -> None:
    bad = tmp_path / "bad.ckpt"
    good = (learned_run / "checkpoints" / "best.ckpt").read_bytes()
    if content == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"model": {}}}, bad)
    else:
        bad.write_bytes(good[: len(good) // 2] if content == "truncate" else content)
    with pytest.raises(ConfigError, match=r"^ckpt=.*bad.ckpt' is invalid: not a loadable attnlab checkpoint \("):
        load_module(bad)
    assert load_module(learned_run / "checkpoints" / "best.ckpt").net is not None


def test_pickle_payload_is_not_run(learned_run, tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": Payload()}, bad)
    with pytest.raises(ConfigError, match="not a loadable attnlab checkpoint"):
        load_module(bad)
    assert not marker.exists()


def test_make_evaluate_with_its_default_lengths(learned_run, tmp_path) -> None:
    """`make evaluate RUN=<run>`: the default [16,32,...] and a given LENS reach evaluate.py whole (commas
    in a make function argument would split them). Lengths past the learned encoding's 16 are refused,
    naming them."""
    run = tmp_path / "run"
    shutil.copytree(learned_run, run)
    venv = Path(sys.executable).parent.parent  # this interpreter's environment, already set up
    make = ["make", "-C", str(ROOT), "-o", "setup", f"VENV={venv}", f"RUN={run}"]
    refused = subprocess.run([*make, "evaluate"], capture_output=True, text=True, timeout=600)
    assert "eval.seq_lens=[16,32,64,128]" in refused.stdout
    assert "no viable alternative" not in refused.stderr and "max_len" in refused.stderr, refused.stderr[-2000:]
    assert "error: eval.seq_lens=32 is invalid" in refused.stderr  # the first length past 16
    # LENS given: reaches evaluate.py whole too (a length it refuses, named: no evaluation needed to see it)
    given = subprocess.run([*make, "LENS=[8,24]", "evaluate"], capture_output=True, text=True, timeout=600)
    assert "error: eval.seq_lens=24 is invalid" in given.stderr, given.stderr[-2000:]
