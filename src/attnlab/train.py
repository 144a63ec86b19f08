"""One training run: build from the config, fit, test the best checkpoint, write metrics.json.

Files under `output_dir`: .hydra/ (Hydra's record), config.json (the config it trains with, resolved: what a
resume, the report and an evaluation read), TensorBoard's event files (in the folder itself: TensorBoard
names the run by it), checkpoints/ (best.ckpt: lowest val/loss, the tested model; last.ckpt: every epoch;
interrupted.ckpt), evaluation.json (eval.seq_lens), metrics.json (written last, atomically: the run finished),
FAILED / INTERRUPTED (how it ended otherwise; removed when it is resumed).
"""

import contextlib
import math
import os
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, Timer
from pytorch_lightning.plugins.environments import SLURMEnvironment

from attnlab import evaluate, resume, run_folder
from attnlab.board import METRICS as HPARAM_METRICS
from attnlab.checkpoints import AtomicCheckpointIO, RunCheckpoint, catch_up_last
from attnlab.config import to_plain, training_batches, validate
from attnlab.console import announce_end, announce_lengths, announce_start, lightning_messages, progress_bar, say
from attnlab.dashboard import LAYOUT, TensorBoard, hparams_of, is_debug, write_hparams, write_tested
from attnlab.data import SyntheticDataModule
from attnlab.diagnostics import AttentionDiagnostics, describe
from attnlab.errors import ConfigError, Interrupted
from attnlab.loggers import LOGGERS
from attnlab.module import LitClassifier
from attnlab.naming import KEY_SETTINGS, lookup
from attnlab.provenance import as_markdown, provenance
from attnlab.signals import StopOnSignal
from attnlab.timing import StepClock, process_seconds
from attnlab.verdict import converged


def build(cfg: dict[str, Any]) -> tuple[SyntheticDataModule, LitClassifier]:
    return SyntheticDataModule(**cfg["data"], train_seed=cfg["seed"]), LitClassifier(model=cfg["model"], **cfg["optim"])


