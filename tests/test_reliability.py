"""Faults and reproducibility: bad input, resume after a kill, signals, NaN, disk errors, same seed -> same numbers."""

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from attnlab.checkpoints import AtomicCheckpointIO
from attnlab.errors import ConfigError
from attnlab.run_folder import write_json_atomic
from attnlab.train import train

from .conftest import CLI_ENV, TINY, TRAIN, compose_train, python, read_metrics, run_train, scalar_values

# Long enough to be killed in the middle: 64 steps per epoch.
LONGER = [*TINY, "data.n_train=4096", "data.batch_size=64", "data=halfswap", "model.pos_enc=sinusoidal"]


# Through the CLI: one of each kind of refusal (every refused value: tests/test_config.py's table).
@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["model.pos_enc=rotory"],
            "error: model.pos_enc='rotory' is invalid: Invalid value 'rotory', expected one of [none, sinusoidal",
        ),
        (
            ["experiment=limitatons"],
            "error: In 'train': Could not find 'experiment/limitatons'; Available options in "
            "'experiment': length_generalization, limitations, scaling, seq_len_scan",
        ),
        (["seed=0,1"], "error: Ambiguous value for argument 'seed=0,1'; 1. To use it as a list"),
        # a resolver on the command line: refused as its record would be (it trained, then resume refused it)
        (["seed=${oc.env:HOME}"], "error: seed='${oc.env:HOME}' is invalid: ${oc.env:HOME}... would run again"),
        (["seed=${data.task}"], "error: seed='uniform' is invalid: must be of type int"),  # was: a TypeError
        (["~data"], "error: data.task='???' is invalid: is not set: choose data=<halfswap|uniform> (~data removed it)"),
        # resolving a sweep's folder: an OmegaConf error, once a traceback of 100 lines
        (["-m", "seed=0,1", "hydra.sweep.dir=${oc.env:NOPE_X}"], "error: InterpolationResolutionError: KeyError"),
        (["+model.d_modle=64"], "error: model.d_modle=64 is invalid: unknown key; model has ['d_model'"),
        (["data=halfswap", "data.seq_len=31"], "error: data.seq_len=31 is invalid: halfswap needs an even length"),
        (["resume=/nonexistent/run"], "error: resume='/nonexistent/run' is invalid: not a run folder"),
        (["ckpt_path=/nonexistent.ckpt"], "error: ckpt_path='/nonexistent.ckpt' is invalid: no such checkpoint file"),
        (["output_dir=/tmp/elsewhere"], "error: output_dir='/tmp/elsewhere' is invalid: is the folder Hydra runs the"),
        # a terminal's escape sequence in a sweep's value: refused, and the job that names it shown escaped
        (
            ["-m", "seed=0", "logger.project='a\x1b[31mb'"],
            "error: job 1 (seed=0 logger.project='a\\x1b[31mb' trainer.fast_dev_run=True): "
            "logger.project=\"'a\\x1b[31mb'\" is invalid: holds a control character (a tab, an escape, a newline)",
        ),
    ],
)
def test_bad_input_is_one_clear_line(train_cli, args: list[str], expected: str) -> None:
    proc, run_dir = train_cli(*args, "trainer.fast_dev_run=true", env={"PYTHONPROFILEIMPORTTIME": "1"})
    lines = proc.stderr.strip().splitlines()
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")]
    stderr = "\n".join(line for line in lines if not line.startswith("import time:"))
    assert proc.returncode == 1, stderr[-2000:]
    assert stderr.splitlines() == [stderr.splitlines()[0]] and stderr.startswith(expected)  # one line (Hydra's: 5-10)
    assert not run_dir.exists()  # a refused run leaves no folder behind
    # early: answered before Lightning is imported (seconds, on every refusal)
    assert "torch" in imported and "pytorch_lightning" not in imported


@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=processes", "hydra.launcher.n_jobs=2"]], ids=["basic", "processes"]
)
def test_multirun_with_one_bad_value_fails_before_any_job(tmp_path: Path, launcher: list[str]) -> None:
    """With processes the workers start once the first job passed its check (attnlab_sweeper.launcher: `start`):
    a later bad job still ends the sweep at once (that none of its processes outlives it:
    test_sweeps.py::test_nothing_of_a_sweep_outlives_it[True])."""
    sweep = tmp_path / "sweep"
    args = ("-m", *TINY, "data=halfswap", "data.seq_len=8,9", *launcher, f"hydra.sweep.dir={sweep}")
    proc = run_train(*args, cwd=tmp_path)
    assert proc.returncode == 1
    assert "error: job 2 (" in proc.stderr and "data.seq_len=9 is invalid: halfswap needs an even length" in proc.stderr
    assert not list(sweep.glob("*/metrics.json")) and not list(sweep.glob("*/events.out.tfevents.*"))


