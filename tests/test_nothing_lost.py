"""Nothing lost: run folders of their own, signals in every phase, resumes that cannot corrupt a run,
sweeps whose exit code tells the truth and that can be continued. (docs/reliability.md: the matrix.)"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

import attnlab.train
from attnlab import resume, run_folder
from attnlab.config import run_config, to_plain
from attnlab.errors import ConfigError, Interrupted
from attnlab.naming import hydra_quote, job_dirname
from attnlab.train import train

from .conftest import (
    CLI_ENV,
    ROOT,
    TINY,
    TRAIN,
    compose_train,
    image_steps,
    python,
    read_metrics,
    refused_in_process,
    run_train,
    scalar_steps,
    scalar_values,
    tensorboard_run,
)

# 64 steps per epoch: long enough to be killed in the middle of one.
LONGER = [*TINY, "data.n_train=4096", "data=halfswap", "model.pos_enc=sinusoidal"]
# A new run from a checkpoint saved inside an epoch: refused
INSIDE = r"was saved inside an epoch \(a signal's stop, a budget's cut\): continue that run with resume=<its folder>,"
RESULT_KEYS = (
    "val/acc_best",
    "test/acc",
    "test/loss",
    "test/acc_shuffled",
    "epochs",
    "global_step",
    "tested_checkpoint",
)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def assert_same_run(a: Path, b: Path) -> None:
    ma, mb = read_metrics(a), read_metrics(b)
    assert [ma[k] for k in RESULT_KEYS] == [mb[k] for k in RESULT_KEYS]
    assert ma["history"] == mb["history"]  # every epoch's train/acc over all its batches, however it was cut
    for name in ("best.ckpt", "last.ckpt"):
        assert same_weights(a / "checkpoints" / name, b / "checkpoints" / name), name


def start(*args: str, cwd: Path, sigkill: bool = False) -> subprocess.Popen:
    """`python scripts/train.py ARGS`, running; `sigkill`: the test SIGKILLs it and acts at once (python itself)."""
    return subprocess.Popen(
        [*python(cold=sigkill), str(TRAIN), *args], cwd=cwd, env=CLI_ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    wait_until(path.exists, proc, f"{path} never appeared", timeout)


def wait_until(happened: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Until `happened()` (an event of `proc`: a file written, a line printed), while `proc` runs."""
    deadline = time.time() + timeout
    while not happened():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, what
        time.sleep(0.01)


def logged_after(run_dir: Path, tag: str, step: int) -> Callable[[], bool]:
    """A check: the run's TensorBoard files hold `tag` at a step after `step` (read again only when they grew)."""
    sizes: dict[Path, int] = {}

    def check() -> bool:
        now = {p: p.stat().st_size for p in run_dir.glob("events.out.tfevents.*")}
        if now == sizes:
            return False
        sizes.clear()
        sizes.update(now)
        return max(scalar_steps(run_dir, tag), default=-1) > step

    return check


def job_dir(sweep: Path, item: str, proc: subprocess.Popen | None = None, timeout: float = 300) -> Path:
    """The folder of the one job whose overrides include `item` (e.g. seed=1); waits for it while `proc` runs."""
    deadline = time.time() + timeout
    while True:
        found = [p for p in sweep.iterdir() if item in p.name.split(",")] if sweep.is_dir() else []
        if found or proc is None:
            (one,) = found
            return one
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, f"no job {item} in {sweep}"
        time.sleep(0.01)


