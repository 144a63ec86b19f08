"""scripts/evaluate.py: length generalisation, and clear errors for what cannot be evaluated."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab.config import run_config
from attnlab.errors import ConfigError
from attnlab.evaluate import evaluate_run
from attnlab.module import load_module
from attnlab.report import collect
from attnlab.verdict import wilson

from .conftest import (
    CLI_ENV,
    ROOT,
    TINY,
    compose_train,
    image_steps,
    python,
    read_metrics,
    run_train,
    scalar_steps,
    signalled_after_imports,
    tensorboard_run,
)

EVALUATE = ROOT / "scripts" / "evaluate.py"


def evaluate(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*python(), str(EVALUATE), *args], cwd=cwd, env=CLI_ENV, capture_output=True, text=True, timeout=600
    )


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
    assert proc.returncode == 1 and len(said) == 1, said[-20:]
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


def test_lengths_written_to_their_own_file_and_tensorboard(learned_run, tmp_path) -> None:
    before = (learned_run / "metrics.json").read_text()
    metrics = json.loads(before)
    proc = evaluate(f"run_dir={learned_run}", "eval.seq_lens=[4,8]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (learned_run / "metrics.json").read_text() == before  # the training record is not touched
    entry = json.loads((learned_run / "evaluation.json").read_text())
    tested = metrics["tested_checkpoint"]
    # the tested checkpoint, named by file, epoch and step as metrics.json names it
    assert entry["checkpoint"] == {k: tested[k] for k in ("file", "epoch", "global_step")}
    assert tested["file"] == "checkpoints/best.ckpt" and tested["selected_by"] == "lowest val/loss"
    assert list(entry["lengths"]) == ["4", "8"] and entry["n"] == 128 and entry["train_seq_len"] == 8
    # the training length, the tested checkpoint and eval.n = data.n_test: the run's own test set, its test/acc
    assert entry["lengths"]["8"]["acc"] == metrics["test/acc"]
    assert entry["lengths"]["8"]["ci"] == list(wilson(metrics["test/acc"], 128))
    out = proc.stdout.splitlines()
    assert (
        out[0]
        == f"checkpoints/best.ckpt (epoch {tested['epoch']}, step {tested['global_step']}), 128 sequences per length"
    )
    assert any(line.startswith(f"       8  {metrics['test/acc']:.4f}") for line in out)
    assert out[-1].endswith(f"{learned_run}/length_generalization.png and its TensorBoard images")
    assert not list(tmp_path.iterdir())  # writes only into the run it evaluates

    # a figure (lengths on a scalar chart's step axis were smoothed away), at the checkpoint's step
    acc = tensorboard_run(learned_run)
    scalars = [t for t in acc.Tags()["scalars"] if t.startswith("eval/")]
    images = acc.Images("eval/acc_vs_seq_len")
    assert not scalars
    assert images[-1].step == tested["global_step"]
    assert images[0].width > 300 and images[0].height > 200
    assert (learned_run / "length_generalization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def fresh_copy(run_dir, dest):
    """A copy of the run as training left it (without what other tests evaluated into it)."""
    shutil.copytree(run_dir, dest)
    (dest / "evaluation.json").unlink(missing_ok=True)
    return dest


EV = {"n": None, "batch_size": 256, "untrained": "refuse"}


def test_a_run_with_eval_seq_lens_says_its_scores(tmp_path, capsys) -> None:
    """A run given eval.seq_lens printed nothing of the scores it had computed: they were in evaluation.json
    alone, which the closing lines did not name."""
    from attnlab.train import train

    run = tmp_path / "run"
    args = ["data=halfswap", "model.pos_enc=learned", "model.max_len=16", "eval.seq_lens=[4,8,16]"]
    train(compose_train(run, *TINY, *args, "eval.untrained=skip"))
    lengths = json.loads((run / "evaluation.json").read_text())["lengths"]
    said = [line for line in capsys.readouterr().out.splitlines() if "by length" in line]
    assert said == [
        f"[attnlab] test/acc by length (evaluation.json): 4: {lengths['4']['acc']:.4f}, "
        f"8: {lengths['8']['acc']:.4f}, 16: not scored"
    ]


def test_lengths_of_the_same_checkpoint_merge_and_another_checkpoint_keeps_the_old(learned_run, tmp_path) -> None:
    run = fresh_copy(learned_run, tmp_path / "run")
    for lengths in ([4], [2]):
        evaluate_run(run, {**EV, "seq_lens": lengths})
    first = json.loads((run / "evaluation.json").read_text())
    assert list(first["lengths"]) == ["2", "4"]
    entry = evaluate_run(run, {**EV, "seq_lens": [8]}, ckpt="last")
    assert entry == json.loads((run / "evaluation.json").read_text())
    assert list(entry["lengths"]) == ["8"] and entry["checkpoint"]["file"] == "checkpoints/last.ckpt"
    assert entry["earlier"] == [{k: first[k] for k in ("checkpoint", "train_seq_len", "n", "lengths")}]


def test_only_the_runs_own_model_is_scored_and_drawn(learned_run, tmp_path) -> None:
    """Another run's checkpoint, scored on this run's data, would be recorded as this run's numbers; a file in
    this run's folder holding another model is refused too (the weights carry the model settings they need)."""
    from attnlab.train import train

    run, other = fresh_copy(learned_run, tmp_path / "data=halfswap,seed=0"), tmp_path / "other"
    train(compose_train(other, *TINY, "data=halfswap", "model.pos_enc=none", "model.max_len=16"))
    theirs = other / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match=r"is invalid: not this run's: give best, last or a .ckpt file inside"):
        evaluate_run(run, {**EV, "seq_lens": [8]}, ckpt=str(theirs))
    copied = shutil.copy(theirs, run / "checkpoints" / "copied.ckpt")
    with pytest.raises(ConfigError, match=r"other settings: model.pos_enc='none' \(this run: 'learned'\)"):
        evaluate_run(run, {**EV, "seq_lens": [8]}, ckpt=str(copied))
    assert not (run / "evaluation.json").exists()
    ours = evaluate(f"run_dir={run}", f"eval.ckpt={run}/checkpoints/last.ckpt", "eval.seq_lens=[8]", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr[-2000:]  # its own, by a path with '=' and ',' as printed
    plot = [str(ROOT / "scripts" / "plot_attention.py"), str(run), str(tmp_path / "a.png"), "--ckpt", str(theirs)]
    proc = subprocess.run([*python(), *plot], capture_output=True, text=True, cwd=tmp_path, env=CLI_ENV)
    assert proc.returncode == 1 and "not this run's" in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
    assert not (tmp_path / "a.png").exists()


def test_a_resume_leaves_the_evaluation_apart_and_the_report_joins_only_the_tested_checkpoint(
    learned_run, tmp_path
) -> None:
    run = fresh_copy(learned_run, tmp_path / "sweep" / "data=halfswap,seed=0")
    evaluate_run(run, {**EV, "seq_lens": [4, 8]})
    (row,) = collect(tmp_path / "sweep")
    assert row["lengths"].keys() == {4, 8} and row["lengths"][8]["acc"] == row["test/acc"]
    joined = row["lengths"]
    evaluate_run(run, {**EV, "seq_lens": [4]}, ckpt="last")  # another checkpoint: another model's numbers
    (row,) = collect(tmp_path / "sweep")
    assert row["lengths"] == joined  # the tested checkpoint's table, kept under "earlier", still the one joined
    shutil.copy(run / "checkpoints" / "last.ckpt", run / "checkpoints" / "other.ckpt")
    evaluate_run(run, {**EV, "seq_lens": [4]}, ckpt="checkpoints/other.ckpt")  # as evaluation.json names it
    assert collect(tmp_path / "sweep")[0]["lengths"] == joined
    evaluate_run(run, {**EV, "seq_lens": [2]}, ckpt="checkpoints/other.ckpt")  # a length more: drawn again
    entry = json.loads((run / "evaluation.json").read_text())
    steps = sorted({t["checkpoint"]["global_step"] for t in [entry, *entry["earlier"]]})
    assert image_steps(run, "eval/acc_vs_seq_len") == steps  # a figure per checkpoint step, never two
    evaluated = (run / "evaluation.json").read_text()
    proc = run_train(f"resume={run}", "trainer.max_epochs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(run)
    assert metrics["epochs"] == 2 and not any(k.startswith("length") for k in metrics)
    assert (run / "evaluation.json").read_text() == evaluated  # kept, naming the checkpoint it measured
    tested = metrics["tested_checkpoint"]["global_step"]  # tested again: its numbers once, at its step
    assert scalar_steps(run, "test/acc") == scalar_steps(run, "test/loss") == [tested]


@pytest.mark.parametrize("pos_enc", ["learned", "relative", "symmetric"])
def test_untrained_positions_are_refused_unless_asked_and_then_marked(pos_enc, tmp_path) -> None:
    """Trained at L=8, an encoding with a parameter per position (offset) leaves those past 8 exactly at
    their initial values: a longer length would score them. Refused by default; marked when asked."""
    from attnlab.module import LitClassifier
    from attnlab.train import train

    run = tmp_path / "run"
    cfg = compose_train(
        run, *TINY, "data=halfswap", f"model.pos_enc={pos_enc}", "model.max_len=16", "trainer.max_epochs=2"
    )
    train(cfg)
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    torch.manual_seed(0)  # the run's seed: its initial weights
    start = LitClassifier(**ckpt["hyper_parameters"]).state_dict()
    name = "net.pos_enc.pe" if pos_enc == "learned" else "net.pos_enc.values"
    trained, initial = ckpt["state_dict"][name], start[name]
    if pos_enc == "learned":  # rows are positions 0..15
        untouched, moved = trained[8:] == initial[8:], trained[:8] != initial[:8]
    elif pos_enc == "relative":  # index = offset + 15: offsets -7..7 are 8..22
        untouched = torch.cat((trained[:, :8], trained[:, 23:]), 1) == torch.cat((initial[:, :8], initial[:, 23:]), 1)
        moved = trained[:, 8:23] != initial[:, 8:23]
    else:  # index = distance 0..15
        untouched, moved = trained[:, 8:] == initial[:, 8:], trained[:, :8] != initial[:, :8]
    assert untouched.all() and moved.all()

    with pytest.raises(ConfigError, match=rf"^eval.seq_lens=16 is invalid: untrained positions: pos_enc={pos_enc}"):
        evaluate_run(run, {**EV, "seq_lens": [8, 16]})
    assert not (run / "evaluation.json").exists()  # nothing evaluated
    entry = evaluate_run(run, {**EV, "seq_lens": [8, 16], "untrained": "mark"})
    assert entry["lengths"]["16"]["untrained_positions"] and not entry["lengths"]["8"]["untrained_positions"]
    skipped = evaluate_run(run, {**EV, "seq_lens": [12, 16], "untrained": "skip"})
    assert skipped["lengths"]["12"] == {
        "refused": f"untrained positions: pos_enc={pos_enc} was trained at length 8 (data.seq_len)"
    }
    assert skipped["lengths"]["16"] == entry["lengths"]["16"]  # a skip never replaces a score already recorded


def test_a_run_being_trained_is_not_evaluated(learned_run, tmp_path) -> None:
    """A resume holds the run's lock while it trains: evaluation refuses rather than read a checkpoint that
    is being replaced (and label its scores with another step)."""
    run = fresh_copy(learned_run, tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)", str(run / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = refused_early(f"run_dir={run}", "eval.seq_lens=[8]", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert message == f"error: run_dir='{run}' is invalid: another process is running in this folder right now"
    assert not (run / "evaluation.json").exists()


def test_a_sweep_job_folder_is_taken_as_printed(learned_run, tmp_path) -> None:
    job = fresh_copy(learned_run, tmp_path / "sweep" / "data=halfswap,pos_enc=learned,seed=0")
    proc = evaluate(f"run_dir={job}", "eval.seq_lens=[4]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(json.loads((job / "evaluation.json").read_text())["lengths"]) == ["4"]
    venv = Path(sys.executable).parent.parent
    made = subprocess.run(
        ["make", "-C", str(ROOT), "-o", "setup", f"VENV={venv}", f"RUN={job}", "LENS=[2]", "evaluate"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    assert list(json.loads((job / "evaluation.json").read_text())["lengths"]) == ["2", "4"]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["eval.seq_lens=[8,32]"],
            "error: eval.seq_lens=32 is invalid: pos_enc=learned has model.max_len=16 positions",
        ),
        (["eval.seq_lens=[8,9]"], "error: eval.seq_lens=9 is invalid: halfswap needs an even length"),
        (["eval.ckpt=nope.ckpt", "eval.seq_lens=[8]"], "error: eval.ckpt='nope.ckpt' is invalid: no such checkpoint"),
        # Hydra's own refusals while composing (5-10 lines of its own): one line
        (["eval.n=1.5"], "error: eval.n='1.5' is invalid: Value '1.5' of type 'float' could not be converted to"),
        (["foo=1"], "error: Could not override 'foo'. To append to your config use +foo=1: Key 'foo' not in 'Evalu"),
    ],
)
def test_refused_before_evaluating(learned_run, tmp_path, args, message) -> None:
    before = (learned_run / "metrics.json").read_text()
    assert refused_early(f"run_dir={learned_run}", *args, cwd=tmp_path).startswith(message)
    assert (learned_run / "metrics.json").read_text() == before


def test_a_reader_that_has_gone_ends_it_quietly_after_the_evaluation_is_written(learned_run, tmp_path) -> None:
    """`evaluate.py ... | head -3` ended with Hydra's "Error executing job" and a BrokenPipeError once the reader
    had left: the table is printed after evaluation.json is written, so nothing is said, and it exits 0."""
    run = tmp_path / "run"
    shutil.copytree(learned_run, run)
    args = [*python(), str(EVALUATE), f"run_dir={run}", "eval.seq_lens=[8]", "eval.n=64"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=CLI_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # gone before anything was printed
    err = proc.stderr.read()
    assert (proc.wait(), err) == (0, "")
    assert list(json.loads((run / "evaluation.json").read_text())["lengths"]) == ["8"]


def test_no_run_folder_is_one_line(tmp_path) -> None:
    said = refused_early(cwd=tmp_path)
    assert said.startswith("error: run_dir='???' is invalid: must be set: run_dir=<a run folder"), said


def test_no_length_is_refused(learned_run) -> None:
    with pytest.raises(ConfigError, match=r"^eval.seq_lens=\[\] is invalid: give at least one length"):
        evaluate_run(learned_run, {**EV, "seq_lens": []})


def test_missing_run_dir(tmp_path) -> None:
    assert "not a run folder" in refused_early(f"run_dir={tmp_path / 'nope'}", cwd=tmp_path)
    assert not (tmp_path / "nope").exists()


def test_corrupt_checkpoint_through_the_cli(learned_run, tmp_path) -> None:
    run = fresh_copy(learned_run, tmp_path / "run")
    bad = run / "checkpoints" / "bad.ckpt"
    bad.write_bytes(b"garbage")
    proc = evaluate(f"run_dir={run}", f"eval.ckpt={bad}", "eval.seq_lens=[8]", cwd=tmp_path)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: eval.ckpt='{bad}' is invalid: not a loadable attnlab checkpoint")
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
        load_module(bad, run_config(learned_run))
    assert load_module(learned_run / "checkpoints" / "best.ckpt", run_config(learned_run)).net is not None


def test_pickle_payload_is_not_run(learned_run, tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": Payload()}, bad)
    with pytest.raises(ConfigError, match="not a loadable attnlab checkpoint"):
        load_module(bad, run_config(learned_run))
    assert not marker.exists()


def test_make_evaluate_with_its_default_lengths(learned_run, tmp_path) -> None:
    """`make evaluate RUN=<run>`: the default [16,32,...] and a given LENS reach evaluate.py whole (commas
    in a make function argument would split them). Lengths past the 8 positions the learned encoding was
    trained on are refused, naming them."""
    run = tmp_path / "run"
    shutil.copytree(learned_run, run)
    venv = Path(sys.executable).parent.parent  # this interpreter's environment, already set up
    make = ["make", "-C", str(ROOT), "-o", "setup", f"VENV={venv}", f"RUN={run}"]
    refused = subprocess.run([*make, "evaluate"], capture_output=True, text=True, timeout=600)
    assert 'eval.seq_lens="[16,32,64,128]"' in refused.stdout
    assert "no viable alternative" not in refused.stderr, refused.stderr[-2000:]
    assert "error: eval.seq_lens=16 is invalid: untrained positions" in refused.stderr  # the first past 8
    # LENS given: reaches evaluate.py whole too (a length it refuses, named: no evaluation needed to see it)
    given = subprocess.run([*make, "LENS=[8,24]", "evaluate"], capture_output=True, text=True, timeout=600)
    assert "error: eval.seq_lens=24 is invalid: pos_enc=learned has model.max_len=16" in given.stderr, given.stderr[
        -2000:
    ]


GOOD_EVALUATION = {
    "checkpoint": {"file": "checkpoints/best.ckpt", "epoch": 1, "global_step": 4},
    "train_seq_len": 8,
    "n": 64,
    "lengths": {"8": {"acc": 0.5, "ci": [0.38, 0.62], "untrained_positions": False}, "16": {"refused": "why"}},
    "earlier": [],
}


@pytest.mark.parametrize(
    "change",
    [
        {"lengths": {"0": {"refused": "x"}}},
        {"lengths": {"8": "0.5"}},
        {"lengths": {"8": {"acc": "0.5", "ci": [0.4, 0.6]}}},
        {"lengths": {"8": {"acc": 0.5, "ci": "ab"}}},
        {"lengths": {"8": {"acc": 0.5, "ci": [0.4, "0.6"]}}},
        {"lengths": {"8": {"acc": 0.5, "ci": [0.4, 0.5, 0.6]}}},
        {"lengths": ["8"]},
        {"checkpoint": "best"},
        {"n": "64"},
        {"earlier": {}},
        {"lengths": {"8": {"acc": 1.5, "ci": [0.4, 0.6], "untrained_positions": False}}},  # not an accuracy
        {"lengths": {"8": {"acc": float("nan"), "ci": [0.4, 0.6], "untrained_positions": False}}},
        {"lengths": {"8": {"acc": 0.5, "ci": [0.4, 0.6]}}},  # untrained or not: unsaid
        {"lengths": {"8": {"acc": 0.5, "ci": [0.4, 0.6], "untrained_positions": "no"}}},
        {"n": True},
        {"n": 0},
        {"earlier": [{"checkpoint": {}, "n": 64, "lengths": {"8": {"acc": 2}}}]},  # an earlier table too
        {"checkpoint": {}},  # which model: file, epoch and step
        {"train_seq_len": "8"},
        {"lengths": {"²": {"refused": "why"}}},  # a digit to str.isdigit, not to int()
        {"n": 10**400},  # was: OverflowError in the report's interval
        {"lengths": {"9" * 5000: {"refused": "why"}}},  # was: ValueError (int() of 5000 digits), a traceback
    ],
)
def test_an_evaluation_json_not_of_the_shape_this_program_writes_is_refused(tmp_path, change) -> None:
    """evaluation.json is read back as input (the report sets its numbers beside the run's): every field of the
    shape `record` writes is checked, and a file that differs is refused, never half read."""
    from attnlab.evaluate import read_evaluation

    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(GOOD_EVALUATION))
    assert read_evaluation(path) == GOOD_EVALUATION
    path.write_text(json.dumps({**GOOD_EVALUATION, **change}))
    with pytest.raises(ConfigError, match="is not an evaluation this program wrote"):
        read_evaluation(path)


def test_a_figure_that_cannot_be_written_leaves_the_evaluation_as_it_was(learned_run, tmp_path) -> None:
    run = fresh_copy(learned_run, tmp_path / "run")
    evaluate_run(run, {**EV, "seq_lens": [4]})
    before = (run / "evaluation.json").read_bytes()
    (run / "length_generalization.png").unlink()
    (run / "length_generalization.png").mkdir()  # where the figure goes
    with pytest.raises(ConfigError, match=r"length_generalization.png cannot be written there \(Is a directory\)"):
        evaluate_run(run, {**EV, "seq_lens": [2]})
    assert (run / "evaluation.json").read_bytes() == before


def test_without_tensorboard_files_no_images_are_claimed(learned_run, tmp_path) -> None:
    run = fresh_copy(learned_run, tmp_path / "run")
    for events in run.glob("events.out.tfevents.*"):  # a run of logger=csv
        events.unlink()
    proc = evaluate(f"run_dir={run}", "eval.seq_lens=[4]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == f"written to {run}/evaluation.json, {run}/length_generalization.png"
    assert not list(run.glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("out", "args", "said"),
    [("a.png", ["--layer", "3"], "error: --layer=3 is invalid: the model has 1 layers: give 0..0"),
     ("a.png", ["--head", "-1"], "error: --head=-1 is invalid: the model has 1 heads per layer: give 0..0"),
     ("a.xyz", [], "is invalid: give a file name ending in one of .eps,"),
     (".", [], "is invalid: give a file name ending in one of .eps,"),  # a folder
     ("a.png", ["--layer", "x"], "error: argument --layer: invalid int value: 'x' (python scripts/plot_attention"),
     ("a.png", ["--ckpt", "nope.ckpt"], "error: --ckpt='nope.ckpt' is invalid: no such checkpoint file"),
     ("sub/a.png", [], None)],
)  # fmt: skip
def test_plot_attention_draws_or_says_why_not(learned_run, tmp_path, out, args, said) -> None:
    plot = [str(ROOT / "scripts" / "plot_attention.py"), str(learned_run), str(tmp_path / out), *args]
    proc = subprocess.run([*python(), *plot], capture_output=True, text=True, cwd=tmp_path, env=CLI_ENV)
    if said is None:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (tmp_path / out).read_bytes().startswith(b"\x89PNG")
    else:
        assert proc.returncode == 1 and said in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("n_val", "why"),
    # one class (an IndexError picking one of each): refused as at a run's start
    [(1, "its saved config's data.n_val=1 is invalid: must be an integer >= 2: a sequence of each class"),
     (-1, "its saved config's data.n_val=-1 is invalid: must be an integer >= 2"),  # (a traceback generating it)
     (10**10, "its saved config's data.seq_len=8 is invalid: needs about ")],  # torch: "can't allocate memory"
)  # fmt: skip
def test_plot_attention_of_a_crafted_record_is_one_line(learned_run, tmp_path, n_val, why) -> None:
    """A run's record whose data.n_val no run could have had (a crafted or older record): a traceback, now one
    line."""
    run = fresh_copy(learned_run, tmp_path / "run")
    config = run / "config.json"
    config.write_text(re.sub(r'"n_val": \d+', f'"n_val": {n_val}', config.read_text()))
    plot = [str(ROOT / "scripts" / "plot_attention.py"), str(run), str(tmp_path / "a.png")]
    proc = subprocess.run([*python(), *plot], capture_output=True, text=True, cwd=tmp_path, env=CLI_ENV)
    said = f"error: run_dir='{run}' is invalid: {why}"
    assert proc.returncode == 1 and proc.stderr.strip().startswith(said) and len(proc.stderr.splitlines()) == 1, (
        proc.stderr
    )
    assert not (tmp_path / "a.png").exists()


def test_a_checkpoint_of_another_model_is_refused_before_it_is_built(learned_run, tmp_path, monkeypatch) -> None:
    """A checkpoint whose settings are not the run's: the model was built from them first (a crafted 10^9 layers
    filled the memory, silently, in evaluate.py and plot_attention.py), then compared. Compared first now."""
    import attnlab.module

    ckpt = torch.load(learned_run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["model"]["num_layers"] = 10**9
    torch.save(ckpt, tmp_path / "crafted.ckpt")

    def never(**_):
        raise AssertionError("the model was built from the checkpoint's settings")

    monkeypatch.setattr(attnlab.module, "LitClassifier", never)
    with pytest.raises(ConfigError) as refused:
        load_module(tmp_path / "crafted.ckpt", run_config(learned_run), "eval.ckpt")
    assert "was trained with other settings: model.num_layers=1000000000 (this run: 1)" in str(refused.value)


def test_a_record_with_no_test_sequences_is_one_line(learned_run, tmp_path) -> None:
    """A record crafted with `data.n_test: 0` and eval.n unset: Hydra's "Error executing job" line, then the
    Wilson interval's ValueError, naming no record; one line now."""
    run = fresh_copy(learned_run, tmp_path / "run")
    config = run / "config.json"
    config.write_text(re.sub(r'"n_test": \d+', '"n_test": 0', config.read_text()))
    proc = evaluate(f"run_dir={run}", "eval.seq_lens=[8]", cwd=tmp_path)
    said = f"error: run_dir='{run}' is invalid: its saved config's data.n_test=0 gives no test sequences: give eval.n"
    assert proc.returncode == 1 and proc.stderr.splitlines() == [said], proc.stderr


def test_help_shows_evaluates_own_keys_not_trains_groups(tmp_path) -> None:
    proc = evaluate("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("Score a trained run's tested checkpoint") and "run_dir: ???" in proc.stdout
    assert "== Configuration groups ==" not in proc.stdout  # (data=, model=, ...: evaluate refuses them)


class Knows(torch.nn.Module):
    """A classifier right on the sequences it was given, class 0 on any other: 1.0 tells the set scored."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.x, self.y, self.head = x, y, torch.nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        same = (x.flatten(1)[:, None] == self.x.flatten(1)[None]).all(-1)  # (B, N): which known sequence it is
        label = torch.where(same.any(1), self.y[same.float().argmax(1)], 0)
        return torch.nn.functional.one_hot(label, 2).float()


@pytest.mark.parametrize(
    ("n", "limit", "tested", "own"),
    [
        (128, None, None, True),
        (64, None, None, False),
        (128, 1.0, None, True),
        (128, 1, None, False),
        (128, 0.5, None, False),
        (128, 4, None, True),
        # the count the test scored, where known, decides: under DDP each process drops its share's remainder
        (128, None, 127, False),
        (128, 1, 128, True),
    ],
)
def test_the_training_length_is_scored_on_the_runs_own_test_set_only_as_its_test_scored_it(n, limit, tested, own):
    """eval.n = data.n_test: the run's own test set (the data module's); another n: a fresh set, as at other
    lengths, not a set of that size drawn from the test set's seed (neither the run's own nor a fresh one). A test
    cut by trainer.limit_test_batches scored a part of its set: the whole set's score was given as the run's own,
    beside a test/acc of another n, with another verdict; a fresh set now (1 is one batch of 4; 1.0 and 4 all)."""
    from attnlab.evaluate import score
    from attnlab.tasks import derive_seed, make_split, split_seed

    data = {"task": "halfswap", "seq_len": 8, "dim": 1, "n_test": 128, "seed": 1234, "batch_size": 32}  # 4 batches
    model = {"pos_enc": "sinusoidal"}
    trainer = {"limit_test_batches": limit, "fast_dev_run": False}
    seed = split_seed("test", 0, 1234) if own else derive_seed(1234, "test", 8)
    net = Knows(*make_split("halfswap", n, 8, 1, seed))
    ev = {"seq_lens": [8], "n": n, "batch_size": 256, "untrained": "refuse"}
    assert score(net, {"data": data, "model": model, "trainer": trainer}, ev, tested)["8"]["acc"] == 1.0


def test_a_runs_config_linked_from_outside_is_not_read(learned_run, tmp_path) -> None:
    """evaluate read the run's config before its link check (the refusal quoted the outside file's keys), and
    plot_attention never checked: both refuse the link before reading anything."""
    run = Path(shutil.copytree(learned_run, tmp_path / "run"))
    outside = Path(shutil.move(run / "config.json", tmp_path / "outside.json"))
    outside.write_text(outside.read_text().replace("{", '{"secret": 1, ', 1))
    (run / "config.json").symlink_to(outside)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    said = f"run_dir='{run}' is invalid: holds a link to outside it (config.json)"
    with pytest.raises(ConfigError, match=re.escape(said)):
        evaluate_run(run, {"seq_lens": [8], "n": None, "batch_size": 256, "untrained": "refuse"})
    plot = [str(ROOT / "scripts" / "plot_attention.py"), str(run), str(tmp_path / "a.png")]
    proc = subprocess.run([*python(), *plot], capture_output=True, text=True, cwd=tmp_path, env=CLI_ENV)
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: {said}"
    assert not (tmp_path / "a.png").exists() and {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(
    ("script", "args", "left"),
    [
        ("evaluate.py", ["run_dir={run}", "eval.seq_lens=[8,16]"], "evaluation.json and the figure are each whole, "
         "the old or the new; run it again to score the lengths"),
        ("plot_attention.py", ["{run}", "{run}/attention.png"], "the figure is whole, the old or the new; run it again "
         "to draw it"),
    ],
)  # fmt: skip
def test_a_signal_stops_evaluate_and_plot_attention_in_one_line(learned_run, sig, script, args, left) -> None:
    """SIGTERM ended them without a word (exit -15), SIGINT with a traceback; the run's files are as they were."""
    import signal

    before = {p: p.read_bytes() for p in learned_run.rglob("*") if p.is_file()}
    script = [str(ROOT / "scripts" / script), *(a.format(run=learned_run) for a in args)]
    code, said = signalled_after_imports(script, sig)
    assert code == 128 + signal.Signals[sig] and said == [f"interrupted ({sig}): {left}"]
    assert {p: p.read_bytes() for p in learned_run.rglob("*") if p.is_file()} == before