def test_corrupt_checkpoint_never_trains_from_scratch(train_cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x80\x02garbage")
    proc, run_dir = train_cli(*TINY, f"ckpt_path={bad}")
    assert (
        proc.returncode == 1
        and f"error: ckpt_path='{bad}' is invalid: not a loadable attnlab checkpoint" in proc.stderr
    )
    assert not (run_dir / "checkpoints").exists()


class RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("true",))


def shared(levels: int) -> dict:
    value: dict = {"x": 1}
    for _ in range(levels):
        value = {f"k{i}": value for i in range(10)}
    return value


GOOD = {"epoch": 1, "global_step": 8, "hyper_parameters": {"model": {"d_model": 32}, "lr": 0.003}, "state_dict": {}}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({}, None),
        ({"epoch": -7}, "ValueError: its epoch and global_step must be whole numbers >= 0"),
        ({"global_step": torch.tensor(8)}, "ValueError: its epoch and global_step must be whole numbers >= 0"),
        ({"hyper_parameters": {}}, "ValueError: its hyper_parameters must be plain values, with the model's"),
        ({"hyper_parameters": {"model": {"d_model": torch.tensor(32)}}}, "ValueError: its hyper_parameters must"),
        ({"state_dict": RunsCode()}, "refused by torch.load(weights_only=True): Trying to load unsupported GLOBAL"),
        ({"loops": "x"}, "ValueError: its loops and callbacks must be mappings"),  # was: AttributeError, a traceback
        # a pickle's shared references, each level naming the one below ten times: 10^levels values walked
        ({"hyper_parameters": {"model": {"d_model": 32}, "x": shared(3)}}, "ValueError: its hyper_parameters must"),
    ],
    ids=["good", "negative-epoch", "tensor-step", "no-model", "tensor-setting", "code", "loops-text", "shared"],
)
def test_a_checkpoint_holds_plain_counts_and_settings(tmp_path: Path, change: dict, why: str | None) -> None:
    """A crafted file: a negative epoch made a record attnlab then refused, a tensor setting passed the same-run
    check (`tensor(32) == 32` is truthy), no model settings a KeyError; PyTorch's advice to load with
    weights_only=False is not repeated."""
    from attnlab.checkpoints import read_checkpoint

    path = tmp_path / "x.ckpt"
    torch.save({**GOOD, **change}, path)
    if why is None:
        assert read_checkpoint(path, "ckpt_path")["epoch"] == 1
        return
    with pytest.raises(ConfigError) as refused:
        read_checkpoint(path, "ckpt_path")
    assert str(refused.value).startswith(f"ckpt_path='{path}' is invalid: not a loadable attnlab checkpoint (")
    assert why in str(refused.value) and "weights_only` set to `False`" not in str(refused.value)


