"""One training run: build from the config, fit, test on the best checkpoint, write metrics.json.

Files under `output_dir`:
  .hydra/config.yaml   the composed config (written by Hydra)
  tb/                  TensorBoard event files
  checkpoints/         best.ckpt (highest val/acc) and last.ckpt
  metrics.json         final val/acc_best, test/acc, test/loss and the run's key settings
"""

from __future__ import annotations

import json
import os
import signal
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from attnlab.checkpoint import load_module
from attnlab.config import to_plain, validate
from attnlab.console import announce_end, announce_start, progress_bar
from attnlab.data import SyntheticDataModule
from attnlab.diagnostics import AttentionDiagnostics
from attnlab.errors import ConfigError, Interrupted
from attnlab.faults import AtomicCheckpointIO, StopOnSignal
from attnlab.module import LitClassifier
from attnlab.timing import StepClock

# Lightning 2.6 calls a torch API that torch 2.13 deprecates, once per run; nothing for a user to do.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def build(c: dict[str, Any]) -> tuple[SyntheticDataModule, LitClassifier]:
    """The datamodule and the LightningModule for a plain config (see `to_plain`)."""
    data = SyntheticDataModule(**c["data"], train_seed=c["seed"])
    module = LitClassifier(model={**c["model"], "dim": c["data"]["dim"]}, **c["optim"])
    return data, module


def key_settings(c: dict[str, Any]) -> dict[str, Any]:
    data, model = c["data"], c["model"]
    return {
        "task": data["task"],
        "seq_len": data["seq_len"],
        "dim": data["dim"],
        **{k: model[k] for k in ("pos_enc", "scale", "pool", "d_model", "num_heads", "num_layers")},
        "lr": c["optim"]["lr"],
        "seed": c["seed"],
    }


def sweep_job() -> Any | None:
    """Hydra's job node when this run is one job of a multirun, else None."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return HydraConfig.get().job
    return None


def torch_threads(requested: int | None) -> int | None:
    """`torch_threads`, or when unset under a parallel launcher (joblib), the cores divided among its
    jobs, so that n_jobs processes do not each start one thread per core. None: PyTorch's default."""
    if requested:
        return requested
    if HydraConfig.initialized():
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
        cores = os.cpu_count() or 1
        if n_jobs is not None and n_jobs != 1:
            return max(1, cores // (cores if n_jobs < 0 else n_jobs))
    return None


def resume_checkpoint(c: dict[str, Any]) -> str | None:
    """The checkpoint to continue from (`resume` run folder's last.ckpt, or `ckpt_path`), verified
    to load; None to start from scratch. Never falls back to random weights on a bad file."""
    if c["resume"] and c["ckpt_path"]:
        raise ConfigError("ckpt_path", c["ckpt_path"], "give either resume=<run dir> or ckpt_path=<file>, not both")
    if c["resume"]:
        path, key = Path(c["resume"]) / "checkpoints" / "last.ckpt", "resume"
    elif c["ckpt_path"]:
        path, key = Path(c["ckpt_path"]), "ckpt_path"
    else:
        return None
    load_module(path, key=key)
    return str(path)


def train(cfg: DictConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """Run one experiment; returns what it writes to metrics.json. `extra_callbacks` are added to
    the trainer's (scripts/benchmark.py times steps with one)."""
    began = time.perf_counter()
    c = to_plain(cfg)
    validate(c)  # bad values fail here, before anything is built or written
    resume_from = resume_checkpoint(c)
    out = Path(c["output_dir"])
    announce_start(c, out, sweep_job())
    threads = torch_threads(c["torch_threads"])
    if threads:
        torch.set_num_threads(threads)
    pl.seed_everything(c["seed"], workers=True, verbose=False)
    data, module = build(c)

    ckpt_dir = out / "checkpoints"
    checkpoint = ModelCheckpoint(  # best.ckpt: highest val/acc so far
        dirpath=ckpt_dir, filename="best", monitor="val/acc", mode="max", enable_version_counter=False
    )
    # last.ckpt: every epoch. Not `save_last=True`, which since Lightning 2.6 only refreshes last.ckpt
    # in epochs that also improved the best one, so a resume could go back many epochs.
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, enable_version_counter=False)
    stop = StopOnSignal(ckpt_dir / "interrupted.ckpt")
    clock = StepClock()
    callbacks: list[pl.Callback] = [checkpoint, last, stop, clock, *extra_callbacks]
    if c["diagnostics"]:
        callbacks.append(AttentionDiagnostics())
    if c["trainer"]["enable_progress_bar"]:
        callbacks.append(progress_bar(c["progress"]))
    logger = TensorBoardLogger(save_dir=str(out), name="tb", version="", default_hp_metric=False)
    # Text tab: the resolved config, indented so TensorBoard's markdown shows it verbatim.
    logger.experiment.add_text("config", "    " + OmegaConf.to_yaml(c).replace("\n", "\n    "))
    trainer = pl.Trainer(
        **c["trainer"], logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()], default_root_dir=str(out)
    )

    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
    except SIGTERMException as e:  # Lightning's way out after a signal: SystemExit(0)
        raise Interrupted(stop.signum or signal.SIGTERM, trainer.global_step, stop.saved) from e
    fit_seconds = time.perf_counter() - start
    # The last validation epoch's diagnostics (attention statistics, shuffled accuracy), for reports.
    diagnostics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(("attn/", "train/grad_norm", "val/acc_shuffled"))
    }
    # Test the best checkpoint, not whatever the last epoch left (no checkpoint in fast_dev_run).
    best = checkpoint.best_model_path or None
    test = trainer.test(module, datamodule=data, ckpt_path=best, weights_only=True)[0]

    metrics = {
        "val/acc_best": float(module.val_acc_best.compute()) if module.val_acc_best.update_called else None,
        "test/acc": test["test/acc"],
        "test/loss": test["test/loss"],
        "test/acc_shuffled": test.get("test/acc_shuffled"),  # positions shuffled; needs diagnostics=true
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "fit_seconds": round(fit_seconds, 3),
        "startup_seconds": clock.startup_seconds and round(clock.startup_seconds, 3),  # process start -> 1st step
        "best_checkpoint": best,
        "diagnostics": diagnostics,
        "settings": key_settings(c),
    }
    if not trainer.is_global_zero:  # under DDP, one process writes the results
        return metrics
    # HParams tab: the whole run config beside its real final metrics, one row per run of a sweep.
    logger.log_hyperparams(
        {k: v for k, v in c.items() if k != "output_dir"},
        {k: metrics[k] for k in ("val/acc_best", "test/acc") if metrics[k] is not None},
    )
    logger.finalize("success")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    announce_end(metrics, out, time.perf_counter() - began)
    return metrics
