"""scripts/evaluate.py: length generalisation, and clear errors for what cannot be evaluated."""

import subprocess
import sys

import pytest
import torch

from attnlab.checkpoint import load_module
from attnlab.errors import ConfigError

from .conftest import ROOT, TINY, read_metrics

EVALUATE = ROOT / "scripts" / "evaluate.py"


def evaluate(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EVALUATE), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    """One tiny trained halfswap run with a learned encoding of 16 positions."""
    from .conftest import run_train

    tmp = tmp_path_factory.mktemp("eval")
    run_dir = tmp / "run"
    proc = run_train(
        *TINY, "data=halfswap", "model.pos_enc=learned", "model.max_len=16", f"hydra.run.dir={run_dir}", cwd=tmp
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def test_lengths_written_to_metrics_and_tensorboard(learned_run, tmp_path) -> None:
    proc = evaluate(f"run_dir={learned_run}", "eval.seq_lens=[4,8,16]", "eval.n=64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = read_metrics(learned_run)["length_generalization"]
    assert set(results) == {"4", "8", "16"} and all(0 <= v <= 1 for v in results.values())
    assert "test/acc" in read_metrics(learned_run)  # training metrics kept
    assert "      16" in proc.stdout
    assert not list(tmp_path.iterdir())  # writes only into the run it evaluates

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for path in (learned_run / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path))
        acc.Reload()
        if "eval/acc_vs_seq_len" in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars("eval/acc_vs_seq_len")]
    assert sorted(steps) == [4, 8, 16]


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
    proc = evaluate(f"run_dir={learned_run}", *args, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert (learned_run / "metrics.json").read_text() == before


def test_missing_run_dir(tmp_path) -> None:
    proc = evaluate(f"run_dir={tmp_path / 'nope'}", cwd=tmp_path)
    assert proc.returncode == 1 and "not a run folder" in proc.stderr
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