def start(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*python(), str(TRAIN), *LONGER, *args, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        env=CLI_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_saves_and_exits_nonzero(tmp_path: Path, sig: int, code: int) -> None:
    run_dir = tmp_path / "run"
    proc = start(run_dir, "trainer.max_epochs=1000")
    wait_for(run_dir / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == code, stderr[-2000:]
    assert f"interrupted: stopped by signal {int(sig)} at step" in stderr
    assert f"resume={run_dir}" in stderr
    saved = torch.load(run_dir / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert saved["global_step"] > 0
    assert scalar_values(run_dir, "train/loss")  # flushed
    # the checkpoint named inside the folder, as the report shows it: a moved or copied run names its own
    said = f"stopped by signal {int(sig)} at step {saved['global_step']}; checkpoint: checkpoints/interrupted.ckpt"
    assert (run_dir / "INTERRUPTED").read_text() == f"{said}\n"


def test_nan_loss_stops_within_one_step(train_cli) -> None:
    proc, run_dir = train_cli(*TINY, "optim.lr=1e30")
    assert proc.returncode == 1
    assert "error: FloatingPointError: train/loss is nan at step 1 (epoch 1): " in proc.stderr  # epochs from 1
    assert (run_dir / "FAILED").is_file()
    assert not (run_dir / "checkpoints" / "best.ckpt").exists()


class GradNorms(pl.Callback):
    """The total gradient norm each optimiser step applies (after Lightning's clipping)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0]
        step = optimizer.step

        def recorded_step(closure):  # Lightning's closure: forward, backward, then its clipping
            loss = closure()
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            return step(lambda: loss)

        optimizer.step = recorded_step


@pytest.mark.parametrize("clip", [None, 0.01])
def test_gradient_clipping_bounds_the_gradient_norm(compose_cfg, clip: float | None) -> None:
    norms = GradNorms()
    train(compose_cfg(*TINY, "data=halfswap", f"trainer.gradient_clip_val={clip or 'null'}"), extra_callbacks=[norms])
    assert len(norms.norms) == 4
    if clip is None:
        assert max(norms.norms) > 0.05  # what clipping has to bound here
    else:
        assert max(norms.norms) <= clip * (1 + 1e-5)


def test_failed_checkpoint_write_leaves_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def disk_full(checkpoint, target, *args, **kwargs):
        Path(target).write_bytes(b"half a checkpoi")
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert list(tmp_path.iterdir()) == [path]  # no half-written file left behind


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_train(*TINY, f"hydra.run.dir={blocker}/run", cwd=tmp_path)
    assert proc.returncode == 1 and "Not a directory" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: hydra.run.dir='{blocker}/run' is invalid")
    assert blocker.read_text() == "not a folder"


def test_same_seed_same_numbers_in_a_fresh_process_and_in_this_one(train_cli, tmp_path: Path) -> None:
    """Seed 0 in a process of its own and in this one (after whatever other tests did here): the same
    numbers; seed 1: others."""
    args = [*TINY, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "data=halfswap", "model.pos_enc=rope"]
    args += ["diagnostics=true"]  # the default path: its shuffled accuracy draws positions from a generator of its own
    proc, a = train_cli(*args, "seed=0", cold=True)  # a fresh interpreter: nothing imported or run before
    assert proc.returncode == 0, proc.stderr[-2000:]
    b, c = tmp_path / "here0", tmp_path / "here1"
    train(compose_train(b, *args, "seed=0"))
    train(compose_train(c, *args, "seed=1"))
    losses = {run: scalar_values(run, "train/loss") for run in (a, b, c)}
    assert losses[a] == losses[b] and len(losses[a]) == 8
    keys = ("val/acc_best", "test/acc", "test/loss", "test/acc_shuffled", "diagnostics")
    assert [read_metrics(a)[k] for k in keys] == [read_metrics(b)[k] for k in keys]
    assert losses[a] != losses[c] and read_metrics(a)["test/loss"] != read_metrics(c)["test/loss"]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_during_the_imports_is_one_line_and_writes_nothing(tmp_path: Path, sig: str) -> None:
    """The seconds of imports before a run's folder exists: exit 128 + signal with one line saying that
    nothing was written (no traceback, no silent exit)."""
    from .conftest import signalled_after_imports

    code, said = signalled_after_imports([str(TRAIN), f"hydra.run.dir={tmp_path / 'run'}"], sig, cwd=tmp_path)
    assert code == 128 + signal.Signals[sig]
    assert said == [f"interrupted ({sig}) during start-up, before anything was written: nothing to resume"]
    assert not (tmp_path / "run").exists()


def test_a_run_whose_timer_ran_out_continues_with_a_longer_one(tmp_path: Path) -> None:
    """A resume that would train nothing (the restored timer of trainer.max_time has run out) is refused with one
    line; a longer max_time, which a resume may change, continues the run."""

    from attnlab import resume
    from attnlab.config import to_plain
    from attnlab.errors import ConfigError

    run_dir = tmp_path / "run"
    timer = ["trainer.max_epochs=1000", "data.n_train=4096"]
    cfg = compose_train(run_dir, *TINY, *timer, "trainer.max_time=00:00:00:01")
    first = train(cfg)
    assert (first["ended_by"] == "timer" and not first["converged"]) or first["epochs"] < 1000
    again = to_plain(compose_train(run_dir, *TINY, *timer, "trainer.max_time=00:00:00:01", "resume=true"))
    with pytest.raises(ConfigError, match=r"^trainer.max_time='00:00:00:01' is invalid: this run's timer has run"):
        resume.plan(again, run_dir, recorded=True)
    longer = compose_train(run_dir, *TINY, *timer, "trainer.max_epochs=" + str(first["epochs"] + 2),
                           "trainer.max_time=00:01:00:00", "resume=true")  # fmt: skip
    assert resume.plan(to_plain(longer), run_dir, recorded=True).own
    metrics = train(longer)
    assert metrics["epochs"] == first["epochs"] + 2 and metrics["ended_by"] == "max_epochs"
    # wherever the timer cut an epoch, the resume finished it: the same training as one never cut, validation for
    # validation (Lightning's own Timer validated the cut epoch's partial weights: one validation more, which
    # best.ckpt and early stopping could take)
    epochs = "trainer.max_epochs=" + str(metrics["epochs"])
    whole = train(compose_train(tmp_path / "whole", *TINY, "data.n_train=4096", epochs))
    assert metrics["global_step"] == whole["global_step"]
    assert metrics["history"] == whole["history"]
    assert metrics["test/acc"] == whole["test/acc"] and metrics["tested_checkpoint"] == whole["tested_checkpoint"]


class TimeUpAfter(pl.Callback):
    """The run's max_time runs out once `batches` training batches have ended (this callback runs before the
    timer's own check in the same batch): a cut at a chosen batch, whatever the machine's speed."""

    def __init__(self, batches: int) -> None:
        self.batches, self.seen = batches, 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        from attnlab.train import RunTimer

        self.seen += 1
        if self.seen == self.batches:
            for timer in (cb for cb in trainer.callbacks if isinstance(cb, RunTimer)):
                timer.time_remaining = lambda *a, **k: 0.0


HOUR = "trainer.max_time=00:01:00:00"  # TINY: 4 batches an epoch


@pytest.mark.parametrize(
    ("extra", "cut_after", "ended_by", "epochs", "steps"),
    [
        # inside an accumulation of gradients (batch 5 of 2+2+...: epoch 2's first): cut after its optimizer step
        (["+trainer.accumulate_grad_batches=2"], 5, "timer", 2, 3),
        # before min_epochs: Lightning's own stop waits for them, and so does the cut (epoch 3's first batch)
        (["+trainer.min_epochs=2"], 1, "timer", 3, 9),
        # the run's own step budget ran out at the same step: that is the one a resume must raise
        (["+trainer.max_steps=6"], 6, "max_steps", 2, 6),
    ],
    ids=["accumulating", "min-epochs", "with-max-steps"],
)
def test_where_a_timer_cuts_and_what_it_says(tmp_path, extra, cut_after, ended_by, epochs, steps) -> None:
    """A cut inside an accumulation resumed inexactly; one before min_epochs overrode it; one at the step
    max_steps also ended was recorded as the timer's, and the resume it asked for was refused for max_steps."""

    run_dir = tmp_path / "run"
    cfg = compose_train(run_dir, *TINY, "trainer.max_epochs=3", HOUR, *extra)
    cut = train(cfg, extra_callbacks=[TimeUpAfter(cut_after)])
    assert (cut["ended_by"], cut["epochs"], cut["global_step"]) == (ended_by, epochs, steps)
    if ended_by != "timer":
        return
    resumed = train(compose_train(run_dir, *TINY, "trainer.max_epochs=3", "trainer.max_time=00:02:00:00", *extra,
                                  "resume=true"))  # fmt: skip
    whole = train(compose_train(tmp_path / "whole", *TINY, "trainer.max_epochs=3", *extra))
    assert resumed["history"] == whole["history"] and resumed["test/acc"] == whole["test/acc"]
    last = [
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for d in (run_dir, tmp_path / "whole")
    ]
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[1])


@pytest.mark.parametrize(
    ("seeds", "said"),
    [
        ("1,01", "seed=01): hydra.sweep.subdir='seed=01' is invalid: job 1 has the same config: a seed or cell twice"),
        # both named by what varies (nothing): was "job='job' is invalid"
        (
            "0,0",
            "seed=0): hydra.sweep.subdir='job' is invalid: job 1 has the same overrides and folder: a value given",
        ),
    ],
)
def test_a_sweep_of_one_config_twice_is_refused(tmp_path: Path, seeds: str, said: str) -> None:
    """`seed=1,01` is one config twice: its summary would count n=2 seeds of one."""
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, f"seed={seeds}", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: job 2 (") and said in line
    assert not sweep.exists()


@pytest.mark.parametrize(
    "error,said",
    [  # a checkpoint's write: the file, not the .<random>.tmp it goes through
        (OSError(errno.ENOSPC, "No space left on device", "run/checkpoints/last.ckpt.0a1b2c3d.tmp"),
         "cannot write run/checkpoints/last.ckpt: No space left on device; earlier checkpoints are intact"),
        # a copy (shutil.copyfile, resume's catch-up of last.ckpt): the one written, not the one read
        (OSError(errno.ENOSPC, "No space left on device", "run/checkpoints/best.ckpt", None,
                 "run/checkpoints/last.ckpt.0a1b2c3d.tmp"),
         "cannot write run/checkpoints/last.ckpt: No space left on device; earlier checkpoints are intact"),
        (OSError(errno.EROFS, "Read-only file system"),
         "cannot write run: Read-only file system; earlier checkpoints are intact"),
        (ValueError("loss is nan"), "ValueError: loss is nan (traceback in run/FAILED)"),
    ],
)  # fmt: skip
def test_a_run_time_failure_is_one_line_naming_the_file_written(error: Exception, said: str) -> None:
    from attnlab.errors import run_failure

    assert run_failure(error, Path("run"), Path("run/FAILED")) == said


def test_an_atomic_write_goes_through_no_link_left_as_its_tmp(tmp_path: Path) -> None:
    """A `<file>.tmp` link left in a run or a sweep (crafted; inside it, so no check of links out refused it):
    the write landed on the file it named. An evaluation's figure overwrote best.ckpt, a report's results.csv a
    job's metrics.json."""
    (tmp_path / "metrics.json").write_text("{}")
    planted = ["results.json.tmp", f"results.json.{os.getpid()}.tmp"]  # (the names of earlier versions)
    for name in planted:
        (tmp_path / name).symlink_to("metrics.json")
    write_json_atomic(tmp_path / "results.json", {"acc": 1})
    assert (tmp_path / "metrics.json").read_text() == "{}"
    assert (tmp_path / "results.json").read_text() == '{\n  "acc": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", "results.json", *planted])


def test_two_processes_writing_one_file_each_rename_a_whole_one(tmp_path: Path) -> None:
    """Two reports of one sweep wrote results.csv through one `results.csv.tmp`: the second's open emptied the first's
    before its rename, and a results.csv of 0 bytes stood while the first said it had written it."""
    from attnlab.run_folder import replacing

    path = tmp_path / "results.csv"
    with replacing(path) as first:
        first.write_text("job,acc\ns0,1.0\n")
        with pytest.raises(KeyboardInterrupt), replacing(path) as second:  # another writer, killed after opening
            second.write_text("")
            raise KeyboardInterrupt
    assert path.read_text() == "job,acc\ns0,1.0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_a_resume_removes_the_files_a_killed_attempt_was_writing(tmp_path: Path) -> None:
    """Each write goes through a temporary file of its own: those of attempts killed mid-write (a checkpoint, the
    results) would pile up, one per kill. The next attempt, holding the folder, removes them: only attnlab's own
    (a user's `data.2024.tmp` was deleted too, and another script's figure being written beside)."""

    from attnlab.evaluate import evaluate_run
    from attnlab.train import train

    from .conftest import TINY, compose_train

    train(compose_train(tmp_path, *TINY))
    left = [tmp_path / "metrics.json.0a1b2c3d.tmp", tmp_path / "checkpoints" / "last.ckpt.ffff0000.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / "data.2024.tmp", tmp_path / "checkpoints" / "my.backup.1.tmp",
            tmp_path / "attention.png.0a1b2c3d.tmp", tmp_path / "metrics.json.backup.tmp"]  # fmt: skip
    for path in (*left, *kept):
        path.write_bytes(b"cut short")
    train(compose_train(tmp_path, *TINY, "trainer.max_epochs=2", "resume=true"))
    assert not any(path.exists() for path in left) and all(path.exists() for path in kept)
    (tmp_path / "evaluation.json.12345678.tmp").write_bytes(b"cut short")  # an evaluation's, killed
    evaluate_run(tmp_path, {"seq_lens": [8], "n": None, "batch_size": 64, "untrained": "refuse"}, "best")
    assert not (tmp_path / "evaluation.json.12345678.tmp").exists() and all(path.exists() for path in kept)


def test_a_marker_is_written_in_place_of_a_link_left_under_its_name(tmp_path: Path) -> None:
    """A `FAILED` link to the run's checkpoint, left in a crafted run: the failed run's note overwrote the weights."""
    from attnlab.run_folder import FAILED, write_marker

    (tmp_path / "best.ckpt").write_bytes(b"weights")
    (tmp_path / FAILED).symlink_to("best.ckpt")
    write_marker(tmp_path, FAILED, "RuntimeError: the loss is NaN\n")
    assert (tmp_path / "best.ckpt").read_bytes() == b"weights"
    assert not (tmp_path / FAILED).is_symlink() and (tmp_path / FAILED).read_text() == "RuntimeError: the loss is NaN\n"
