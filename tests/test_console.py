"""What a run and a sweep print: quiet by default, everything with verbose=true."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest

from attnlab.console import hide_lightning_warnings, lightning_messages

from .conftest import TINY, compose_train, read_metrics, run_train

QUIET = [a for a in TINY if not a.startswith(("trainer.enable_", "diagnostics"))]  # the defaults: progress on, ...
NOISE = (
    "GPU available",
    "litlogger",
    "srun",
    "log_every_n_steps",
    "Restoring states",
    "Test metric",
    "Trainable params",
)


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "sweep"])
def test_a_reader_that_has_gone_does_not_fail_the_run(tmp_path, multirun: bool) -> None:
    """`train.py ... | head -1` (or `| true`): the first print after the reader left raised BrokenPipeError, which
    failed the run (marked FAILED before it trained, or a finished run exiting 1 with "traceback in FAILED", a file
    never written), and every job of a sweep. The run (and sweep) goes on and ends as it would; its lines go nowhere."""
    import subprocess

    from .conftest import CLI_ENV, TRAIN, python

    where = f"hydra.sweep.dir={tmp_path / 'out'}" if multirun else f"hydra.run.dir={tmp_path / 'out'}"
    args = [*python(), str(TRAIN), *(["-m", "seed=0,1"] if multirun else []), *TINY, where]
    proc = subprocess.Popen(args, cwd=tmp_path, env=CLI_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # gone before anything was printed
    err = proc.stderr.read()
    assert proc.wait() == 0, err[-2000:]
    runs = sorted((tmp_path / "out").glob("seed=*")) if multirun else [tmp_path / "out"]
    assert len(runs) == (2 if multirun else 1) and all(read_metrics(run)["epochs"] == 1 for run in runs)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_output_that_cannot_be_written_does_not_fail_the_run(tmp_path) -> None:
    """`train.py > /dev/full`: the first print failed with ENOSPC and the run with it, said as "cannot write <its
    folder>/...", which blamed the run's own files. The run goes on, saying once on stderr where its output went."""
    import subprocess

    from .conftest import CLI_ENV, TRAIN, python

    with open("/dev/full", "w") as full:
        args = [*python(), str(TRAIN), *TINY, f"hydra.run.dir={tmp_path / 'run'}"]
        proc = subprocess.run(args, cwd=tmp_path, env=CLI_ENV, stdout=full, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    note = "note: output to file descriptor 1 cannot be written (No space left on device): sent to /dev/null"
    assert proc.stderr.count(note) == 1 and read_metrics(tmp_path / "run")["epochs"] == 1


def test_a_run_prints_its_folder_a_line_per_epoch_and_one_closing_line(tmp_path) -> None:
    run = tmp_path / "run"
    # cold: "done in" counts from the process's start, imports included (checked below)
    proc = run_train(*QUIET, "trainer.max_epochs=2", "progress=plain", f"hydra.run.dir={run}", cwd=tmp_path, cold=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    metrics = read_metrics(run)
    assert len(lines) == 5, proc.stdout
    assert lines[0] == f"[attnlab] output folder: {run}"
    for epoch, line in enumerate(lines[1:3]):
        assert line.startswith(f"epoch {epoch + 1}/2 step {4 * (epoch + 1)} ")
        # the epoch's own train/acc (the module computes it after the callbacks' epoch end)
        assert f"train/acc {metrics['history']['train/acc'][epoch]:.4f}" in line
        assert f"val/acc {metrics['history']['val/acc'][epoch]:.4f}" in line
    done = re.fullmatch(
        r"\[attnlab\] done in ([\d.]+) s: test/acc ([\d.]+), shuffled .* \(tested epoch (\d) of 2\)", lines[3]
    )
    assert done and float(done[2]) == round(metrics["test/acc"], 4), lines[3]
    assert int(done[3]) == metrics["tested_checkpoint"]["epoch"] and len(lines[3]) <= 100
    assert lines[4] == f"[attnlab] files in {run}"
    assert not (run / "train.log").exists()  # what a run shows is on the console; no empty log beside it
    # counted from process start, imports included: at least the time from process start to the first step
    # (counted from train()'s start it would be less; the line rounds to 0.1 s)
    assert float(done[1]) + 0.05 >= max(metrics["startup_seconds"], metrics["fit_seconds"])
    assert not any(n in proc.stdout + proc.stderr for n in NOISE), proc.stdout + proc.stderr


def test_an_experiment_run_without_m_says_it_is_one_run_of_a_sweep(tmp_path) -> None:
    """`experiment=limitations` without -m trained one model without a word, with one torch thread (the sweep's
    launcher divides the cores among its jobs: a single run has the machine)."""
    run = tmp_path / "run"
    args = ["experiment=limitations", *TINY, "+trainer.max_steps=1", "verbose=true", f"hydra.run.dir={run}"]
    proc = run_train(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.startswith(
        "[attnlab] note: the config sweeps data, model.pos_enc, seed (hydra.sweeper.params): this is one run of it, "
        "with the values given; add -m for the sweep\n"
    )
    assert read_metrics(run)["global_step"] == 1
    proc = run_train(f"resume={run}", "trainer.max_steps=2", cwd=tmp_path)  # a resume of it: no note (nor -m advice)
    assert proc.returncode == 0 and "note:" not in proc.stderr, proc.stderr[-2000:]
    assert read_metrics(run)["global_step"] == 2


def test_verbose_shows_the_config_and_lightnings_summaries(tmp_path) -> None:
    proc = run_train(*QUIET, "verbose=true", "progress=plain", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "  seq_len: 8\n" in proc.stdout  # the resolved config
    for shown in ("Trainable params", "Test metric", "Restoring states"):
        assert shown in out, shown


def test_the_rich_bar_counts_epochs_from_one(tmp_path) -> None:
    proc = run_train(*QUIET, "trainer.max_epochs=2", "progress=rich", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Epoch 2/2" in proc.stdout and "Epoch 0/" not in proc.stdout, proc.stdout[-2000:]


def test_a_sweep_prints_a_line_per_finished_job_and_its_verdicts(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *QUIET, "data=uniform,halfswap", "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"[attnlab] sweep of 4 jobs in {sweep}"
    for k, line in enumerate(lines[1:5]):  # progress: how many are done, not the job's own number
        assert re.fullmatch(
            rf"\[attnlab\] {k + 1}/4 done: data=\w+,seed=\d: test/acc [\d.]+ \(tested epoch 1 of 1, [\d.]+ s\)", line
        ), line
    assert lines[5].split() == ["task", "n", "test/acc", "verdict"]  # the verdicts, a line per cell
    cells = {line.split()[0]: line.split()[1:] for line in lines[6:8]}
    mean = sum(read_metrics(sweep / f"data=uniform,seed={s}")["test/acc"] for s in (0, 1)) / 2
    assert cells.keys() == {"uniform", "halfswap"} and cells["uniform"][:2] == ["2", f"{mean:.3f}"]
    assert re.fullmatch(r"\[attnlab\] sweep done in [\d.]+ s: 4/4 jobs ok", lines[8])
    assert lines[9:] == [
        f"[attnlab] report: {sweep / 'summary.md'}",
        f"[attnlab] curves: tensorboard --logdir {sweep / 'tensorboard'}",
    ]
    assert not any(n in proc.stdout + proc.stderr for n in (*NOISE, "[HYDRA]")), proc.stdout + proc.stderr


def test_a_sweep_jobs_line_is_one_write(tmp_path, monkeypatch) -> None:
    """Under PYTHONUNBUFFERED=1 (containers, CI) `print` wrote a job's line and its newline apart, and two workers'
    lines ran together on the sweep's console ("...0.7 s)[attnlab] 2/42 done: ..."). Each is one write now."""
    import sys
    from types import SimpleNamespace

    from attnlab.console import announce_end

    class Writes:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def write(self, text: str) -> int:
            self.calls.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", writes := Writes())
    tested = {"file": "checkpoints/best.ckpt", "epoch": 2, "global_step": 8}
    metrics = {"test/acc": 1.0, "tested_checkpoint": tested, "epochs": 2, "ended_by": "max_epochs", "global_step": 8}
    announce_end(metrics, tmp_path / "seed=0", 0.5, SimpleNamespace(num=0))
    assert writes.calls == ["[attnlab] 0/? done: seed=0: test/acc 1.0000 (tested epoch 2 of 2, 0.5 s)\n"]


@pytest.mark.parametrize("in_allocation", [False, True])
def test_lightnings_srun_hint_only_inside_a_slurm_allocation(in_allocation, tmp_path, monkeypatch) -> None:
    """With SLURM installed (`srun` on PATH) outside an allocation, Lightning's hint to prepend srun is wrong
    for attnlab (hydra/launcher=slurm reaches the cluster) and is not shown; inside an allocation it is.
    (attnlab.console sets its filters when imported, with the process's environment: set again here.)"""
    import pytorch_lightning as pl

    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    for name in [n for n in os.environ if n.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    if in_allocation:
        monkeypatch.setenv("SLURM_JOB_ID", "7")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # every warning, each time, but for attnlab's filters:
        hide_lightning_warnings()
        pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    hints = [w for w in shown if "The `srun` command is available" in str(w.message)]
    assert len(hints) == in_allocation


def test_a_warning_is_shown_once_per_process_not_once_per_run() -> None:
    """Python's once-per-place record of warnings survives a run's message settings (a sweep's jobs in one
    process, each inside lightning_messages, say a repeated warning once)."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")  # Python's default: once per place
        for _ in range(3):
            with lightning_messages(verbose=False):
                warnings.warn("the same warning each run", UserWarning, stacklevel=1)
    assert len(shown) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"], [(False, True), (True, True), (False, True)]),
     # epoch 2: 2 of its 4 steps, no validation, no train/loss
     (["trainer.max_epochs=2", "+trainer.max_steps=6"], [(True, True), (False, False)])],
)  # fmt: skip
def test_an_epoch_line_shows_only_what_its_epoch_logged(tmp_path, capsys, args, expected) -> None:
    """No val/* for an epoch that did not validate, no train/loss where none of its steps logged one (TINY: 4
    steps an epoch, train/loss every 4th): Lightning's bar metrics would repeat the last epoch's."""
    from attnlab.train import train

    metrics = train(compose_train(tmp_path, *TINY, "progress=plain", "trainer.enable_progress_bar=true", *args))
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [("val/loss" in line, "train/loss" in line) for line in lines] == expected, lines
    assert all("train/acc" in line for line in lines)
    if "+trainer.max_steps=6" in args:  # the closing line says what cut the last epoch short
        assert metrics["ended_by"] == "max_steps" and metrics["global_step"] == 6
        assert "(tested epoch 1 of 2; trainer.max_steps ended it at step 6)" in out, out
    else:
        assert "(tested epoch 2 of 3)\n" in out, out  # (validated at epoch 2 only: its checkpoint is tested)


@pytest.mark.parametrize(("before", "after", "shown"), [(4, 8, True), (8, 10, False)])
def test_an_epochs_train_loss_is_shown_when_logged_even_if_equal_to_the_last(capsys, before, after, shown) -> None:
    """The line dropped train/loss when it equalled the previous epoch's value (0.0 once a model has learned): it
    is dropped only when none of the epoch's steps logged one (every log_every_n_steps=4 here)."""
    from types import SimpleNamespace

    from attnlab.console import EpochLines

    lines = EpochLines()
    trainer = SimpleNamespace(global_step=before, log_every_n_steps=4, is_global_zero=True, max_epochs=3)
    lines.get_metrics = lambda trainer, module: {"train/loss": 0.0, "train/acc": 1.0}
    lines.on_train_epoch_start(trainer, None)
    trainer.current_epoch, trainer.global_step = 0, after
    lines.on_train_epoch_end(trainer, None)
    lines.on_train_end(trainer, None)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"epoch 1/3 step {after} ") and ("train/loss 0.0000" in line) is shown, line


def test_a_sweep_jobs_count_is_of_the_jobs_finished_by_its_own_end(tmp_path: Path, monkeypatch) -> None:
    """k/N counted the metrics.json files on disk when the line was printed: two jobs finishing together each
    counted the other ("2/6 done" twice). Counted by when each was written, to the clock's nanosecond: the file
    system's own stamp is coarser (a kernel tick), and two jobs on two cores written within one tick both said
    "2/4" (tests/test_sweeps.py::test_processes_launcher, once)."""
    import time

    from attnlab.console import finished_by
    from attnlab.run_folder import write_json_atomic
    from attnlab.sweep_record import write_jobs

    sweep = tmp_path / "sweep"
    names = [f"seed={n}" for n in range(4)]
    sweep.mkdir()
    write_jobs(sweep, [[n] for n in names], names)
    clock = iter([10**18 + 2, 10**18 + 1, 10**18 + 3])  # seed=1 finished first, then seed=0, then seed=2
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    for name in names[:3]:  # seed=3 not yet
        (sweep / name).mkdir()
        write_json_atomic(sweep / name / "metrics.json", {})
    jobs = [{"dir": n} for n in names]
    assert [finished_by(sweep / n, jobs) for n in names] == [2, 1, 3, 0]
