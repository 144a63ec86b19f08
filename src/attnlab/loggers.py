"""Where a run's scalars go (`logger=tensorboard|csv|mlflow|wandb`): one builder per name, from a registry (not
Hydra's `instantiate`: a config is input, and a `_target_` would import and call anything). TensorBoard gets everything
(attnlab.dashboard); the others the scalars and the HParams row. A resume continues its TensorBoard run and its
metrics.csv; mlflow and wandb record each attempt as a run of its own.
"""

import csv
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnlab.errors import ConfigError
from attnlab.registry import Registry
from attnlab.sweep_record import run_name

# Lightning is imported by the builders: config checks import this module before Lightning loads.
LOGGERS: Registry[Callable[[dict[str, Any], Path, int], Any]] = Registry("logger.name")


@LOGGERS.register("tensorboard")
def tensorboard(settings: dict[str, Any], run_dir: Path, purge_step: int) -> Any:
    from attnlab.dashboard import TensorBoard

    # A resume appends to the same run: all logged before a checkpoint of step S has a step < S, so
    # `purge_step=S` hides exactly what the interrupted attempt logged after it. The event files go in the
    # run folder itself: TensorBoard names the run by it.
    return TensorBoard(save_dir=str(run_dir), name="", version="", default_hp_metric=False, purge_step=purge_step)


@LOGGERS.register("csv")
def csv_logger(settings: dict[str, Any], run_dir: Path, purge_step: int) -> Any:
    from attnlab.dashboard import CSV

    logger = CSV(save_dir=str(run_dir), name="csv", version="")
    table = Path(logger.log_dir) / "metrics.csv"
    if purge_step and table.is_file():
        # Lightning's CSV writer deletes metrics.csv when it starts: rows from before the checkpoint are
        # logged again, later ones dropped (TensorBoard's purge_step); the test's numbers (test/*, hparams/*,
        # at the tested checkpoint's step, which may be earlier) too: this attempt tests again.
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            step = int(row.pop("step"))
            kept = {k: float(v) for k, v in row.items() if v != "" and not k.startswith(("test/", "hparams/"))}
            if step < purge_step and set(kept) - {"epoch"}:
                logger.log_metrics(kept, step)
        logger.save()
    return logger


@LOGGERS.register("mlflow")
def mlflow(settings: dict[str, Any], run_dir: Path, purge_step: int) -> Any:
    from attnlab.dashboard import MLflow

    where = settings["save_dir"] or "outputs/mlruns"
    if "://" in where:  # a tracking URI as given (sqlite:///mlflow.db, http://server:5000)
        uri = where
    else:  # a local file store, shared by all runs: no server, no database, `mlflow ui` reads it
        uri = Path(where).resolve().as_uri()
        # MLflow 3 keeps the file store in maintenance mode and refuses it unless this is set.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLflow(experiment_name=settings["project"], run_name=run_name(run_dir), tracking_uri=uri)


@LOGGERS.register("wandb")
def wandb(settings: dict[str, Any], run_dir: Path, purge_step: int) -> Any:
    from attnlab.dashboard import Wandb

    save_dir = Path(settings["save_dir"]) if settings["save_dir"] else run_dir
    save_dir.mkdir(parents=True, exist_ok=True)
    # Offline: nothing leaves the machine; `wandb sync <run>/wandb/offline-run-*` uploads it later.
    return Wandb(project=settings["project"], name=run_name(run_dir), save_dir=str(save_dir), offline=True)


def check_logger(settings: dict[str, Any]) -> None:
    name, where = settings["name"], settings["save_dir"]
    LOGGERS.get(name)  # an unknown name lists the valid ones
    if name not in ("mlflow", "wandb"):
        if where is not None:  # else it would be ignored without a word
            raise ConfigError("logger.save_dir", where, f"is mlflow's and wandb's; {name} writes into the run folder")
        return
    if importlib.util.find_spec(name) is None:  # optional extras, named as the package
        raise ConfigError("logger.name", name, f"needs the {name} package: pip install -e '.[{name}]'")
    if not settings["project"].strip():
        what = "experiment" if name == "mlflow" else "project"
        raise ConfigError("logger.project", settings["project"], f"must name {name}'s {what}")
    if where is not None and "://" not in where:  # a folder: the nearest part of it that exists must take files
        existing = next(p for p in (Path(where).absolute(), *Path(where).absolute().parents) if p.exists())
        if not (existing.is_dir() and os.access(existing, os.W_OK)):
            raise ConfigError("logger.save_dir", where, f"cannot be created: {existing} is not a writable folder")
