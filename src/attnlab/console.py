"""What a run prints: its folder, one progress display and a closing line (a sweep job: a line at its end);
`verbose=true` adds the config, Lightning's messages, the model summary and the test table. `progress=auto`:
Rich on a terminal, a line per epoch elsewhere (a redrawn bar in a log file is thousands of lines)."""

import contextlib
import logging
import os
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_only

from attnlab.run_folder import EVALUATION, METRICS
from attnlab.sweep_record import sweep_of


def hide_lightning_warnings() -> None:
    """Lightning's warnings that say nothing to an attnlab user."""
    # Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per run; nothing for a user to do.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # A resume continues its own checkpoints folder, by design (Lightning warns that it is not empty).
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Under DDP, for each epoch-level value: attnlab logs torchmetrics' compute(), reduced over the processes already.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True")
    if "SLURM_JOB_ID" not in os.environ:  # outside an allocation the hint to prepend `srun` is wrong:
        # attnlab reaches the cluster through hydra/launcher=slurm.
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


hide_lightning_warnings()  # before any Trainer: config.check_trainer's comes before the run's


class EpochLines(ProgressBar):
    """One line per epoch, printed when the next starts (or training ends): at the callbacks'
    `on_train_epoch_end` the module has not yet computed the epoch's train/acc. A line shows what its epoch
    logged: no val/* for an epoch without a validation (check_val_every_n_epoch, cut by max_steps), no
    train/loss where none of its steps logged one; Lightning's bar metrics would repeat the last ones."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.perf_counter()
        self.pending: tuple[int, int, float, bool] | None = None  # (epoch, step, seconds, validated) of an epoch
        self.validated, self.step_before = False, 0

    def disable(self) -> None: ...  # Lightning's, on a process of rank > 0: `flush` prints on rank 0 only

    def enable(self) -> None: ...  # Lightning's contract (its Tuner calls both); nothing to do

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush(trainer, pl_module)
        self.started, self.validated = time.perf_counter(), False
        self.step_before = trainer.global_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validated |= not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.pending = (trainer.current_epoch, trainer.global_step, time.perf_counter() - self.started, self.validated)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush(trainer, pl_module)

    def flush(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pending is None or not trainer.is_global_zero:
            return
        (epoch, step, seconds, validated), self.pending = self.pending, None
        logged = self.get_metrics(trainer, pl_module).items()
        metrics = {k: v for k, v in logged if "/" in k and (validated or not k.startswith("val/"))}
        every = trainer.log_every_n_steps  # the steps that log train/loss (attnlab.module): none in this epoch?
        if step // every == self.step_before // every:  # (a value equal to the last epoch's is still shown)
            metrics.pop("train/loss", None)
        shown = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"epoch {epoch + 1}/{trainer.max_epochs} step {step} {shown} ({seconds:.1f} s)", flush=True)


class RichBar(RichProgressBar):
    """Rich's bar with epochs from 1 ("Epoch 1/10"); `_get_train_description` is the only hook (tested)."""

    def _get_train_description(self, current_epoch: int) -> str:
        label = f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"  # (config.TrainerConfig: max_epochs > 0)
        return f"{label:{len(self.validation_description)}}"  # as wide as "Validation": no flicker


def progress_bar(mode: str) -> ProgressBar:
    if mode == "auto":
        mode = "rich" if sys.stdout.isatty() else "plain"
    # Rich keeps each finished epoch's bar on the terminal (by default it redraws one bar over them)
    return {"rich": lambda: RichBar(leave=True), "tqdm": TQDMProgressBar, "plain": EpochLines}[mode]()


@contextlib.contextmanager
def lightning_messages(verbose: bool, level: int = logging.WARNING) -> Iterator[None]:
    """Lightning's info messages only when verbose; its messages of `level` and above always."""
    # "GPU available", tips, "Restoring states", ...; the profiler's report, which debug=profiler asked for, kept
    quiet = {"pytorch_lightning": level, "lightning_fabric": level, "pytorch_lightning.profilers": logging.INFO}
    saved = {name: logging.getLogger(name).level for name in quiet}
    for name, quiet_level in quiet.items() if not verbose else ():
        logging.getLogger(name).setLevel(quiet_level)
    try:
        yield
    finally:
        for name, saved_level in saved.items():
            logging.getLogger(name).setLevel(saved_level)