def set_threads(requested: int | None, hydra: Any | None) -> None:
    """`torch_threads`, else under a parallel launcher the cores this process may use (a SLURM allocation's,
    not the node's) divided among its jobs (n_jobs processes must not each start a thread per core), else
    PyTorch's default."""
    n_jobs = hydra.launcher.get("n_jobs") if hydra is not None and not requested else None
    if n_jobs not in (None, 1):
        requested = 1 if n_jobs < 0 else max(1, len(os.sched_getaffinity(0)) // n_jobs)
    if requested:
        torch.set_num_threads(requested)


def train(composed: DictConfig, extra_callbacks: Sequence[pl.Callback] = (), checked: bool = False) -> dict[str, Any]:
    """Run one experiment; returns what it writes to metrics.json. `checked`: validated already (by
    `resume.preflight` or the sweeper). Holds the folder's lock throughout; a run that does not finish leaves
    FAILED (traceback) or INTERRUPTED and raises (`Interrupted` after a signal)."""
    began = time.perf_counter()
    cfg = to_plain(composed)
    if not checked:
        validate(cfg)  # bad values fail here, before anything is built or written
    if run_folder.requeued():  # SLURM restarted this job: it resumes its own folder instead of starting over
        cfg["resume"] = True
    run_dir = Path(cfg["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    main = not run_folder.secondary_process()  # else a DDP worker Lightning started: the main process owns the folder
    if main and not cfg["resume"] and any(run_dir.glob("checkpoints/*.ckpt")):  # never train over another run's files
        why = "holds another run's checkpoints; resume it (resume=true) or use a new folder"
        raise ConfigError("output_dir", str(run_dir), why)
    with run_folder.locked(run_dir, "output_dir") if main else contextlib.nullcontext(), StopOnSignal(run_dir) as stop:
        if not main:
            return run(cfg, run_dir, stop, extra_callbacks, began)
        for marker in (run_folder.FAILED, run_folder.INTERRUPTED):  # this attempt decides how the run ends
            (run_dir / marker).unlink(missing_ok=True)
        run_folder.remove_left_writes(run_dir)
        if cfg["resume"] and (run_dir / run_folder.METRICS).exists():
            os.replace(run_dir / run_folder.METRICS, run_dir / run_folder.PREVIOUS_METRICS)

        def mark(marker: str, text: str) -> None:  # not beside this attempt's metrics.json (a signal after it)
            if not (run_dir / run_folder.METRICS).exists():
                run_folder.write_marker(run_dir, marker, text)

        try:
            return run(cfg, run_dir, stop, extra_callbacks, began)
        except Interrupted as e:
            mark(run_folder.INTERRUPTED, f"{e}\n")
            raise
        except BaseException as e:
            if stop.signum is not None:  # Lightning's way out after a signal: SystemExit
                interrupted = stop.interrupted()
                mark(run_folder.INTERRUPTED, f"{interrupted}\n")
                raise interrupted from e
            mark(run_folder.FAILED, traceback.format_exc())
            raise


def run(
    cfg: dict[str, Any], run_dir: Path, stop: StopOnSignal, extra_callbacks: Sequence[pl.Callback], began: float
) -> dict[str, Any]:
    with lightning_messages(cfg["verbose"]):
        hydra = HydraConfig.get() if HydraConfig.initialized() else None
        job = hydra.job if hydra is not None and hydra.mode == RunMode.MULTIRUN else None  # one job of a sweep
        start = resume.plan(cfg, run_dir)
        start.check_trains()  # (a sweep's job, a SLURM requeue: checked here too)
        if not run_folder.secondary_process():  # the record a resume, a report and an evaluation read
            run_folder.write_json_atomic(run_dir / run_folder.CONFIG, cfg)
        if cfg["resume"] and start.own:
            if not run_folder.secondary_process():  # (under DDP the main process owns the folder)
                catch_up_last(start.checkpoint)  # type: ignore[arg-type]
            say(f"[attnlab] resuming {run_dir} from {start.checkpoint.relative_to(run_dir)} "  # type: ignore[union-attr]
                f"(epoch {start.epoch}, step {start.step})")  # fmt: skip
        elif cfg["resume"]:
            begin = f"from {start.checkpoint}" if start.checkpoint else "from the beginning"
            say(f"[attnlab] resuming {run_dir}: no checkpoint was saved yet, starting {begin}")
        start_from = str(start.checkpoint) if start.checkpoint else None
        announce_start(cfg, run_dir, job)
        if start_from and not start.own:  # ckpt_path: another run's weights, trained on this run's data
            say(f"[attnlab] starting from {start_from}{start.note}")
        set_threads(cfg["torch_threads"], hydra if job is not None else None)  # a launcher's n_jobs: a sweep's
        pl.seed_everything(cfg["seed"], workers=True, verbose=False)
        data, module = build(cfg)
        # a sweep job prints 2 lines, unless verbose
        show_progress = cfg["trainer"]["enable_progress_bar"] and (job is None or cfg["verbose"])
        module.fresh_start = start_from is not None and not start.own  # another run's checkpoint (ckpt_path)
        job_began = began if job is not None else None  # a sweep's job: its start-up from its own start
        callbacks = RunCallbacks(cfg, run_dir, start_from, stop, extra_callbacks, show_progress, job_began)
        origin = provenance()  # the code and command of this attempt (a resume may run newer code)
        logger = make_logger(cfg, run_dir, start.step, origin)
        trainer = make_trainer(cfg, run_dir, callbacks, logger, show_progress)
        metrics, tested = fit_and_test(cfg, trainer, module, data, callbacks)
        metrics["provenance"] = origin  # git commit (and whether the tree had changes), versions, the command
        if trainer.is_global_zero:  # under DDP, one process writes the results
            if cfg["eval"]["seq_lens"]:  # the tested weights at other lengths
                scores = evaluate.score(module.net, cfg, cfg["eval"], metrics["test_sequences"])
                entry = evaluate.record(run_dir, cfg, cfg["eval"], scores, tested, "output_dir")
                if job is None:  # (a sweep's job: one line; its report has the lengths)
                    announce_lengths(entry)
            figures = callbacks.diagnostics.figures if callbacks.diagnostics else []
            record(cfg, run_dir, trainer, logger, metrics, figures)
            announce_end(metrics, run_dir, process_seconds(began) if job is None else time.perf_counter() - began, job)
        return metrics


class RunCallbacks:
    def __init__(
        self,
        cfg: dict,
        run_dir: Path,
        start_from: str | None,
        stop: StopOnSignal,
        extra: Sequence,
        progress: bool,
        began: float | None = None,
    ) -> None:
        self.start_from, self.stop = start_from, stop  # the checkpoint training continues from; the signal watch
        kept = {"dirpath": run_dir / "checkpoints", "enable_version_counter": False}
        # best.ckpt, the model the run tests: lowest val/loss so far. Not val/acc: on these tasks it reaches
        # 1.0 in an epoch or two and stays, so "best" would be the first epoch to touch it, while val/loss
        # goes on telling which weights separate the classes more surely. It is also what early_stop watches.
        self.checkpoint = RunCheckpoint(filename="best", monitor="val/loss", mode="min", **kept)
        # last.ckpt: every epoch. Not `save_last=True`, which refreshes last.ckpt only in epochs that also
        # improved the best one, so a resume could go back many epochs.
        last = RunCheckpoint(filename="last", monitor=None, **kept)
        self.clock = StepClock(began=began)
        self.all: list[pl.Callback] = [self.checkpoint, last, stop, self.clock, *extra]
        if cfg["trainer"]["max_time"]:  # (make_trainer passes Lightning's own max_time=None)
            self.all.append(RunTimer(cfg["trainer"]["max_time"]))
        if cfg["early_stop"]["patience"] is not None:  # the rule attnlab.verdict.converged applies to the history
            # Checked after each validation, not at the train epoch's end: an epoch cut short by max_steps
            # has no val/loss, and Lightning's default check would fail the run there.
            self.all.append(RunEarlyStopping("val/loss", **cfg["early_stop"], check_on_train_epoch_end=False))
        self.diagnostics = AttentionDiagnostics(describe(cfg)) if cfg["diagnostics"] else None
        if self.diagnostics:
            self.all.append(self.diagnostics)
        if progress:
            self.all.append(progress_bar(cfg["progress"]))


class RunEarlyStopping(EarlyStopping):
    """Lightning's EarlyStopping, resumed as the run's config says: its patience is the config's (a resume may
    change it; Lightning restores the checkpoint's), and a run that had stopped trains nothing more (Lightning
    would train another epoch before it looked again)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({**state_dict, "patience": self.patience})

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.wait_count >= self.patience:
            trainer.should_stop = True


class RunTimer(Timer):
    """Lightning's Timer (trainer.max_time), ending the epoch it cuts as a step budget does. Lightning's own stop
    (`trainer.should_stop`) validates the cut epoch's partial weights first, which a run never cut does not: a
    resume that finished the epoch had one validation more, and best.ckpt and early stopping's count could come
    from it. It cuts where a resume goes on exactly (after an optimizer step, not inside an accumulation of
    gradients) and not before trainer.min_epochs / min_steps (as Lightning's should_stop waits for them).
    `ran_out`: it ended the training; `max_steps`: the step budget the run was given."""

    ran_out = False
    max_steps = -1

    @property
    def state_key(self) -> str:
        return "Timer"  # Lightning's own: where resume.plan reads the time trained

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        done = batch_idx + 1  # the epoch's batches so far
        stepped = done % trainer.accumulate_grad_batches == 0 or done == trainer.num_training_batches
        least = trainer.current_epoch >= (trainer.min_epochs or 0) and trainer.global_step >= (trainer.min_steps or 0)
        if stepped and least and trainer.strategy.broadcast((self.time_remaining() or 0) <= 0):  # rank 0's clock
            self.ran_out, self.max_steps = True, trainer.max_steps
            # no public setter: the epoch loop's step budget, reached now, ends the fit after this batch
            trainer.fit_loop.epoch_loop.max_steps = trainer.global_step


def make_logger(cfg: dict[str, Any], run_dir: Path, start_step: int, origin: dict) -> Any:
    """The run's logger (logger=...); TensorBoard's also gets the config and the provenance as text."""
    # A resume hides what the attempts before it logged from its checkpoint's step on (all of it, without one).
    # A fresh run starts a session at step 0 too: TensorBoard's Python loader takes the first session start it
    # reads as the run's beginning, and purges only at a later one (else a resume's curves show twice there).
    logger = LOGGERS.get(cfg["logger"]["name"])(cfg["logger"], run_dir, start_step)
    if isinstance(logger, TensorBoard):
        writer = logger.experiment
        if not cfg["resume"] or start_step == 0:  # else an earlier attempt's, at step 0, stands
            # Text tab: the resolved config, indented so TensorBoard's markdown shows it verbatim.
            writer.add_text("config", "    " + OmegaConf.to_yaml(cfg).replace("\n", "\n    "))
            writer.add_custom_scalars(LAYOUT)
        writer.add_text("provenance", as_markdown(origin), global_step=start_step)
    return logger


def make_trainer(
    cfg: dict[str, Any], run_dir: Path, callbacks: RunCallbacks, logger: Any, show_progress: bool
) -> pl.Trainer:
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # requeue is hydra/launcher=slurm's (resume), not Lightning's own hpc_ckpt scheme
        plugins.append(SLURMEnvironment(auto_requeue=False))
    args = {
        **cfg["trainer"],
        "enable_progress_bar": show_progress,
        "enable_model_summary": cfg["trainer"]["enable_model_summary"] or cfg["verbose"],
        "max_time": None,  # RunTimer's (RunCallbacks)
    }
    trainer = pl.Trainer(**args, logger=logger, callbacks=callbacks.all, plugins=plugins, default_root_dir=str(run_dir))
    # At most a process's share of an epoch's steps (under DDP each trains its share; a world of one: all of them):
    # an epoch shorter than the interval would never log train/loss.
    share = -(-training_batches(cfg) // trainer.world_size)
    trainer.log_every_n_steps = max(1, min(cfg["trainer"]["log_every_n_steps"], share))
    return trainer


def fit_and_test(
    cfg: dict[str, Any], trainer: pl.Trainer, module: LitClassifier, data: SyntheticDataModule, callbacks: RunCallbacks
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train, then test the best checkpoint (lowest val/loss), not whatever the last epoch left; without one
    (fast_dev_run) the final weights, named so. Returns metrics.json's contents and the tested checkpoint."""
    start, stop = time.perf_counter(), callbacks.stop
    trainer.fit(module, datamodule=data, ckpt_path=callbacks.start_from, weights_only=True)
    if stop.signum is not None:  # a signal in the fit's last moments, after Lightning's last check
        raise stop.interrupted()
    fit_seconds = round(time.perf_counter() - start, 3)
    # Read before the test, whose loading of the best checkpoint restores that epoch's history and state.
    best_acc = float(module.val_acc_best.max_value)  # -inf when no validation epoch ran
    history = {k: list(v) for k, v in module.history.items()}
    # (a resume from a budget's cut that trained nothing more: the cut epoch counts, as it did in the cut run)
    epochs, steps, end = trainer.current_epoch + module.open_epoch, trainer.global_step, ended_by(trainer)
    started = module.started_from and {"file": os.path.abspath(cfg["ckpt_path"]), **module.started_from}

    best = callbacks.checkpoint.best_model_path or None
    module.loaded_from = None
    result = trainer.test(module, datamodule=data, ckpt_path=best, weights_only=True, verbose=cfg["verbose"])[0]
    if stop.signum is not None:  # a signal in the test's last batch: Lightning lets the test finish
        raise stop.interrupted()
    if best and module.loaded_from is not None:
        tested = {"file": os.path.relpath(best, trainer.default_root_dir), **module.loaded_from}
    else:
        tested = {"file": None, "epoch": trainer.current_epoch, "global_step": trainer.global_step}
    startup, early = callbacks.clock.startup_seconds, cfg["early_stop"]
    metrics = {
        "val/acc_best": best_acc if math.isfinite(best_acc) else None,  # over the whole run, resumes included
        "test/acc": result["test/acc"],  # of the tested checkpoint
        "test_sequences": module.tested_sequences,  # what test/acc is over: data.n_test, or a limited test's share
        "test/loss": result["test/loss"],
        "test/acc_shuffled": result.get("test/acc_shuffled"),  # positions shuffled; needs diagnostics=true
        # The model every test number above comes from: file (relative: the run folder can move), epoch
        # (from 1), step, and the rule that chose it.
        "tested_checkpoint": {**tested, "selected_by": "lowest val/loss" if best else "none: no checkpoint saved"},
        "epochs": epochs,  # the budget: epochs and steps trained, what ended training
        "global_step": steps,
        "ended_by": end,
        # a run from another run's checkpoint (ckpt_path): its epoch and step, which `epochs` and `global_step` count
        # from (the history, val/acc_best and convergence are this run's own); null for a run from scratch
        "started_from": started,
        "stopped_early": end == "early_stop",
        # val/loss had stopped improving (attnlab.verdict.converged: the early-stopping rule on the history)
        "converged": converged(history["val/loss"], early["patience"], early["min_delta"]),
        "history": history,  # module.HISTORY
        "fit_seconds": fit_seconds,
        "startup_seconds": startup and round(startup, 3),  # process start (a sweep's job: its start) -> first step
        "diagnostics": callbacks.diagnostics.tested if callbacks.diagnostics else {},
        "settings": {name: lookup(cfg, key) for name, key in KEY_SETTINGS.items()},
    }
    return metrics, tested


def ended_by(trainer: pl.Trainer) -> str:
    """early_stop (the val/loss rule), max_epochs, max_steps, timer (trainer.max_time), or callback (another)."""
    if any(callback.wait_count >= callback.patience for callback in trainer.early_stopping_callbacks):
        return "early_stop"
    # the timer's cut, unless the run's own step budget ran out at that step too (a resume must raise that one)
    timer = any(
        isinstance(callback, RunTimer) and callback.ran_out and not 0 <= callback.max_steps <= trainer.global_step
        for callback in trainer.callbacks
    )
    if 0 <= trainer.max_steps <= trainer.global_step:  # first: a cut last epoch counts as done all the same
        # unless every epoch's steps were trained: both budgets ran out at once, and the epochs are what to raise
        # (counted from where a run from another's checkpoint started: its epochs may have had other lengths)
        start = trainer.lightning_module.started_from or {"epoch": 0, "global_step": 0}
        steps = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)  # an epoch's optimizer steps
        whole = trainer.global_step - start["global_step"] >= (trainer.max_epochs - start["epoch"]) * steps
        return "max_epochs" if whole else "timer" if timer else "max_steps"
    if trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs"
    return "callback"


def record(
    cfg: dict[str, Any], run_dir: Path, trainer: pl.Trainer, logger: Any, metrics: dict[str, Any], figures: list
) -> None:
    """TensorBoard's test scalars and figures of the tested checkpoint, the HParams row (none for a debug run),
    then metrics.json: the one place the results are written. Metrics under tags of their own (hparams/...):
    under test/acc they would add a point to the real curve."""
    tested = metrics["tested_checkpoint"]
    if isinstance(logger, TensorBoard):
        write_tested(logger, figures, tested["global_step"])
    else:
        logger.log_tested(tested["global_step"])
    if not is_debug(cfg):
        row, differs = hparams_of(cfg, run_dir)
        if isinstance(logger, TensorBoard):
            write_hparams(logger, row, differs, trainer.global_step)
        else:  # the model the test's numbers are of, named beside them (TensorBoard: the figures' titles)
            which = f"{tested['file'] or 'final weights'}, epoch {tested['epoch']}, step {tested['global_step']}"
            logger.log_hyperparams({**row, "tested_checkpoint": which})
            scores = {f"hparams/{k}": metrics[k] for k in HPARAM_METRICS if metrics[k] is not None}
            logger.log_metrics(scores, tested["global_step"])
    logger.finalize("success")
    run_folder.write_json_atomic(run_dir / run_folder.METRICS, metrics)  # last: from here on the run counts as finished
    (run_dir / run_folder.PREVIOUS_METRICS).unlink(missing_ok=True)