def seed_of(job: str) -> str:
    return next(item for item in job.split(",") if item.startswith("seed="))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run, trained through scripts/train.py (so it has Hydra's .hydra/ record).
    Tests take a copy (`own_copy`) and may do anything to it."""
    tmp = tmp_path_factory.mktemp("cli_run")
    proc = run_train(*TINY, f"hydra.run.dir={tmp / 'run'}", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


@pytest.fixture
def own_copy(cli_run: Path, tmp_path: Path) -> Path:
    """A copy of `cli_run` for this test alone."""
    return Path(shutil.copytree(cli_run, tmp_path / "run"))


@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished sweep of two tiny jobs (seed=0,1) of one step each, through scripts/train.py, with an extra
    Lightning argument (`+trainer.max_steps=1`) in its records. Tests take a copy (`copy_sweep`)."""
    tmp = tmp_path_factory.mktemp("cli_sweep")
    proc = run_train("-m", *TINY, "seed=0,1", "+trainer.max_steps=1", f"hydra.sweep.dir={tmp / 'sweep'}", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "sweep"


def copy_sweep(cli_sweep: Path, where: Path) -> Path:
    """A copy of `cli_sweep` at `where`, for one test alone (a sweep may move: resume=<sweep> names its folder)."""
    return Path(shutil.copytree(cli_sweep, where))


# ------------------------------------------------------------------ 1. a folder of its own


def test_runs_started_together_get_folders_of_their_own(tmp_path: Path) -> None:
    procs = [start(*TINY, f"seed={s}", cwd=tmp_path) for s in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    folders = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(folders) == 2
    assert sorted(read_metrics(f)["settings"]["seed"] for f in folders) == [0, 1]
    for f in folders:  # each TensorBoard run is written by one process: events.out.tfevents.<time>.<host>.<pid>.<n>
        pids = {re.fullmatch(r".*\.(\d+)\.\d+(\.tested|\.evaluation)?", p.name)[1] for p in f.glob("events.*")}
        assert len(pids) == 1


def test_sweeps_started_together_get_folders_of_their_own(tmp_path: Path) -> None:
    procs = [start("-m", *TINY, "trainer.fast_dev_run=true", f"seed={s},{s + 10}", cwd=tmp_path) for s in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    sweeps = sorted((tmp_path / "outputs" / "multiruns").iterdir())
    assert len(sweeps) == 2
    seeds = sorted(read_metrics(job)["settings"]["seed"] for s in sweeps for job in s.glob("*seed=*"))
    assert seeds == [0, 1, 10, 11]


def test_an_explicit_folder_holding_a_run_is_refused(own_copy: Path, capsys) -> None:
    run_dir = own_copy
    before = folder_bytes(run_dir)
    err = refused_in_process(capsys, *TINY, "seed=5", f"hydra.run.dir={run_dir}")
    assert f"error: hydra.run.dir='{run_dir}' is invalid: holds another run" in err
    assert f"resume={run_dir}" in err
    assert {k: v for k, v in folder_bytes(run_dir).items() if k != run_folder.LOCK} == {
        k: v for k, v in before.items() if k != run_folder.LOCK
    }


def test_a_running_run_cannot_be_resumed_twice(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start(*TINY, "trainer.max_epochs=1000", f"hydra.run.dir={run_dir}", cwd=tmp_path)  # runs on: killed below
    try:
        wait_for(run_dir / "checkpoints" / "last.ckpt", proc)  # a run with a checkpoint to resume from
        second = run_train(f"resume={run_dir}", cwd=tmp_path)
        assert second.returncode == 1
        assert "is still running in another process" in second.stderr
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ 2. signals in every phase


class SignalAt(pl.Callback):
    """Sends the process a signal at a Lightning hook, as `kill` would at that moment."""

    def __init__(self, hook: str, sig: int = signal.SIGTERM, during_fit: bool = False) -> None:
        self.sig, self.during_fit, self.fired = sig, during_fit, False
        setattr(self, hook, self.fire)

    def fire(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if not self.fired and not (self.during_fit and trainer.sanity_checking):
            self.fired = True
            os.kill(os.getpid(), self.sig)


# 4 steps per epoch; the default diagnostics, whose state and figures a resume must also get right
PHASE_ARGS = [*TINY, "trainer.max_epochs=2", "data=halfswap", "model.pos_enc=learned", "diagnostics=true"]


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("undisturbed")
    train(compose_train(run_dir, *PHASE_ARGS))
    return run_dir


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize(
    "phase,resumed_from",
    [
        ("start-up", "no checkpoint was saved yet"),
        ("training", "from checkpoints/interrupted.ckpt (epoch 1, step 2)"),  # mid-epoch: resumes exactly
        ("validation", "step 4)"),  # finishes the epoch's validation and its checkpoints first
        ("checkpoint write", "step 4)"),
        ("test", "step 8)"),
        ("test's end", "step 8)"),  # after the last test batch: Lightning's loop no longer checks its flag
        ("metrics write", "step 8)"),
    ],
)
def test_a_signal_in_any_phase_stops_the_run_and_resume_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, undisturbed: Path, phase: str, resumed_from: str, sig: int
) -> None:
    run_dir = tmp_path / "run"
    callbacks: list[pl.Callback] = []
    if phase == "start-up":
        real_build = attnlab.train.build
        monkeypatch.setattr(attnlab.train, "build", lambda c: (os.kill(os.getpid(), sig), real_build(c))[1])
    elif phase == "training":
        callbacks.append(SignalAt("on_train_batch_end", sig))
    elif phase == "validation":
        callbacks.append(SignalAt("on_validation_batch_start", sig, during_fit=True))
    elif phase == "checkpoint write":
        callbacks.append(SignalAt("on_save_checkpoint", sig))
    elif phase == "test":
        callbacks.append(SignalAt("on_test_batch_start", sig))
    elif phase == "test's end":
        callbacks.append(SignalAt("on_test_epoch_end", sig))
    else:
        real_write = run_folder.write_json_atomic

        def write(path: Path, data: dict) -> None:  # metrics.json's, the run's last (config.json's is its first)
            if path.name == run_folder.METRICS:
                os.kill(os.getpid(), sig)
            real_write(path, data)

        monkeypatch.setattr(run_folder, "write_json_atomic", write)
    with pytest.raises(Interrupted) as stopped:
        train(compose_train(run_dir, *PHASE_ARGS), extra_callbacks=callbacks)
    assert stopped.value.exit_code == 128 + sig
    assert not (run_dir / "metrics.json").exists()
    assert run_folder.status(run_dir)[0] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    monkeypatch.undo()
    capsys.readouterr()
    train(compose_train(run_dir, *PHASE_ARGS, "resume=true"))
    said = capsys.readouterr().out.splitlines()[0]
    assert said.startswith("[attnlab] resuming") and resumed_from in said, said
    assert run_folder.status(run_dir) == ("ok", "")
    assert_same_run(undisturbed, run_dir)
    if phase == "training":  # the epoch's gradient norms so far (step 0's) travel in interrupted.ckpt, so the
        # resumed epoch's train/grad_norm averages the whole epoch's (they were dropped: steps 2-3 only)
        saved = torch.load(run_dir / "checkpoints" / "interrupted.ckpt", weights_only=True)["callbacks"]
        assert [len(state["grad_norms"]) for key, state in saved.items() if "AttentionDiagnostics" in key] == [1]


@pytest.mark.slow
def test_a_signal_stops_a_sweep_which_then_continues(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    grid = ["-m", *LONGER, "trainer.max_epochs=3", "seed=0,1,2"]
    proc = start(*grid, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    # seed=1's first epoch done: its two more epochs are the time the signal has to arrive in
    wait_for(job_dir(sweep, "seed=1", proc) / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "[attnlab] sweep stopped after " in out and " 1/3 jobs ok, 2 did not finish" in out, out
    assert f"continue with: python scripts/train.py -m resume={sweep}" in err
    rows = {seed_of(r["job"]): r["status"] for r in csv_rows(sweep / "results.csv")}
    assert rows == {"seed=0": "ok", "seed=1": "interrupted", "seed=2": "not started"}
    first = (job_dir(sweep, "seed=0") / "metrics.json").read_bytes()

    done = run_train("-m", f"resume={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 finished before, kept as they are" in done.stdout
    assert (job_dir(sweep, "seed=0") / "metrics.json").read_bytes() == first  # kept, not re-run
    assert {r["status"] for r in csv_rows(sweep / "results.csv")} == {"ok"}


def csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ 3. a resume that is refused touches nothing


@pytest.mark.parametrize(
    "args,expected",
    [
        (["data.seq_len=0"], "data.seq_len=0 is invalid: must be > 0"),
        (["model.d_model=64"], "would change model.d_model (32 -> 64), which the checkpoints depend on; only"),
        (["data=halfswap"], "would change data.task ('uniform' -> 'halfswap')"),
        (["optim.lr=0.1"], "would change optim.lr"),
    ],
)
def test_a_refused_resume_leaves_the_run_untouched(own_copy: Path, capsys, args, expected) -> None:
    """The checks of `python scripts/train.py resume=<run> ARGS`, in this process (that the process refuses
    before Hydra writes into the run: the test below). (That the budget may change:
    test_a_resumed_run_rerun_from_its_saved_config_trains_again.)"""
    run_dir = own_copy
    before = folder_bytes(run_dir)
    err = refused_in_process(capsys, f"resume={run_dir}", *args)
    assert expected in err, err[-2000:]
    assert "trainer.max_epochs" in err or "must be > 0" in err  # names what may change
    assert folder_bytes(run_dir) == before


def test_a_resume_refused_by_the_command_leaves_the_run_untouched(own_copy: Path, tmp_path: Path) -> None:
    """A process of its own: the refusal comes before Hydra writes its record into the run, and exits 1."""
    run_dir = own_copy
    before = folder_bytes(run_dir)
    refused = run_train(f"resume={run_dir}", "model.d_model=64", cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: resume={str(run_dir)!r} is invalid")
    assert "would change model.d_model (32 -> 64)" in refused.stderr
    assert folder_bytes(run_dir) == before


# ------------------------------------------------------------------ 4. the sweep's exit code tells the truth


@pytest.mark.parametrize("launcher", ["basic", "processes"])
def test_a_job_with_a_bad_checkpoint_is_refused_before_any_job_runs(
    cli_run: Path, tmp_path: Path, launcher: str
) -> None:
    """Every job's `ckpt_path` is read when the sweep checks its jobs: one that does not load refuses the
    sweep, naming the job, before anything is trained or written."""
    good = cli_run / "checkpoints" / "last.ckpt"  # a tiny run's, of 1 epoch (read only)
    sweep = tmp_path / "sweep"
    extra = [] if launcher == "basic" else ["hydra/launcher=processes", "hydra.launcher.n_jobs=2"]
    proc = run_train(
        "-m", *TINY, "trainer.max_epochs=2", f"ckpt_path={good},/nonexistent.ckpt", *extra,
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    said = proc.stderr.strip().splitlines()[-1]
    assert said.startswith("error: job 2 (") and "ckpt_path=/nonexistent.ckpt):" in said
    assert said.endswith("ckpt_path='/nonexistent.ckpt' is invalid: no such checkpoint file")
    assert not sweep.exists()  # nothing written


def test_cut_short_files_count_as_failed_and_a_continuation_mends_them(cli_sweep: Path, tmp_path: Path) -> None:
    """A job's metrics.json cut short (seed=1) or its config.json unreadable (seed=0, before any checkpoint): the
    report counts the first as failed, and `resume=<sweep>` mends both (seed=0 trains again: without a checkpoint
    nothing depends on the config it lost)."""
    sweep = copy_sweep(cli_sweep, tmp_path / "sweep")
    whole = {seed: read_metrics(job_dir(sweep, seed)) for seed in ("seed=0", "seed=1")}
    (job_dir(sweep, "seed=1") / "metrics.json").write_text('{"test/acc": 0.9')  # cut short
    report = subprocess.run(
        [*python(), str(ROOT / "scripts" / "report.py"), str(sweep)], env=CLI_ENV, capture_output=True, text=True
    )
    assert report.returncode == 1 and "metrics.json is unreadable" in report.stdout
    (job_dir(sweep, "seed=0") / "metrics.json").unlink()
    (job_dir(sweep, "seed=0") / "config.json").write_text("")
    shutil.rmtree(job_dir(sweep, "seed=0") / "checkpoints")
    again = run_train("-m", f"resume={sweep}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    for seed in ("seed=0", "seed=1"):
        assert run_folder.status(job_dir(sweep, seed)) == ("ok", "")
        assert read_metrics(job_dir(sweep, seed))["test/acc"] == whole[seed]["test/acc"]


# ------------------------------------------------------------------ 5, 6, 12: resume from anywhere, after anything


@pytest.mark.slow
def test_a_killed_sweep_job_resumes_by_its_printed_path_after_a_move(tmp_path: Path) -> None:
    """SIGKILL mid-epoch, `mv` the sweep, resume the job by its folder (which has '=' and ','): the
    result equals an uninterrupted run's, and TensorBoard holds every step once."""
    args = [*LONGER, "trainer.max_epochs=3", "trainer.log_every_n_steps=1", "diagnostics=true"]
    whole = tmp_path / "whole"
    train(compose_train(whole, *args, "seed=1"))  # in-process: the same numbers as a process of its own

    sweep = tmp_path / "sweep"
    proc = start("-m", *args, "seed=1", "model.num_heads=1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path, sigkill=True)
    job = job_dir(sweep, "num_heads=1", proc)  # the folder: the values that vary
    wait_for(job / "checkpoints" / "last.ckpt", proc)  # the first epoch's (64 steps)
    # some way into the next epoch: steps of it are in the job's TensorBoard file, which the resume must hide
    wait_until(logged_after(job, "train/loss", 64), proc, "no step of epoch 2 logged")
    proc.kill()
    proc.wait()
    moved = tmp_path / "moved"
    shutil.move(sweep, moved)
    job = moved / job.name
    resumed = run_train(f"resume={job}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout and "checkpoints/last.ckpt" in resumed.stdout
    assert f"[attnlab] the sweep's report: python scripts/report.py {shlex.quote(str(job.parent))}" in resumed.stdout
    assert_same_run(whole, job)
    steps = scalar_steps(job, "train/loss")
    assert steps == scalar_steps(whole, "train/loss") and len(steps) == len(set(steps)) == 3 * 64
    assert scalar_steps(job, "val/acc") == scalar_steps(whole, "val/acc") == [63, 127, 191]
    tested = read_metrics(whole)["tested_checkpoint"]["global_step"]  # the figures: of the tested checkpoint
    for tag in ("attention/layer0_head0", "pos_enc"):
        assert image_steps(job, tag) == image_steps(whole, tag) == [tested]
    assert scalar_steps(job, "test/acc") == scalar_steps(whole, "test/acc") == [tested]


def test_a_moved_run_keeps_its_best_checkpoint(tmp_path: Path) -> None:
    args = [*LONGER, "trainer.max_epochs=6"]
    whole = tmp_path / "whole"
    train(compose_train(whole, *args))
    part = tmp_path / "part"
    train(compose_train(part, *LONGER, "trainer.max_epochs=2"))
    moved = tmp_path / "moved"
    part.rename(moved)
    train(compose_train(moved, *args, "resume=true"))
    assert_same_run(whole, moved)
    assert (
        read_metrics(moved)["tested_checkpoint"]["file"] == "checkpoints/best.ckpt"
    )  # relative: it moves with the run


def test_a_copied_run_uses_its_own_checkpoints(tmp_path: Path) -> None:
    first = tmp_path / "first"
    train(compose_train(first, *TINY, "trainer.max_epochs=2"))
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    shutil.rmtree(first)  # the copy must not need the original
    metrics = train(compose_train(copy, *TINY, "trainer.max_epochs=3", "resume=true"))
    assert metrics["epochs"] == 3 and (copy / metrics["tested_checkpoint"]["file"]).is_file()


def test_resume_uses_the_newest_checkpoint_that_loads(tmp_path: Path, capsys) -> None:
    """A kill during the very first last.ckpt write: last.ckpt is missing (or cut short), best.ckpt is there."""
    args = [*TINY, "trainer.max_epochs=3", "data=halfswap", "model.pos_enc=learned"]
    whole = tmp_path / "whole"
    train(compose_train(whole, *args))
    run_dir = tmp_path / "run"
    train(compose_train(run_dir, *TINY, "trainer.max_epochs=1", "data=halfswap", "model.pos_enc=learned"))
    (run_dir / "metrics.json").unlink()
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])  # cut short
    train(compose_train(run_dir, *args, "resume=true"))
    assert "from checkpoints/best.ckpt (epoch 1, step 4)" in capsys.readouterr().out
    assert_same_run(whole, run_dir)


def test_a_kill_between_the_last_epochs_best_and_last_checkpoint_leaves_last_ckpt_final(tmp_path: Path, capsys) -> None:
    """The final epoch wrote best.ckpt, then the run was killed before last.ckpt (seen in a chaos sweep): the
    resume has nothing left to train, so last.ckpt must still become the final weights, not stay an epoch behind."""
    args = [*TINY, "trainer.max_epochs=2", "data=halfswap", "model.pos_enc=learned"]
    whole, run_dir, first = tmp_path / "whole", tmp_path / "run", tmp_path / "first"
    train(compose_train(whole, *args))
    assert torch.load(whole / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] == 8  # epoch 2 was best
    train(compose_train(run_dir, *args))
    train(compose_train(first, *TINY, "trainer.max_epochs=1", "data=halfswap", "model.pos_enc=learned"))
    (run_dir / "metrics.json").unlink()  # killed before the test
    shutil.copyfile(first / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "last.ckpt")  # epoch 1's
    assert not same_weights(whole / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "last.ckpt")
    train(compose_train(run_dir, *args, "resume=true"))
    assert "from checkpoints/best.ckpt (epoch 2, step 8)" in capsys.readouterr().out
    assert_same_run(whole, run_dir)
    assert not list((run_dir / "checkpoints").glob("*.tmp"))


# ------------------------------------------------------------------ 7. a new run from a checkpoint is a run of its own


def test_a_run_from_a_checkpoint_is_a_run_of_its_own(tmp_path: Path) -> None:
    source = tmp_path / "source"
    train(compose_train(source, *TINY, "trainer.max_epochs=2"))
    ckpt = source / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"has trained 2 epochs already; set trainer.max_epochs > 2"):
        train(compose_train(tmp_path / "none", *TINY, "trainer.max_epochs=2", f"ckpt_path={ckpt}"))
    with pytest.raises(ConfigError, match=r"other settings: model.d_model=32 \(this run: 16\)"):
        train(compose_train(tmp_path / "shape", *TINY, "trainer.max_epochs=3", "model.d_model=16", f"ckpt_path={ckpt}"))
    with pytest.raises(ConfigError, match=r"other settings: optim.lr=0.003 \(this run: 0.1\)"):
        train(compose_train(tmp_path / "lr", *TINY, "trainer.max_epochs=3", "optim.lr=0.1", f"ckpt_path={ckpt}"))
    inside = torch.load(ckpt, weights_only=True)  # as interrupted.ckpt is: saved inside an epoch
    inside["loops"]["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"] = False
    torch.save(inside, tmp_path / "inside.ckpt")
    with pytest.raises(ConfigError, match=INSIDE):
        train(compose_train(tmp_path / "inside", *TINY, "trainer.max_epochs=3", f"ckpt_path={tmp_path}/inside.ckpt"))
    new = tmp_path / "new"
    metrics = train(compose_train(new, *TINY, "trainer.max_epochs=3", f"ckpt_path={ckpt}"))
    shutil.rmtree(source)
    assert metrics["epochs"] == 3 and metrics["tested_checkpoint"]["file"] == "checkpoints/best.ckpt"
    assert metrics["started_from"] == {"file": str(ckpt), "epoch": 2, "global_step": 8}  # what epochs count from
    assert (new / "checkpoints" / "best.ckpt").is_file() and (new / "checkpoints" / "last.ckpt").is_file()
    # TensorBoard shows it as the new run it is: its own config and chart layout
    shown = tensorboard_run(new).Tags()["tensors"]
    assert {"config/text_summary", "custom_scalars__config__", "provenance/text_summary"} <= set(shown)


def test_a_run_from_another_tasks_checkpoint_keeps_its_weights_not_its_record(tmp_path: Path, capsys) -> None:
    """Fine-tuning halfswap from a uniform run: the weights and the epoch count go on, but the history (the
    verdict's convergence), val/acc_best and early stopping's best and count are the new run's own; a resume of
    it keeps them, and where it started from. The start says that the checkpoint was trained on other data (a
    forgotten `data=` trained the default task without a word)."""
    source = tmp_path / "uniform"
    train(compose_train(source, *TINY, "data=uniform", "trainer.max_epochs=3", "early_stop.patience=1"))
    ckpt = source / "checkpoints" / "last.ckpt"
    new = tmp_path / "halfswap"
    args = [*TINY, "data=halfswap", "early_stop.patience=1", f"ckpt_path={ckpt}"]
    capsys.readouterr()
    metrics = train(compose_train(new, *args, "trainer.max_epochs=5"))
    said = f"[attnlab] starting from {ckpt}, trained on other data: data.task='uniform' (this run: 'halfswap')\n"
    assert said in capsys.readouterr().out
    history = metrics["history"]
    assert history["step"] == [15, 19]  # epochs 4 and 5: two validations of its own, none of uniform's three
    assert metrics["epochs"] == 5  # uniform's best val/loss would have stopped it after its first (patience 1)
    assert metrics["val/acc_best"] == max(history["val/acc"]) < 0.9  # not uniform's 1.0
    assert metrics["started_from"] == {"file": str(ckpt), "epoch": 3, "global_step": 12}
    resumed = train(compose_train(new, *args, "trainer.max_epochs=6", "resume=true"))
    assert resumed["history"]["step"][:2] == [15, 19] and resumed["started_from"] == metrics["started_from"]


def test_a_resumed_run_rerun_from_its_saved_config_trains_again(own_copy: Path, tmp_path: Path, capsys) -> None:
    first = own_copy
    longer = run_train(f"resume={first}", "trainer.max_epochs=2", cwd=tmp_path)  # the budget may change
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert read_metrics(first)["epochs"] == 2
    # ... lengthened, not cut: Lightning would fail a run restored past its max_epochs, or record a budget it overran
    before = folder_bytes(first)
    err = refused_in_process(capsys, f"resume={first}", "trainer.max_epochs=1")
    assert err.strip().endswith("trainer.max_epochs=1 is invalid: last.ckpt is at epoch 2, step 8; a resume may "
                                "lengthen the budget, not cut it"), err  # fmt: skip
    assert folder_bytes(first) == before
    again = tmp_path / "again"
    proc = run_train(
        "--config-path", str(first / ".hydra"), "--config-name", "config", f"hydra.run.dir={again}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming" not in proc.stdout or "no checkpoint was saved yet" in proc.stdout
    assert_same_run(first, again)
    assert read_metrics(first)["settings"] == read_metrics(again)["settings"]
    rerun = ["python", "scripts/train.py", "--config-path", str(first / ".hydra"), "--config-name", "config"]
    assert read_metrics(again)["provenance"]["command"] == shlex.join(rerun)  # what trains it again


# ------------------------------------------------------------------ 8, 9, 10: folders and records are input too


def test_override_values_cannot_leave_the_sweep(tmp_path: Path) -> None:
    """A swept value with `../` names a job folder inside the sweep (`/` percent-encoded), nowhere else."""
    sweep = tmp_path / "a" / "b" / "sweep"
    proc = run_train(
        "-m", *TINY, "trainer.max_epochs=1", "logger.project=../../../../ESCAPED,../../../ESC2",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name != "tensorboard"]
    assert sorted(j.name for j in jobs) == ["project=..%2F..%2F..%2F..%2FESCAPED", "project=..%2F..%2F..%2FESC2"]
    assert all(run_folder.status(j)[0] == "ok" for j in jobs)
    assert not [p for p in tmp_path.rglob("*ESC*") if not p.is_relative_to(sweep)]
    assert "/" not in job_dirname("x=../../y") and job_dirname("x=a/b") != job_dirname("x=a%2Fb")


def test_resume_refuses_code_in_a_run_record(own_copy: Path, tmp_path: Path, capsys) -> None:
    run_dir = own_copy
    record = run_dir / ".hydra" / "overrides.yaml"
    pwned = tmp_path / "PWNED"
    record.write_text(
        record.read_text() + f"- +hydra.callbacks.evil._target_=os.makedirs\n- +hydra.callbacks.evil._args_=[{pwned}]\n"
    )
    err = refused_in_process(capsys, f"resume={run_dir}")
    assert "refusing its saved override '+hydra.callbacks.evil._target_=os.makedirs'" in err
    assert not pwned.exists()


def evil_notes(where: Path, target: Path) -> Path:
    """A YAML file whose hydra callbacks copy a file: loaded as a config group option, it would run."""
    notes = where / "notes.yaml"
    notes.write_text(
        "# @package _global_\n"
        f"hydra: {{callbacks: {{pwn: {{_target_: shutil.copyfile, _args_: [/etc/hostname, {target}]}}}}}}\n"
    )
    return notes


def test_a_run_record_cannot_load_a_yaml_file_from_elsewhere(own_copy: Path, tmp_path: Path) -> None:
    """The issue's attack, as written: a config group value with ../ in a run's overrides.yaml would load any
    YAML file, and its hydra.callbacks would run on `resume=`."""
    run_dir, pwned = own_copy, tmp_path / "PWNED"
    notes = evil_notes(run_dir / ".hydra", pwned)
    record = run_dir / ".hydra" / "overrides.yaml"
    item = f"experiment={'../' * 12}{str(notes.with_suffix(''))[1:]}"  # up to / from conf/experiment, then down
    record.write_text(record.read_text() + f"- {item}\n")
    before = folder_bytes(run_dir)
    proc = run_train(f"resume={run_dir}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: resume='{record}' is invalid: refusing its saved override '{item}': experiment")
    assert not pwned.exists() and folder_bytes(run_dir) == before


@pytest.mark.parametrize(
    "flags",
    [
        ["--config-path", "{record}", "--config-name", "config"],
        ["--config-path={record}", "--config-name=config"],
        ["--config-dir", "{record}", "--config-name", "config"],
    ],
    ids=["as the README writes it", "flag=value", "config-dir"],
)
def test_rerunning_a_run_from_its_saved_config_runs_no_code_from_it(own_copy: Path, tmp_path: Path, flags) -> None:
    """The README's re-run (`--config-path <run>/.hydra --config-name config`), however the flags are written:
    Hydra would instantiate a `hydra.callbacks` entry planted in the record (pathlib.Path.write_text passes
    Hydra's blocklist)."""
    marker = tmp_path / "PWNED"
    planted = {"hydra": {"callbacks": {"x": {"_target_": "pathlib.Path.write_text", "_args_": [
        {"_target_": "pathlib.Path", "_args_": [str(marker)]}, "x"]}}}}  # fmt: skip
    with (own_copy / ".hydra" / "config.yaml").open("a") as f:
        f.write(OmegaConf.to_yaml(planted))
    given = [flag.format(record=own_copy / ".hydra") for flag in flags]
    proc = run_train(*given, f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].endswith(
        "is invalid: a run's record sets the task's values only, not hydra"
    )
    assert not marker.exists() and not (tmp_path / "again").exists()


def test_a_records_group_file_cannot_set_hydras_settings(tmp_path: Path) -> None:
    """A file of the re-run's folder that a group choice picks (`data=evil`) is checked as the record is."""
    (tmp_path / "data").mkdir()
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "data" / "evil.yaml").write_text("# @package hydra\ncallbacks: {}\n")
    with pytest.raises(ConfigError, match="a run's record sets the task's values only, not @package hydra"):
        resume.check_rerun_config(["train.py", "-cd", str(tmp_path), "data=evil"])


def test_a_checkpoint_state_naming_a_file_elsewhere_is_refused_before_anything_is_touched(
    own_copy: Path, tmp_path: Path
) -> None:
    """Lightning deletes the files a ModelCheckpoint state names as its old best (and tests its best): a crafted
    `checkpoints/../../victim.txt` in last.ckpt would delete a file outside the run, a path elsewhere test it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    last = own_copy / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    for state in ckpt["callbacks"].values():
        if "best_model_path" in state:
            state["best_model_path"] = str(own_copy / "checkpoints" / ".." / ".." / "victim.txt")
    torch.save(ckpt, last)
    before = folder_bytes(own_copy)
    proc = run_train(f"resume={own_copy}", "trainer.max_epochs=20", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: resume='{last}' is invalid: its checkpoint state names "
        f"'{own_copy}/checkpoints/../../victim.txt', not one of this run's files"
    )
    assert victim.read_text() == "precious" and folder_bytes(own_copy) == before


def test_a_sweep_record_cannot_load_a_yaml_file_or_a_launcher_from_elsewhere(
    cli_sweep: Path, tmp_path: Path, capsys
) -> None:
    """The same attack through multirun.yaml's task overrides on `-m resume=`, and a launcher named by path:
    refused where scripts/train.py rewrites its argv (resume_argv, here in this process), before Hydra
    composes anything. (That the process does so: the run record's tests above.)"""
    sweep, pwned = copy_sweep(cli_sweep, tmp_path / "sweep"), tmp_path / "PWNED"
    notes = evil_notes(sweep, pwned)
    record = sweep / "multirun.yaml"
    original = record.read_text()
    for section, item in (
        ("task", f"experiment=../../../../../../..{notes.with_suffix('')}"),
        ("hydra", "hydra/launcher=../../../../../../..{notes.with_suffix('')}"),
        ("task", "data.seq_len=${oc.env:HOME}"),
    ):
        saved = OmegaConf.load(record)
        saved.hydra.overrides[section].append(item)
        OmegaConf.save(saved, record)
        before = folder_bytes(sweep)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            resume.resume_argv([str(TRAIN), "-m", f"resume={sweep}"])
        err = capsys.readouterr().err
        assert exited.value.code == 1, err[-2000:]
        assert f"refusing its saved override {item!r}" in err.strip().splitlines()[-1]
        assert not pwned.exists() and folder_bytes(sweep) == before
        record.write_text(original)


def test_a_sweeps_other_hydra_settings_are_named_and_left_out_and_it_continues(
    cli_sweep: Path, tmp_path: Path, capsys
) -> None:
    """Of a sweep's saved Hydra settings only how its jobs were launched is taken over (a record is input): the
    others, a logging level the user gave or a callback a crafted record adds, are named and left out, and the
    sweep continues (it was refused before: a sweep started with a logging setting could not be continued)."""
    sweep = copy_sweep(cli_sweep, tmp_path / "sweep")
    record = sweep / "multirun.yaml"
    saved = OmegaConf.load(record)
    extra = ["hydra.hydra_logging.root.level=INFO", "+hydra.callbacks.x._target_=os.system"]
    saved.hydra.overrides.hydra.extend(extra)
    OmegaConf.save(saved, record)
    argv = resume.resume_argv([str(TRAIN), "-m", f"resume={sweep}"])
    assert not set(extra) & set(argv), argv
    err = capsys.readouterr().err
    for item in extra:
        assert f"[attnlab] not taken over from {record}: {item!r}" in err, err
    proc = run_train("-m", f"resume={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = "(every job had finished: nothing to run, a budget given now changes none; a larger budget for one: "
    assert kept + "python scripts/train.py resume=<its folder>" in proc.stdout  # (a partly finished sweep: below)


def test_a_hydra_flag_keeps_its_value_when_a_run_is_resumed(tmp_path: Path) -> None:
    """`resume=<run> --cfg job`: `job` is --cfg's value, not an override (Hydra refused `--cfg data=...`)."""
    run = tmp_path / "run"
    assert run_train(*TINY, "seed=3", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    for flags in (["--cfg", "job"], ["--info", "config"], ["-c", "job", "--resolve"], ["--info"]):
        argv = resume.resume_argv([str(TRAIN), f"resume={run}", *flags])
        assert argv[1 : 1 + len(flags)] == flags and "seed=3" in argv and "resume=true" in argv, argv
    proc = run_train(f"resume={run}", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "seed: 3\n" in proc.stdout and "resume: true\n" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    "escape", ["../../escape", "/tmp/attnlab-escape", "a/../../escape", "", "seed=1\udcff", "a\nb"]
)
def test_jobs_json_cannot_send_a_job_outside_its_sweep(cli_sweep: Path, tmp_path: Path, escape: str) -> None:
    sweep = copy_sweep(cli_sweep, tmp_path / "deep" / "sweep")
    shutil.rmtree(job_dir(sweep, "seed=1"))  # a job to run again on resume
    jobs = json.loads((sweep / "jobs.json").read_text())
    jobs["jobs"][1]["dir"] = escape
    (sweep / "jobs.json").write_text(json.dumps(jobs))
    before = {p for p in tmp_path.rglob("*")}
    proc = run_train("-m", f"resume={sweep}", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: resume='{sweep / 'jobs.json'}' is invalid: names a job folder outside the sweep: {escape!r}"
    )
    assert {p for p in tmp_path.rglob("*")} == before and not Path("/tmp/attnlab-escape").exists()
    with pytest.raises(ConfigError, match="outside the sweep"):  # nor does the report read outside it
        from attnlab.report import collect

        collect(sweep)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("trainer.max_steps=3", "+trainer.max_steps=3"), ("++trainer.max_steps=3", "++trainer.max_steps=3"),
     ("~trainer.max_steps", None)],
)  # fmt: skip
def test_a_key_the_sweep_added_takes_a_new_value_or_goes_on_resume(cli_sweep: Path, given: str, expected) -> None:
    """The sweep was started with +trainer.max_steps=1: `trainer.max_steps=3` failed in Hydra ("Could not
    override ... use +trainer.max_steps"), `~trainer.max_steps` with "does not exist" (the `+` had been dropped)."""
    argv = resume.resume_argv([str(ROOT / "scripts" / "train.py"), "-m", f"resume={cli_sweep}", given])
    assert [a for a in argv if "trainer.max_steps" in a] == ([expected] if expected else [])


def test_a_folder_of_the_other_kind_is_refused_saying_which_it_is(cli_run: Path, cli_sweep: Path, capsys) -> None:
    """A sweep resumed without -m, a run with it, a sweep evaluated, a run reported: each refusal said only
    "not a run/sweep folder", not what the folder is and what to do with it."""

    for argv, said in (
        (["-m", f"resume={cli_run}"], "it is a run's folder: resume it without -m"),
        ([f"resume={cli_sweep}"], "it is a sweep's folder: add -m to continue the sweep, or resume one of its job"),
    ):
        with pytest.raises(SystemExit, match="1"):
            resume.resume_argv([str(ROOT / "scripts" / "train.py"), *argv])
        assert capsys.readouterr().err.strip().endswith(said + (" folders" if "sweep's" in said else ""))
    with pytest.raises(ConfigError, match=r"it is a sweep's folder: give one of its job folders$"):
        run_config(cli_sweep)
    report = [*python(), str(ROOT / "scripts" / "report.py"), str(cli_run)]
    proc = subprocess.run(report, env=CLI_ENV, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        "it is a run's folder: its results are its metrics.json"
    )
    assert not (cli_run / "summary.md").exists()


def test_a_job_folder_counts_once_and_a_folder_of_sweeps_is_not_one_sweep(cli_sweep: Path, tmp_path: Path) -> None:
    """Pooled, two copies of a sweep read as one sweep of twice the seeds (a std that shrinks); a record naming
    one folder for two jobs, as two seeds of one run."""
    from attnlab.report import collect

    sweep, _ = copy_sweep(cli_sweep, tmp_path / "sweeps" / "a"), copy_sweep(cli_sweep, tmp_path / "sweeps" / "b")
    report = [*python(), str(ROOT / "scripts" / "report.py"), str(tmp_path / "sweeps")]
    proc = subprocess.run(report, env=CLI_ENV, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        f"error: sweep_dir='{tmp_path / 'sweeps'}' is not a sweep folder: it holds no multirun.yaml"
    )
    assert not (tmp_path / "sweeps" / "summary.md").exists()
    jobs = json.loads((sweep / "jobs.json").read_text())
    jobs["jobs"][1]["dir"] = f"./{jobs['jobs'][0]['dir']}"
    (sweep / "jobs.json").write_text(json.dumps(jobs))
    with pytest.raises(ConfigError, match=r"jobs.json' is invalid: names the job folder './seed=0' twice"):
        collect(sweep)
    proc = run_train("-m", f"resume={sweep}", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].endswith(
        "names the job folder './seed=0' twice"
    )


def test_runs_and_sweeps_with_extra_trainer_arguments_resume_by_the_printed_command(
    cli_sweep: Path, tmp_path: Path
) -> None:
    """`+trainer.X` is saved as such in the records; the resume accepts it (a Lightning argument)."""
    run_dir = tmp_path / "run"
    proc = run_train(*TINY, "+trainer.accumulate_grad_batches=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_train(f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_metrics(run_dir)["epochs"] == 2 and read_metrics(run_dir)["global_step"] == 4  # 4 batches / 2
    sweep = copy_sweep(cli_sweep, tmp_path / "sweep")  # +trainer.max_steps=1 in its multirun.yaml
    shutil.rmtree(job_dir(sweep, "seed=1"))  # a job to run again
    before = json.loads((sweep / "jobs.json").read_text())["jobs"]
    proc = run_train("-m", f"resume={sweep}", "trainer.max_epochs=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 finished before, kept as they are" in proc.stdout
    assert read_metrics(job_dir(sweep, "seed=1"))["global_step"] == 1
    # the job kept as it is keeps its record; the one run again records what it ran with (the larger budget)
    after = {job["dir"]: job["overrides"] for job in json.loads((sweep / "jobs.json").read_text())["jobs"]}
    kept = next(job for job in before if "seed=0" in job["overrides"])
    assert after[kept["dir"]] == kept["overrides"] and "trainer.max_epochs=3" not in kept["overrides"]
    assert "trainer.max_epochs=3" in next(o for d, o in after.items() if d != kept["dir"])


@pytest.mark.parametrize("grid", [["seed=7"], ["seed=0,1,2"], ["seed=0"]], ids=["other", "more", "fewer"])
def test_a_continued_sweep_runs_the_jobs_it_planned(cli_sweep: Path, tmp_path: Path, grid: list[str]) -> None:
    """`-m resume=<sweep> seed=7` rewrote jobs.json with the one new job: the planned ones vanished from the
    report, and the sweep's table mixed grids. Refused, naming what the grid adds and leaves out, nothing touched."""
    sweep = copy_sweep(cli_sweep, tmp_path / "sweep")
    before = folder_bytes(sweep)
    proc = run_train("-m", f"resume={sweep}", *grid, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: resume='{sweep}' is invalid: continues the 2 jobs it planned; this grid "), last
    assert last.endswith(": start a new sweep for other values"), last
    left, added = "leaves out the jobs 'seed=", "adds the jobs '"
    assert (left in last) is (grid != ["seed=0,1,2"]) and (added in last) is (grid != ["seed=0"]), last
    assert folder_bytes(sweep) == before


@pytest.mark.parametrize(("longer", "precision"), [("12", "32-true"), ("-1", "32-true"), ("-1", "64-true")])
def test_an_epoch_a_budget_cut_short_is_finished_by_the_resume(tmp_path: Path, longer: str, precision: str) -> None:
    """+trainer.max_steps=6 stops two steps into the second epoch (4 steps each). The checkpoint saved there said
    the epoch was done: a resume with a longer budget started the third epoch (and skipped two of its batches),
    or under max_steps finished the second and counted it twice: "3 epochs" at step 10 or 8, where 12 were due.
    The resume trains the rest of the epoch: the same run, history included, as one never cut. (64-true: the
    diagnostics fed the model float32 inputs and failed the run; a resume's weights passed through float32.)"""
    args = [*TINY, "trainer.max_epochs=3", f"trainer.precision={precision}", "diagnostics=true"]
    whole = tmp_path / "whole"
    train(compose_train(whole, *args))
    run = tmp_path / "run"
    cfg = compose_train(run, *args, "+trainer.max_steps=6")
    cut = train(cfg)
    assert (cut["epochs"], cut["global_step"], cut["ended_by"]) == (2, 6, "max_steps")
    assert len(cut["history"]["train/acc"]) == 2  # the cut run's record: its second epoch's train/acc so far
    with pytest.raises(ConfigError, match=INSIDE):
        train(compose_train(tmp_path / "new", *args, f"ckpt_path={run}/checkpoints/last.ckpt"))
    train(compose_train(run, *args, f"+trainer.max_steps={longer}", "resume=true"))
    assert_same_run(whole, run)


def test_budgets_that_run_out_at_one_step_are_recorded_as_the_epochs(tmp_path: Path) -> None:
    """max_epochs=2 and max_steps=8 (4 steps an epoch) end at the same step: the record said max_steps, the closing
    line "trainer.max_steps ended it", while a resume given more steps was refused for its epochs. A run from
    another's checkpoint (8 steps an epoch) counts from there: step 14 of its third epoch is a cut."""
    metrics = train(compose_train(tmp_path / "run", *TINY, "trainer.max_epochs=2", "+trainer.max_steps=8"))
    assert (metrics["ended_by"], metrics["epochs"], metrics["global_step"]) == ("max_epochs", 2, 8)
    train(compose_train(tmp_path / "source", *TINY, "data.n_train=512"))  # 1 epoch of 8 steps
    args = [*TINY, f"ckpt_path={tmp_path / 'source' / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=3"]
    run = tmp_path / "from"
    cfg = compose_train(run, *args)
    with pytest.raises(Interrupted):  # at step 13, inside its third epoch (steps 13-16)
        train(cfg, extra_callbacks=[StopAtStep(13)])
    metrics = train(compose_train(run, *args, "+trainer.max_steps=14", "resume=true"))  # (14 >= 3 epochs x 4)
    assert (metrics["ended_by"], metrics["global_step"]) == ("max_steps", 14)


class StopAtStep(pl.Callback):
    """SIGTERM to this process once training reaches `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_both_of_whose_budgets_ran_out_is_told_how_to_train_on(tmp_path: Path) -> None:
    """Refused for its max_steps, it was told "give a larger trainer.max_steps", which a resume from an epoch's end
    refuses in turn (Lightning would train no step): +trainer.max_steps=-1 is what trains on."""
    run = tmp_path / "run"
    proc = run_train(*TINY, "trainer.max_epochs=2", "+trainer.max_steps=8", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_train(f"resume={run}", "trainer.max_epochs=3", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        "give +trainer.max_steps=-1 and the epochs in trainer.max_epochs to train on"
    ), proc.stderr[-2000:]
    proc = run_train(f"resume={run}", "trainer.max_epochs=3", "+trainer.max_steps=-1", cwd=tmp_path)
    assert proc.returncode == 0 and read_metrics(run)["global_step"] == 12, proc.stderr[-2000:]


def test_a_cut_run_stopped_in_its_test_is_tested_again_with_the_same_record(tmp_path: Path) -> None:
    """A run cut by max_steps, stopped by a signal during its test: the resume trains nothing and tests again. Its
    record lost the cut epoch ("tested epoch 1 of 1", one train/acc where the cut run had two)."""
    args = [*TINY, "trainer.max_epochs=3", "+trainer.max_steps=6"]
    whole = train(compose_train(tmp_path / "whole", *args))
    run = tmp_path / "run"
    cfg = compose_train(run, *args)
    with pytest.raises(Interrupted):
        train(cfg, extra_callbacks=[SignalAt("on_test_batch_start")])
    again = train(compose_train(run, *args, "resume=true"))
    for key in ("epochs", "global_step", "history", "tested_checkpoint", "test/acc", "ended_by"):
        assert again[key] == whole[key], key
    assert (again["epochs"], len(again["history"]["train/acc"])) == (2, 2)


@pytest.mark.parametrize(
    ("epochs", "steps", "extra"), [(2, 6, []), (3, 10, ["trainer.check_val_every_n_epoch=2"])], ids=["cut", "no-ckpt"]
)
def test_a_cut_last_epoch_is_finished_by_the_command_lines_resume(tmp_path: Path, epochs, steps, extra) -> None:
    """The command line's check before a resume read metrics.json's "epochs" (the cut epoch counted) and refused a
    cut in the last epoch as finished ("nothing is left to do"), 6 of 8 steps trained; or 10 of 12 where the cut
    saved no checkpoint (no validation in that epoch): the resume goes on from the last one."""
    whole = tmp_path / "whole"
    train(compose_train(whole, *TINY, f"trainer.max_epochs={epochs}", *extra))
    run = tmp_path / "run"
    budget = [*TINY, f"trainer.max_epochs={epochs}", *extra]
    proc = run_train(*budget, f"+trainer.max_steps={steps}", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (read_metrics(run)["epochs"], read_metrics(run)["global_step"]) == (epochs, steps)
    proc = run_train(f"resume={run}", "+trainer.max_steps=-1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_run(whole, run)
    proc = run_train(f"resume={run}", cwd=tmp_path)  # now it has finished
    assert proc.returncode == 1 and f"has finished (it has trained its trainer.max_epochs={epochs})" in proc.stderr


COUNTS = {"ready": 2, "started": 2, "processed": 1, "completed": 1}
OPTIMIZER = "epoch_loop.automatic_optimization.optim_progress"
# Edits of a cut checkpoint's fit-loop state (Lightning's loop counts, the data's position)
ODD_POSITIONS = {
    "earlier version (no epoch)": lambda fit: fit["state_dict"]["combined_loader"][0].pop("epoch"),
    "negative batches": lambda fit: fit["state_dict"]["combined_loader"][0].update(batches_done=-3),
    "text batches": lambda fit: fit["state_dict"]["combined_loader"][0].update(batches_done="2"),
    "another batch": lambda fit: fit["state_dict"]["combined_loader"][0].update(batches_done=3),
    "another epoch": lambda fit: fit["state_dict"]["combined_loader"][0].update(epoch=5),
    "no data position": lambda fit: fit["state_dict"].pop("combined_loader"),
    "no current epoch": lambda fit: fit["epoch_progress"].pop("current"),
    "text count": lambda fit: fit["epoch_progress"]["current"].update(processed="1"),
    "epoch past the run": lambda fit: fit["epoch_progress"]["current"].update(dict.fromkeys(COUNTS, 5)),
    "no batch progress": lambda fit: fit.pop("epoch_loop.batch_progress"),
    "optimizer steps": lambda fit: fit[OPTIMIZER]["optimizer"]["step"]["total"].update(completed=100),
    "text stepped": lambda fit: fit["epoch_loop.state_dict"].update(_batches_that_stepped="x"),
}


@pytest.mark.parametrize("edit", ODD_POSITIONS.values(), ids=ODD_POSITIONS)
def test_a_checkpoint_whose_training_position_does_not_read_is_refused(tmp_path: Path, edit: Callable) -> None:
    """Odd loop counts or data positions in a checkpoint resumed at another batch without a word (-3, no epoch),
    or failed inside Lightning with a traceback: refused in one line, as a resume and as a `ckpt_path`."""
    run = tmp_path / "run"
    cfg = compose_train(run, *TINY, "trainer.max_epochs=3", "+trainer.max_steps=6")
    train(cfg)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    edit(ckpt["loops"]["fit_loop"])
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    shutil.copy(run / "checkpoints" / "last.ckpt", tmp_path / "crafted.ckpt")
    (run / "checkpoints" / "best.ckpt").unlink()
    before = folder_bytes(run)
    why = r"is invalid: its training position is not one this version writes \("
    again = compose_train(run, *TINY, "trainer.max_epochs=3", "+trainer.max_steps=-1", "resume=true")
    with pytest.raises(ConfigError, match=rf"^resume='{run}/checkpoints/last.ckpt' {why}"):
        resume.plan(to_plain(again), run, recorded=True)
    new = compose_train(tmp_path / "new", *TINY, "trainer.max_epochs=3", f"ckpt_path={tmp_path}/crafted.ckpt")
    with pytest.raises(ConfigError, match=rf"^ckpt_path='{tmp_path}/crafted.ckpt' {why}"):
        resume.plan(to_plain(new), tmp_path / "new", recorded=True)
    assert folder_bytes(run) == before


def test_a_run_under_max_steps_is_not_continued_from_an_epochs_end_into_a_false_record(tmp_path: Path, capsys) -> None:
    """Under +trainer.max_steps Lightning restarts from an epoch's end as if inside it: a resume with more epochs
    (or a new run from that checkpoint) trained no step, and metrics.json said it had trained the epoch, with a
    train/acc of 0.0. Refused, saying how to go on; by epochs (max_steps -1) the resume trains every step."""
    run = tmp_path / "run"
    proc = run_train(*TINY, "trainer.max_epochs=2", "+trainer.max_steps=10000", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = folder_bytes(run)
    why = "is invalid: from last.ckpt, saved at an epoch's end, Lightning would train no step under max_steps"
    err = refused_in_process(capsys, f"resume={run}", "trainer.max_epochs=3")
    assert err.strip().splitlines()[-1].startswith(f"error: trainer.max_steps=10000 {why}"), err
    new = [*TINY, "+trainer.max_steps=100", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=3"]
    err = refused_in_process(capsys, *new, f"hydra.run.dir={tmp_path / 'new'}")
    assert err.strip().splitlines()[-1].startswith(f"error: trainer.max_steps=100 {why}"), err
    err = refused_in_process(capsys, f"resume={run}", "trainer.max_epochs=3", "+trainer.max_steps=3")
    cut = "error: trainer.max_steps=3 is invalid: last.ckpt is at step 8; a resume may lengthen the budget, not cut it"
    assert err.strip().splitlines()[-1] == cut, err  # (max_steps may change on resume, as max_epochs may: longer)
    assert folder_bytes(run) == before and not (tmp_path / "new").exists()
    proc = run_train(f"resume={run}", "trainer.max_epochs=3", "+trainer.max_steps=-1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_metrics(run)
    assert (metrics["epochs"], metrics["global_step"]) == (3, 12)  # 4 steps an epoch
    assert len(metrics["history"]["train/acc"]) == 3 and 0.0 not in metrics["history"]["train/acc"]


def test_a_sweep_under_max_steps_continues_keeping_its_finished_jobs(tmp_path: Path) -> None:
    """The refusal of a continuation from an epoch's end under max_steps is for the jobs that would train: a
    finished job a continued sweep keeps as it is was refused too."""
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, "seed=0,1", "+trainer.max_steps=10000", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.rmtree(sweep / "seed=1")  # to run again, from scratch
    proc = run_train("-m", f"resume={sweep}", "trainer.max_epochs=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 finished before, kept as they are" in proc.stdout
    assert [read_metrics(sweep / f"seed={n}")["global_step"] for n in (0, 1)] == [4, 12]  # kept; trained 3 epochs


def test_a_sweep_with_its_own_subdir_continues_with_a_larger_budget(tmp_path: Path) -> None:
    """The check that a continuation runs the planned jobs compares the folders the jobs run in: with the
    sweep's own `hydra.sweep.subdir`, a larger budget was refused as "a grid that adds and leaves out" jobs."""
    sweep, subdir = tmp_path / "sweep", "hydra.sweep.subdir=s${seed}"
    proc = run_train("-m", *TINY, "seed=0,1", subdir, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sweep / "s1" / "metrics.json").unlink()
    proc = run_train("-m", f"resume={sweep}", "trainer.max_epochs=2", subdir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_metrics(sweep / "s1")["epochs"] == 2 and sorted(p.name for p in sweep.glob("s?")) == ["s0", "s1"]


def test_a_folder_named_with_an_interpolation_is_refused_not_written_elsewhere(
    own_copy: Path, tmp_path: Path, capsys
) -> None:
    """Hydra reads `${` in hydra.run.dir / hydra.sweep.dir again when it sets the job's folder: a run into, or a
    resume of, `a${oc.env:HOME}` claimed that folder and wrote into `a/<HOME>`. Refused in one line instead."""
    named = own_copy.with_name("run${oc.env:HOME}")
    own_copy.rename(named)
    before = folder_bytes(named)
    err = refused_in_process(capsys, f"resume={named}")
    assert err.strip().splitlines()[-1] == (
        f"error: resume={str(named)!r} is invalid: Hydra would read '${{' in a folder's name as an interpolation "
        "and write elsewhere: rename the folder"
    )
    fresh = tmp_path / "new${oc.env:HOME}"
    err = refused_in_process(capsys, *TINY, f"hydra.run.dir={hydra_quote(str(fresh))}")
    assert err.strip().splitlines()[-1].startswith(f"error: hydra.run.dir={str(fresh)!r} is invalid: Hydra would")
    sweep = f"{tmp_path}/sweep${{oc.env:HOME}}"
    proc = run_train("-m", *TINY, "seed=0,1", f"hydra.sweep.dir={hydra_quote(sweep)}", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: hydra.sweep.dir={sweep!r} is invalid: Hydra")
    assert folder_bytes(named) == before and sorted(p.name for p in tmp_path.iterdir()) == [named.name]


def test_a_folder_named_with_a_variable_is_refused_not_written_elsewhere(tmp_path: Path, capsys, monkeypatch) -> None:
    """Lightning's TensorBoard logger expands `$NAME` in its folder: a run into `d$HOME` wrote its checkpoints and
    metrics.json there, and every TensorBoard file into `d/<HOME>`. Refused in one line instead."""
    fresh = tmp_path / "d$HOME"
    err = refused_in_process(capsys, *TINY, f"hydra.run.dir={hydra_quote(str(fresh))}")
    assert err.strip().splitlines()[-1] == (
        f"error: hydra.run.dir={str(fresh)!r} is invalid: TensorBoard's logger would read '$NAME' in a folder's path "
        "as a variable and write elsewhere: rename it"
    )
    inside = tmp_path / "w$HOME"  # a relative folder, run from a working folder named so: its absolute path counts
    inside.mkdir()
    monkeypatch.chdir(inside)
    err = refused_in_process(capsys, *TINY, "hydra.run.dir=r")
    assert err.strip().splitlines()[-1].startswith("error: hydra.run.dir='r' is invalid: TensorBoard's logger"), err
    assert list(tmp_path.iterdir()) == [inside] and list(inside.iterdir()) == []
    for fine in ("a$1", "cost$"):  # no variable's name: nothing to expand
        run_folder.check_name(tmp_path / fine, "hydra.run.dir")


@pytest.mark.parametrize("value", ["${oc.env:HOME}", "${${trainer.zz}:HOME}"])
def test_a_record_calls_no_resolver(own_copy: Path, capsys, value: str) -> None:
    """A saved config (config.json) is read as plain values: `${oc.env:HOME}` in it is text, never resolved (it
    read HOME, and showed it in the refusal's comparison), also where a resolver's name is an interpolation."""
    saved = own_copy / "config.json"
    record = json.loads(saved.read_text())
    record["logger"]["project"], record["trainer"]["zz"] = value, "oc.env"
    saved.write_text(json.dumps(record))
    assert run_config(own_copy)["logger"]["project"] == value
    err = refused_in_process(capsys, f"resume={own_copy}")
    assert f"would change logger.project ({value!r} -> 'attnlab')" in err.strip().splitlines()[-1], err
    assert os.environ["HOME"] not in err


def aliases(levels: int) -> str:
    """YAML whose each level names the one below ten times: 10^levels values once expanded, in a few lines."""
    lines = ["a0: &a0 {x: 1}"]
    lines += [f"a{n}: &a{n} {{{', '.join(f'k{i}: *a{n - 1}' for i in range(10))}}}" for n in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_a_record_with_yaml_aliases_is_refused_unexpanded(own_copy: Path, capsys) -> None:
    """Hydra writes no alias: a record holding aliases of aliases (a few lines for 10^8 values) hung a resume
    reading it. Refused before they are expanded."""
    path = own_copy / ".hydra" / "overrides.yaml"  # a list of overrides: the aliases in an item's mapping
    path.write_text("- seed=0\n- " + aliases(3).replace("\n", "\n  ").rstrip() + "\n")
    before = folder_bytes(own_copy)
    err = refused_in_process(capsys, f"resume={own_copy}")
    assert "it holds a YAML alias (*name), which no record Hydra writes holds" in err.strip().splitlines()[-1], err
    assert folder_bytes(own_copy) == before


def test_a_run_of_an_earlier_schema_is_refused_naming_the_key(own_copy: Path, capsys) -> None:
    """A run whose saved config holds a key the schema no longer has (`callbacks`, before early_stop.patience and
    trainer.max_time replaced it) cannot be checked against this one: refused, naming the key, nothing touched."""
    saved = own_copy / "config.json"
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "callbacks": {}}))
    before = folder_bytes(own_copy)
    err = refused_in_process(capsys, f"resume={own_copy}")
    last = err.strip().splitlines()[-1]
    said = (
        f"error: resume='{own_copy}' is invalid: its config.json does not load (callbacks={{}} is invalid: unknown key"
    )
    assert last.startswith(said), err
    assert last.endswith(": cannot check that this is the same run"), err
    assert folder_bytes(own_copy) == before


def test_a_resume_without_its_saved_config_is_refused(own_copy: Path, capsys) -> None:
    """A record that cannot be read is a refusal, not a licence: without config.json nothing could tell that
    `data=halfswap` changes a uniform run."""
    (own_copy / "config.json").unlink()
    before = folder_bytes(own_copy)
    err = refused_in_process(capsys, f"resume={own_copy}", "data=halfswap")
    assert err.strip().splitlines()[-1] == (
        f"error: resume='{own_copy}' is invalid: config.json is missing or unreadable: "
        "cannot check that this is the same run"
    )
    assert folder_bytes(own_copy) == before


def test_a_run_that_failed_before_its_first_checkpoint_resumes_with_a_corrected_value(tmp_path: Path) -> None:
    """Nothing depends on the config before the first checkpoint: the resume may correct it."""
    run_dir = tmp_path / "run"
    proc = run_train(*TINY, "optim.lr=1e30", "data.n_train=64", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 1 and run_folder.status(run_dir)[0] == "failed" and not list(run_dir.rglob("*.ckpt"))
    proc = run_train(f"resume={run_dir}", "optim.lr=0.003", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_folder.status(run_dir) == ("ok", "")
    # TensorBoard (as its server reads the run): the failed attempt's step 0 hidden, this attempt's text once
    shown = tensorboard_run(run_dir)
    texts = ("config/text_summary", "custom_scalars__config__", "provenance/text_summary")
    assert {tag: [e.step for e in shown.Tensors(tag)] for tag in texts} == {tag: [0] for tag in texts}
    assert scalar_steps(run_dir, "train/loss") == sorted(set(scalar_steps(run_dir, "train/loss")))
    assert not math.isnan(scalar_values(run_dir, "train/loss")[0])


def test_a_sweep_job_that_failed_before_its_first_checkpoint_keeps_its_planned_settings(tmp_path: Path) -> None:
    """A sweep's failed job resumed on its own with another optim.lr trained it: its folder's name, jobs.json
    and the report's row then named one config and the job had trained with another. Its planned settings
    resume, another value is refused before anything is touched; a budget may still change."""
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, "data.n_train=64", "optim.lr=0.003,1e30", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    job = sweep / "lr=1e+30"

    def refused(*overrides: str) -> str:  # the resume's last line; nothing touched
        before = folder_bytes(job)
        proc = run_train(f"resume={job}", *overrides, cwd=tmp_path)
        assert proc.returncode == 1 and folder_bytes(job) == before
        return proc.stderr.strip().splitlines()[-1]

    assert refused("optim.lr=0.001") == (
        f"error: resume={str(job)!r} is invalid: is a job of the sweep in {sweep}, planned with other settings: "
        "this resume would change optim.lr (1e+30 -> 0.001); another value is a run or sweep of its own"
    )
    proc = run_train(f"resume={job}", "trainer.max_epochs=3", cwd=tmp_path)  # its own settings: trains (and fails)
    assert proc.returncode == 1 and "loss is nan" in proc.stderr
    # killed in its first moments, before it wrote its config.json: its overrides say what was planned
    (job / "config.json").unlink()
    (job / "FAILED").unlink()
    assert refused("optim.lr=0.003") == (
        f"error: resume={str(job)!r} is invalid: is a job of the sweep in {sweep} that stopped before it wrote its "
        "config.json: it resumes with the settings its sweep planned, and 'optim.lr=0.003' may change one; another "
        "value is a run or sweep of its own"
    )
    # its sweep's jobs.json cut short (a kill): still a job of the sweep (its multirun.yaml beside it)
    (sweep / "jobs.json").write_text('{"jobs": [')
    proc = run_train(f"resume={job}", "optim.lr=0.001", cwd=tmp_path)
    assert proc.returncode == 1 and "is a job of the sweep in" in proc.stderr.strip().splitlines()[-1], proc.stderr


@pytest.mark.parametrize("group,name", [("experiment", "limitatons"), ("debug", "fdrr")])
def test_a_misspelled_group_option_fails(tmp_path: Path, group: str, name: str) -> None:
    proc = run_train("-m", f"{group}={name}", cwd=tmp_path)
    assert proc.returncode == 1 and f"Could not find '{group}/{name}'" in proc.stderr
    assert not (tmp_path / "outputs").exists()


# ------------------------------------------------------------------ 11, 13: NaN and evaluate


@pytest.mark.parametrize("diagnostics", ["true", "false"])
def test_nan_with_one_step_per_epoch_leaves_no_checkpoint(tmp_path: Path, diagnostics: str) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY, "data.n_train=64", "data.batch_size=64", "optim.lr=1e30", f"diagnostics={diagnostics}"]
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train(compose_train(run_dir, *args))
    assert not list(run_dir.rglob("*.ckpt"))
    assert run_folder.status(run_dir)[0] == "failed"


def test_evaluate_refuses_a_failed_run(own_copy: Path) -> None:
    from attnlab.evaluate import evaluate_run

    run_dir = own_copy
    ev = {"seq_lens": [8], "n": None, "batch_size": 256, "untrained": "refuse"}
    for key, kwargs in (("eval.n", {"n": 0}), ("eval.batch_size", {"batch_size": 0})):
        with pytest.raises(ConfigError, match=f"{key}=0 is invalid"):
            evaluate_run(run_dir, {**ev, **kwargs})
    run_folder.write_marker(run_dir, run_folder.FAILED, "Traceback ...\nRuntimeError: boom\n")
    with pytest.raises(ConfigError, match=r"the run did not finish: failed \(RuntimeError: boom\)"):
        evaluate_run(run_dir, ev)
    assert run_folder.status(run_dir) == ("failed", "RuntimeError: boom")


def test_a_new_run_never_trains_over_another_runs_checkpoints(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(compose_train(run_dir, *TINY))
    before = folder_bytes(run_dir)
    with pytest.raises(ConfigError, match="holds another run's checkpoints"):
        train(compose_train(run_dir, *TINY, "seed=1"))
    assert folder_bytes(run_dir) == before


def test_a_resume_checks_what_the_checkpoint_holds(tmp_path: Path) -> None:
    """Without the saved config (a run trained by `train` outside a sweep or a script checks no record), the
    checkpoint's own hyperparameters still guard."""
    run_dir = tmp_path / "run"
    train(compose_train(run_dir, *TINY))
    (run_dir / run_folder.CONFIG).unlink()
    with pytest.raises(ConfigError, match=r"was trained with other settings: model.d_model=32 \(this run: 16\)"):
        train(compose_train(run_dir, *TINY, "model.d_model=16", "resume=true"))


def test_a_signal_after_the_results_are_written_leaves_them_standing(tmp_path: Path, monkeypatch) -> None:
    """SIGTERM as the closing line prints (metrics.json written): the process stops, the run counts as finished
    (a sweep's report and its continuation keep it), no INTERRUPTED beside its results."""
    monkeypatch.setattr(attnlab.train, "announce_end", lambda *a: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(Interrupted):
        train(compose_train(tmp_path, *TINY))
    assert run_folder.status(tmp_path) == ("ok", "") and not (tmp_path / run_folder.INTERRUPTED).exists()


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once_when_resumed(tmp_path: Path) -> None:
    """SIGKILL before any checkpoint (here: its files taken away after an epoch): the resume trains from the
    start, and TensorBoard holds each step once, the resumed attempt's."""
    train(compose_train(tmp_path, *TINY))
    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "metrics.json").unlink()
    train(compose_train(tmp_path, *TINY, "resume=true"))
    assert scalar_steps(tmp_path, "train/loss") == [3] and scalar_steps(tmp_path, "val/loss") == [3]


def test_a_resumed_run_that_is_stopped_does_not_keep_the_old_results(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = train(compose_train(run_dir, *TINY))
    with pytest.raises(Interrupted):
        train(
            compose_train(run_dir, *TINY, "trainer.max_epochs=3", "resume=true"),
            extra_callbacks=[SignalAt("on_train_batch_end")],
        )
    assert run_folder.status(run_dir)[0] == "interrupted" and not (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "metrics.previous.json").read_text())["test/loss"] == first["test/loss"]


def test_a_run_started_from_a_checkpoint_resumes_from_its_own(own_copy: Path, train_cli, tmp_path: Path) -> None:
    source = own_copy.rename(tmp_path / "data=uniform,seed=0")  # as a sweep job's: its path given as printed
    proc, run_dir = train_cli(*TINY, "trainer.max_epochs=2", f"ckpt_path={source}/checkpoints/last.ckpt")
    assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.rmtree(source)  # the resumed run needs only its own files
    resumed = run_train(f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "from checkpoints/last.ckpt (epoch 2, step 8)" in resumed.stdout
    assert read_metrics(run_dir)["epochs"] == 3


def test_a_records_start_checkpoint_outside_it_is_not_loaded_unless_given_again(
    own_copy: Path, cli_run: Path, tmp_path: Path, capsys
) -> None:
    """A run started from `ckpt_path` and stopped before its first checkpoint: its record names a file outside
    its folder, which a crafted record could point anywhere. The resume asks for it again, printing the command."""
    outside = Path(shutil.copy(cli_run / "checkpoints" / "last.ckpt", tmp_path / "x.ckpt"))
    for name in ("checkpoints", "metrics.json"):
        shutil.rmtree(own_copy / name) if name == "checkpoints" else (own_copy / name).unlink()
    record = own_copy / ".hydra" / "overrides.yaml"
    record.write_text(record.read_text() + f"- ckpt_path={outside}\n- trainer.max_epochs=3\n")
    (own_copy / "checkpoints").mkdir()
    (own_copy / "checkpoints" / "junk.ckpt").write_text("not one of the run's own")  # (it passed for one)
    err = refused_in_process(capsys, f"resume={own_copy}")
    command = f"python scripts/train.py resume={own_copy} ckpt_path={outside}"
    assert err.strip().splitlines()[-1] == (
        f"error: resume={str(own_copy)!r} is invalid: it started from ckpt_path={str(outside)!r}, outside it, which "
        f"a record may not make a run load: `{command}`"
    )
    assert [p.name for p in (own_copy / "checkpoints").iterdir()] == ["junk.ckpt"]
    proc = run_train(*shlex.split(command)[2:], cwd=tmp_path)  # the command printed, as printed
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_metrics(own_copy)["started_from"]["file"] == str(outside)


def test_a_run_started_with_a_logger_folder_resumes_when_it_is_given_again(tmp_path: Path) -> None:
    """Where a logger sends data is not taken from a record: a resume says so, and asks for it again."""
    pytest.importorskip("wandb", reason="logger=wandb needs the wandb extra: pip install -e '.[wandb]'")
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    proc = run_train(*TINY, "logger=wandb", f"logger.save_dir={logs}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_train(f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert proc.returncode == 1 and "would change logger.save_dir" in proc.stderr.strip().splitlines()[-1]
    proc = run_train(f"resume={run_dir}", "trainer.max_epochs=2", f"logger.save_dir={logs}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"not taken over from {run_dir}/.hydra/overrides.yaml: 'logger.save_dir={logs}'" in proc.stderr
    assert read_metrics(run_dir)["epochs"] == 2
    assert len(list(logs.glob("wandb/offline-run-*"))) == 2  # each attempt a wandb run of its own, where it was told


@pytest.mark.parametrize(
    "item,refused",
    [
        ("data=halfswap", None),
        ("data=halfswap,uniform", None),  # a sweep over a group, as multirun.yaml records it
        ("logger=csv,tensorboard", None),
        ("data=choice(halfswap,uniform)", None),
        ("+trainer.accumulate_grad_batches=2", None),
        ("ckpt_path=/elsewhere/a.ckpt", None),  # read only, and checked when loaded
        ("experiment=../../x/notes", "experiment may only name its options in conf/experiment/"),
        ("data=[../x]", "data may only name its options"),
        ("logger.project=${oc.env:HOME}", "a saved value must be plain"),
        ("data.n_train=${data.seq_len}", None),  # a key reference: what the run itself read (was refused)
        ("logger.project=$\\{oc.env:HOME\\}", "a saved value must be plain"),  # Hydra's escape: still one
        ("seed=1\n", "a saved value must be plain"),
        ("+hydra.callbacks.x._target_=os.system", "no hydra.*, no _target_"),
        ("hydra.searchpath=[file:///tmp]", "no hydra.*"),
        ("trainer.foo.bar=1", "may only set the project's config keys"),
    ],
)
def test_what_a_saved_override_may_say(item: str, refused: str | None) -> None:
    if refused is None:
        resume.check_saved_override(item, Path("record"))
    else:
        with pytest.raises(ConfigError, match=re.escape(refused)):
            resume.check_saved_override(item, Path("record"))


@pytest.mark.parametrize(
    "item,refused",
    [
        ("+optim=fast", None),
        ("optim=[fast,slow]", None),
        ("+optim=../data/halfswap", "optim may only name its options in conf/optim/: ['fast', 'slow']"),
        ("+optim=nope", "optim may only name its options in conf/optim/"),
        ("+notes=a", "may only set the project's config keys"),  # a file, not a group folder
        ("+data/../optim=fast", "may only set the project's config keys"),
        ("+hydra=loud", "no hydra.*"),  # conf/hydra/ holds Hydra's settings (a launcher, logging)
        ("~hydra", "no hydra.*"),
    ],
)
def test_a_config_group_a_user_added_may_be_named_by_a_record(
    item: str, refused: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group is a folder of conf/ (`+optim=fast,slow` sweeps over conf/optim/), named only by its options."""
    conf = tmp_path / "conf"
    shutil.copytree(resume.CONF, conf)
    (conf / "optim").mkdir()
    for name in ("fast", "slow"):
        (conf / "optim" / f"{name}.yaml").write_text("lr: 0.01\n")
    (conf / "notes").write_text("not a group\n")
    (conf / "hydra").mkdir()
    (conf / "hydra" / "loud.yaml").write_text("# @package _global_\nhydra: {job: {name: x}}\n")
    monkeypatch.setattr(resume, "CONF", conf)
    if refused is None:
        resume.check_saved_override(item, Path("record"))
    else:
        with pytest.raises(ConfigError, match=re.escape(refused)):
            resume.check_saved_override(item, Path("record"))


@pytest.mark.parametrize(
    "item,ok",
    [
        ("hydra/launcher=processes", True),
        ("hydra.launcher.n_jobs=2", True),
        ("hydra.launcher.partition=debug", True),
        ("hydra/launcher=../../x", False),
        ("hydra.launcher.setup=[touch /tmp/PWNED]", False),  # a shell line in the job script
        ("hydra.launcher.srun_args=[--x]", False),
        ("hydra.launcher.submitit_folder=/tmp/elsewhere/%j", False),
        ("hydra.launcher.partition=$\\{oc.env:HOME\\}", False),
    ],
)
def test_what_a_saved_launcher_setting_may_say(item: str, ok: bool) -> None:
    if ok:
        resume.check_saved_launcher(item, Path("record"))
    else:
        with pytest.raises(ConfigError, match="not a plain launcher setting"):
            resume.check_saved_launcher(item, Path("record"))


def test_links_out_of_a_run_are_refused_before_anything_is_written(own_copy: Path, tmp_path: Path, capsys) -> None:
    """A link planted in a run (its checkpoints, a file evaluate writes) would carry every write outside:
    resume and evaluate refuse the folder, and write nothing through it."""
    from attnlab.evaluate import evaluate_run

    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (own_copy / "length_generalization.png").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"holds a link to outside it \(length_generalization.png\)"):
        evaluate_run(own_copy, {"seq_lens": [8], "n": None, "batch_size": 256, "untrained": "refuse"})
    err = refused_in_process(capsys, f"resume={own_copy}", "trainer.max_epochs=2")
    assert "holds a link to outside it" in err.strip().splitlines()[-1]
    assert outside.read_text() == "keep me"


def test_the_report_reads_nothing_through_a_link_out_of_a_job(cli_sweep: Path, tmp_path: Path) -> None:
    """A FAILED linked to a file outside: its last line would be copied into results.csv and summary.md."""
    from attnlab.report import write_report

    sweep, secret = copy_sweep(cli_sweep, tmp_path / "sweep"), tmp_path / "secret.txt"
    secret.write_text("ssh-rsa AAAA secret\n")
    (job_dir(sweep, "seed=0") / "metrics.json").unlink()
    (job_dir(sweep, "seed=0") / run_folder.FAILED).symlink_to(secret)
    with pytest.raises(ConfigError, match=r"holds a link to outside it \(seed=0/FAILED\)"):
        write_report(sweep)
    assert "secret" not in (sweep / "results.csv").read_text()


def test_a_resume_compares_values_with_their_types_and_refuses_unloadable_checkpoints(own_copy: Path, capsys) -> None:
    """limit_train_batches=1 (one batch) is not 1.0 (all of them); checkpoints that exist but none loads
    are refused, never trained over from scratch."""
    err = refused_in_process(capsys, f"resume={own_copy}", "trainer.limit_train_batches=1", "trainer.max_epochs=2")
    assert "trainer.limit_train_batches (None -> 1)" in err
    before = folder_bytes(own_copy)
    for name in ("best.ckpt", "last.ckpt"):
        (own_copy / "checkpoints" / name).write_bytes(b"not a checkpoint")
    before = folder_bytes(own_copy)
    err = refused_in_process(capsys, f"resume={own_copy}", "trainer.max_epochs=2")
    assert "holds checkpoints none of which loads (last.ckpt, best.ckpt)" in err.strip().splitlines()[-1]
    assert folder_bytes(own_copy) == before


def test_a_sweep_over_a_list_setting_is_reported(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, "eval.seq_lens=[4],[8]", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = (sweep / "summary.md").read_text()
    header, *rows = [line for line in summary[: summary.index("## Length")].splitlines() if line.startswith("| ")]
    assert "eval.seq_lens" in header and len([r for r in rows if "---" not in r]) == 2


def test_resuming_a_finished_run_is_refused_not_a_silent_re_test(own_copy: Path, capsys) -> None:
    """It re-tested, rewrote metrics.json and its events, and said `done` as if it had trained."""
    before = folder_bytes(own_copy)
    err = refused_in_process(capsys, f"resume={own_copy}")
    assert err.strip().splitlines()[-1] == (
        f"error: resume='{own_copy}' is invalid: has finished (it has trained its trainer.max_epochs=1) and was "
        "tested: nothing is left to do; give a larger trainer.max_epochs to train on"
    )
    assert folder_bytes(own_copy) == before


def test_a_run_that_stopped_early_trains_nothing_more_when_resumed_unless_its_patience_grows(tmp_path: Path) -> None:
    """Lightning restores EarlyStopping's patience from the checkpoint and looks again only after another epoch:
    a resume of a stopped run trained one more epoch each time, and a larger patience was ignored."""
    run = tmp_path / "run"
    args = [*TINY, "data.n_train=512", "early_stop.patience=2", "trainer.max_epochs=30"]
    assert run_train(*args, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    first = json.loads((run / "metrics.json").read_text())
    assert first["ended_by"] == "early_stop" and first["epochs"] < 30
    before = folder_bytes(run)
    proc = run_train(f"resume={run}", cwd=tmp_path)  # (it trained another epoch: "tested epoch 7 of 7")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        f"error: resume='{run}' is invalid: has finished (early stopping ended it (early_stop.patience=2)) and was "
        "tested: nothing is left to do; give a larger early_stop.patience to train on"
    )
    assert folder_bytes(run) == before
    (run / "metrics.json").unlink()  # as if killed during its test: the resume tests it, training nothing more
    assert run_train(f"resume={run}", cwd=tmp_path).returncode == 0
    again = json.loads((run / "metrics.json").read_text())
    assert (again["epochs"], again["global_step"]) == (first["epochs"], first["global_step"])
    assert run_train(f"resume={run}", "early_stop.patience=4", cwd=tmp_path).returncode == 0
    longer = json.loads((run / "metrics.json").read_text())
    assert (
        longer["epochs"] > first["epochs"]
        and longer["history"]["val/loss"][: first["epochs"]] == first["history"]["val/loss"][: first["epochs"]]
    )


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ("seed='0", "Hydra cannot read it ("),
        ("seed=choice(0,1)", "a run's record holds one value, not a sweep's"),
        ("seed=0,1", "a run's record holds one value, not a sweep's"),
    ],
)
def test_a_saved_override_hydra_cannot_read_is_refused_naming_the_record(
    own_copy: Path, capsys, item: str, why: str
) -> None:
    """Hydra's own multi-line error ("LexerNoViableAltException", "requires --multirun") named no record."""
    record = own_copy / ".hydra" / "overrides.yaml"
    record.write_text(record.read_text() + f"- {item}\n- trainer.max_epochs=3\n")
    before = folder_bytes(own_copy)
    err = refused_in_process(capsys, f"resume={own_copy}")
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"error: resume='{record}' is invalid: refusing its saved override {item!r}: {why}")
    )
    assert folder_bytes(own_copy) == before


def test_a_resume_given_another_folder_is_refused_not_silently_kept_in_place(own_copy: Path, capsys) -> None:
    before = folder_bytes(own_copy)
    err = refused_in_process(capsys, f"resume={own_copy}", "hydra.run.dir=/tmp/elsewhere", "trainer.max_epochs=3")
    assert err.strip().splitlines()[-1] == (
        f"error: resume='{own_copy}' is invalid: continues in the folder it names; 'hydra.run.dir=/tmp/elsewhere' "
        "cannot move it (copy the folder, resume the copy)"
    )
    assert folder_bytes(own_copy) == before


@pytest.mark.parametrize("value", ["a\\b", "a\\", "it's", "a\\'b", "x\\\\y", "a,b=c", "sp ace", 'q"d', "e\\\\"])
def test_a_folder_name_reaches_hydra_verbatim(value: str) -> None:
    """Every backslash was doubled, but Hydra unescapes only those before a quote, `${` or the end: a resume of
    `run\\x` trained a new run in `run\\\\x`, and a sweep job ran outside the folder jobs.json recorded."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"hydra.run.dir={hydra_quote(value)}"])
    assert override.value() == value


def test_a_run_named_with_a_backslash_resumes_in_place(own_copy: Path, capsys) -> None:
    named = own_copy.rename(own_copy.with_name("run\\x"))
    err = refused_in_process(capsys, f"resume={named}")  # finished: refused, naming the folder as it is
    assert err.strip().splitlines()[-1].startswith(f"error: resume={str(named)!r} is invalid: has finished")
    assert not named.with_name("run\\\\x").exists()


def fit_loop_at(last_batch: bool) -> dict:
    return {"fit_loop": {"epoch_loop.batch_progress": {"is_last_batch": last_batch}}}


@pytest.mark.parametrize(
    ("ckpt", "budget", "why"),
    [
        ({"loops": fit_loop_at(True)}, {}, "it has trained its trainer.max_epochs=2"),
        # a timer (or a signal) cut epoch 2 short: it is not done, and a longer max_time trains it
        ({"loops": fit_loop_at(False)}, {}, ""),
        ({"loops": fit_loop_at(False)}, {"max_steps": 6}, "it has trained its trainer.max_steps=6"),
        ({"loops": "x"}, {}, "it has trained its trainer.max_epochs=2"),
        ({"callbacks": {"RunEarlyStopping{}": {"wait_count": 1.0}}}, {"max_epochs": 5}, "early stopping ended it"),
        ({"callbacks": {"RunEarlyStopping{}": {"wait_count": 0}}}, {"max_epochs": 5}, ""),
    ],
    ids=["epochs", "cut-by-a-timer", "max-steps", "loops-text", "float-wait", "waiting"],
)
def test_when_a_checkpoint_has_spent_its_budget(ckpt: dict, budget: dict, why: str) -> None:
    """A checkpoint saved inside its last epoch counted as a finished epoch (a resume with a longer max_time was
    refused, a max_steps run refused for max_epochs); a float wait count (Lightning compares it) was not read."""
    c = {"trainer": {"max_epochs": 2, **budget}, "early_stop": {"patience": 1}}
    assert resume.spent_budget(ckpt, c, epoch=2, step=6).startswith(why) and (
        why or not resume.spent_budget(ckpt, c, 2, 6)
    )


def test_a_finished_run_whose_last_epoch_saved_no_checkpoint_is_not_trained_again(tmp_path: Path, capsys) -> None:
    """trainer.check_val_every_n_epoch=2 of 3 epochs: the last epoch validates not, saves no checkpoint; a resume
    retrained epoch 3, tested again and wrote train/acc 0.0 for epoch 2 into the history."""
    run = tmp_path / "run"
    proc = run_train(
        *TINY, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2", f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = folder_bytes(run)
    err = refused_in_process(capsys, f"resume={run}")
    assert "has finished (it has trained its trainer.max_epochs=3) and was tested" in err.strip().splitlines()[-1]
    assert folder_bytes(run) == before


def test_the_start_note_names_only_what_makes_the_training_set(tmp_path: Path, capsys) -> None:
    """data.seed, n_test and batch_size do not change the training set (the run's seed does): they were named."""
    source = tmp_path / "source"
    train(compose_train(source, *TINY))
    ckpt = source / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    args = [*TINY, "trainer.max_epochs=2", f"ckpt_path={ckpt}"]
    train(compose_train(tmp_path / "same", *args, "data.seed=7", "data.n_test=64", "data.batch_size=32"))
    assert f"[attnlab] starting from {ckpt}\n" in capsys.readouterr().out
    train(compose_train(tmp_path / "other", *args, "seed=3"))
    assert f"[attnlab] starting from {ckpt}, trained on other data: seed=0 (this run: 3)\n" in capsys.readouterr().out


def test_a_run_is_not_put_in_a_sweeps_folder_nor_a_sweep_in_a_runs(tmp_path: Path) -> None:
    """A run given a sweep's folder (hydra.run.dir) trained there, its files beside the sweep's jobs and reports, and
    its start removed what a report was writing there; a sweep given a run's folder likewise."""
    sweep, run = tmp_path / "sweep", tmp_path / "run"
    (sweep / "s0" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (run / ".hydra").mkdir(parents=True)
    how = "choose a new folder, or continue it with `python scripts/train.py"
    for args, key, folder, other in (
        ([f"hydra.run.dir={sweep}"], "hydra.run.dir", sweep, f"sweep; {how} -m resume={sweep}`"),
        (["-m", "seed=0,1", f"hydra.sweep.dir={run}"], "hydra.sweep.dir", run, f"run; {how} resume={run}`"),
    ):
        before = sorted(folder.rglob("*"))
        proc = run_train(*args, *TINY, cwd=tmp_path)
        assert proc.returncode == 1
        assert proc.stderr.strip() == f"error: {key}='{folder}' is invalid: holds another {other}"
        assert sorted(folder.rglob("*")) == before