@rank_zero_only
def announce_start(cfg: dict[str, Any], run_dir: Path, job: Any | None) -> None:
    if job is None:
        if cfg["verbose"]:
            print(OmegaConf.to_yaml(cfg), end="")
        print(f"[attnlab] output folder: {run_dir}", flush=True)
    elif cfg["verbose"]:  # a sweep prints a line per finished job; its folder is in that line
        say(f"[attnlab] job {job.num + 1}/{len(sweep_of(run_dir)) or '?'} started: {run_dir}")


# metrics.json's `ended_by` -> the setting that ended training before trainer.max_epochs
ENDED_BY = {"early_stop": "early_stop.patience", "max_steps": "trainer.max_steps", "timer": "trainer.max_time"}


@rank_zero_only
def announce_end(metrics: dict[str, Any], run_dir: Path, seconds: float, job: Any | None) -> None:
    """The tested checkpoint's scores and which it is; a sweep job's line has the sweep's progress (k/N done)."""
    names = {"test/acc": "test/acc", "test/acc_shuffled": "shuffled", "test/loss": "loss"}
    shown = ", ".join(f"{n} {metrics[k]:.4f}" for k, n in names.items() if metrics.get(k) is not None)
    tested = metrics["tested_checkpoint"]
    which = f"tested epoch {tested['epoch']} of {metrics['epochs']}" if tested["file"] else "final weights"
    if job is None and tested["file"] and metrics["ended_by"] != "max_epochs":  # a budget may cut an epoch short
        which += f"; {ENDED_BY.get(metrics['ended_by'], 'a callback')} ended it at step {metrics['global_step']}"
    if job is None:
        print(f"[attnlab] done in {seconds:.1f} s: {shown} ({which})\n[attnlab] files in {run_dir}", flush=True)
        if sweep_of(run_dir):  # a sweep's job, resumed on its own: the sweep's tables are older than its results
            report = f"python scripts/report.py {shlex.quote(str(run_dir.parent))}"
            print(f"[attnlab] the sweep's report: {report}", flush=True)
    else:
        jobs = sweep_of(run_dir)
        done = f"{finished_by(run_dir, jobs)}/{len(jobs) or '?'}"
        acc = metrics["test/acc"]
        say(f"[attnlab] {done} done: {run_dir.name}: test/acc {acc:.4f} ({which}, {seconds:.1f} s)")


def announce_lengths(entry: dict[str, Any]) -> None:
    """A run's scores at other lengths (eval.seq_lens), as its evaluation.json holds them."""
    scores = []
    for length, result in entry["lengths"].items():
        if "acc" not in result:  # (eval.untrained=skip)
            scores.append(f"{length}: not scored")
        else:
            marked = " (untrained positions)" if result["untrained_positions"] else ""
            scores.append(f"{length}: {result['acc']:.4f}{marked}")
    print(f"[attnlab] test/acc by length ({EVALUATION}): {', '.join(scores)}", flush=True)


def say(line: str) -> None:
    """A line that a sweep's workers may print at once to one stream, in one write: `print` writes the text and
    its newline apart where stdout is unbuffered (PYTHONUNBUFFERED=1), and two workers' lines would run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def finished_by(run_dir: Path, jobs: list[dict[str, Any]]) -> int:
    """The sweep's jobs whose metrics.json was written no later than this job's: counted by time, not by what is
    on disk when the line is printed (two jobs finishing together would each count the other)."""

    def written(folder: str) -> int | None:
        with contextlib.suppress(OSError):
            return (run_dir.parent / folder / METRICS).stat().st_mtime_ns
        return None

    if (own := written(run_dir.name)) is None:
        return 0
    return sum(1 for job in jobs if (at := written(job["dir"])) is not None and at <= own)
