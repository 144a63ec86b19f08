"""The config schema (every key, its type and default; conf/ holds only deltas), registered as `train_schema`
so that a misspelled key, a wrong type or an unknown variant fails when Hydra composes, and `validate`: the
checks a type cannot express."""

import functools
import inspect
import json
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from enum import EnumMeta
from pathlib import Path
from typing import Any, get_type_hints

import torch
import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from attnlab import run_folder
from attnlab.errors import CONTROL, ConfigError, first_line, fits
from attnlab.loggers import check_logger
from attnlab.naming import canonical, lookup  # (importing naming registers the attnlab_job_dir resolver)
from attnlab.pooling import POOLINGS
from attnlab.posenc import POS_ENCODINGS
from attnlab.scaling import SCALES
from attnlab.tasks import TASKS

TaskName = TASKS.enum()
PosEncName = POS_ENCODINGS.enum()
PoolName = POOLINGS.enum()
ScaleName = SCALES.enum()

# (ok(value), what is allowed): what a value must be beyond its type, declared on its field (`checked`), tested
# by `check_section`. A null is not tested: only a field typed `| None` can hold one.
Rule = tuple[Callable[[Any], bool], str]
POSITIVE: Rule = (lambda v: v > 0, "must be > 0")
AT_LEAST_ONE: Rule = (lambda v: v >= 1, "must be an integer >= 1")
NOT_NEGATIVE: Rule = (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0")
# Lightning takes 0 (skip the stage); a run needs all three stages. (NaN: Lightning takes it too, then fails.)
SOME_BATCHES: Rule = (
    lambda v: v != 0 and math.isfinite(v),
    "must be null (all), an integer >= 1 or a fraction in (0, 1]",
)
# "DD:HH:MM:SS", as Lightning's Timer reads it; all zeros would train no step and test the initial weights
DURATION: Rule = (
    lambda v: bool(re.fullmatch(r"\d+:([01]\d|2[0-3]):[0-5]\d:[0-5]\d", v)) and any(map(int, v.split(":"))),
    "must be null (no limit) or DD:HH:MM:SS (hours < 24, minutes and seconds < 60), more than 00:00:00:00",
)
CUDA: Rule = (
    lambda v: v not in ("gpu", "cuda") or torch.cuda.is_available(),
    "no CUDA GPU is visible here; use trainer.accelerator=auto or cpu",
)


# What a key is to a resume and a report, declared on its field (`kind`): `display` (how a run is shown or run,
# never what it computes: a report never groups by it), `budget` (how long it trains), `device` (where),
# `eval` (what is scored after training). A resume may change any of these (attnlab.resume.RESUMABLE), never a
# key without a kind: what the checkpoints hold.
KINDS = ("display", "budget", "device", "eval")


def checked(default: Any, *rules: Rule, kind: str = "") -> Any:
    return field(default=default, metadata={"rules": rules, "kind": kind})


def one_of(*names: str) -> Rule:
    return (lambda v: v in names, f"expected one of {list(names)}")


def or_null(rule: Rule, null: str) -> Rule:  # the rule of a `| None` field, saying what null means
    return rule[0], f"must be null ({null}) or {rule[1].removeprefix('must be ')}"


@dataclass
class DataConfig:
    task: TaskName = MISSING  # type: ignore[valid-type]
    seq_len: int = checked(32, POSITIVE)
    dim: int = checked(1, POSITIVE)  # n, the dimension of one observation
    n_train: int = checked(8192, POSITIVE)
    # the validation sequences: of both classes (balanced to within one: tasks.make_split), so at least 2; the
    # attention figures draw the first of each
    n_val: int = checked(1024, (lambda v: v >= 2, "must be an integer >= 2: a sequence of each class"))
    n_test: int = checked(1024, POSITIVE)
    batch_size: int = checked(256, POSITIVE)
    seed: int = 1234  # fixes the val/test sets, independently of the run's seed


@dataclass
class ModelConfig:
    dim: int = II("data.dim")  # the input projection's width: the observations' dimension, data.dim
    d_model: int = checked(32, POSITIVE)
    num_heads: int = checked(1, POSITIVE)
    num_layers: int = checked(1, POSITIVE)
    scale: ScaleName = ScaleName["sqrt"]  # type: ignore[valid-type]
    pos_enc: PosEncName = PosEncName["none"]  # type: ignore[valid-type]
    pool: PoolName = PoolName["max"]  # type: ignore[valid-type]
    max_len: int = checked(512, POSITIVE)  # positions a `learned` encoding has


@dataclass
class OptimConfig:
    lr: float = checked(3e-3, POSITIVE, (math.isfinite, "must be a finite number > 0"))
    weight_decay: float = checked(0.0, NOT_NEGATIVE)


@dataclass
class EarlyStopConfig:
    """Stop when val/loss stops improving (trainer.max_epochs stays the cap); the report's verdict uses the same
    rule to tell "at chance" (a plateau) from "not converged"."""

    # null: train all trainer.max_epochs; N: stop after N epochs without a better val/loss
    patience: int | None = checked(None, or_null(AT_LEAST_ONE, "train all max_epochs"), kind="budget")
    min_delta: float = checked(1e-3, NOT_NEGATIVE, kind="budget")  # a val/loss lower by less than this: no gain


@dataclass
class TrainerConfig:
    """`pytorch_lightning.Trainer`'s arguments attnlab reads, typed; any other with `+trainer.<name>=value`."""

    # Lightning checks the names (check_trainer), here and below
    accelerator: str = checked("auto", CUDA, kind="device")
    devices: Any = 1  # an integer, -1 (all), "auto" or a list of device ids
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = checked(10, POSITIVE, kind="budget")
    check_val_every_n_epoch: int = checked(1, AT_LEAST_ONE)
    log_every_n_steps: int = checked(10, AT_LEAST_ONE)
    deterministic: bool | str = False  # True, False or "warn"
    gradient_clip_val: float | None = checked(None, or_null(NOT_NEGATIVE, "no clipping"))
    fast_dev_run: bool | int = False
    limit_train_batches: int | float | None = checked(None, SOME_BATCHES)  # an int counts batches; a float: a fraction
    limit_val_batches: int | float | None = checked(None, SOME_BATCHES)
    limit_test_batches: int | float | None = checked(None, SOME_BATCHES)
    overfit_batches: int | float = 0.0
    profiler: str | None = None  # simple | advanced | pytorch
    max_time: str | None = checked(None, DURATION, kind="budget")  # "DD:HH:MM:SS": stop training then, and test
    enable_progress_bar: bool = checked(True, kind="display")
    enable_model_summary: bool = checked(False, kind="display")  # Lightning's table of layers; verbose=true too


@dataclass
class LoggerConfig:
    """Where scalars and hyperparameters go (attnlab.loggers): logger=<name>."""

    name: str = "tensorboard"  # tensorboard | csv | mlflow | wandb
    project: str = "attnlab"  # mlflow's experiment, wandb's project
    # mlflow: a file store folder (default outputs/mlruns) or a tracking URI; wandb: its files
    save_dir: str | None = None


@dataclass
class EvalSection:
    """Length generalisation (attnlab.evaluate): after training when `seq_lens` is set, or scripts/evaluate.py."""

    # lengths to score the tested checkpoint at; [] for none
    seq_lens: list[int] = field(default_factory=list, metadata={"kind": "eval"})
    # test sequences per length; null: the run's data.n_test
    n: int | None = checked(None, (lambda v: v > 0, "must be an integer > 0 or null (data.n_test)"), kind="eval")
    batch_size: int = checked(256, (lambda v: v > 0, "must be an integer > 0"), kind="eval")
    # a length past the trained positions: refuse | skip (recorded) | mark (scored)
    untrained: str = checked("refuse", one_of("refuse", "skip", "mark"), kind="eval")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = checked(0, (lambda v: 0 <= v < 2**32, "must be in 0..2**32-1"))
    output_dir: str = MISSING  # where this run writes; Hydra's run/job folder by default
    # torch.set_num_threads; None leaves PyTorch's default
    torch_threads: int | None = checked(
        None, (lambda v: 1 <= v <= 1024, "must be null (PyTorch's default) or an integer in 1..1024"), kind="display"
    )  # (torch.set_num_threads(100000) ends the process without a word)
    diagnostics: bool = True  # attention images and statistics in TensorBoard (attnlab.diagnostics)
    # also print the config, Lightning's messages, the model summary and the test table
    verbose: bool = checked(False, kind="display")
    # auto (rich on a terminal, one line per epoch otherwise) | rich | tqdm | plain
    progress: str = checked("auto", one_of("auto", "rich", "tqdm", "plain"), kind="display")
    # true: continue the run in output_dir from its newest checkpoint (from scratch if it has none).
    # `python scripts/train.py resume=<run dir>` sets this and the folder (attnlab.resume).
    resume: bool = False
    ckpt_path: str | None = None  # a checkpoint file: continue training from it, into a new run folder
    eval: EvalSection = field(default_factory=EvalSection)  # score the tested checkpoint at other lengths


def schema_fields(schema: Any = TrainConfig, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, its dataclass field) for every key of the schema, in its order."""
    keys = []
    for f in fields(schema):
        nested = is_dataclass(f.default_factory)
        keys += schema_fields(f.default_factory, f"{prefix}{f.name}.") if nested else [(prefix + f.name, f)]
    return keys


def keys_of_kind(*kinds: str) -> list[str]:
    """The dotted keys of the schema whose field is of one of `kinds` (no kinds: every key), in the schema's order."""
    return [key for key, f in schema_fields() if not kinds or f.metadata.get("kind") in kinds]


@dataclass
class EvaluateSection(EvalSection):
    ckpt: str = "best"  # best (the tested checkpoint) | last | a path to a .ckpt file


@dataclass
class EvaluateConfig:
    """scripts/evaluate.py: score a trained run on other sequence lengths."""

    run_dir: str = MISSING
    eval: EvaluateSection = field(default_factory=EvaluateSection)


BOOLEANS = frozenset(key for key, f in schema_fields() if f.type is bool)


def check_overrides(overrides: list[str]) -> None:
    """What the composed config no longer shows: a true/false key given anything but true or false (OmegaConf
    reads 2, "yes" and "on" as true), and `output_dir`, the folder Hydra runs the job in (conf/train.yaml): set
    apart from it, a run's results would land away from its record (.hydra/), where no resume or report finds
    them."""
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key == "output_dir":
            why = "is the folder Hydra runs the job in: set hydra.run.dir (a sweep: hydra.sweep.dir) instead"
            raise ConfigError("output_dir", value, why)
        if CONTROL.search(item):  # it would name a job's folder, and be shown on terminals
            raise ConfigError(key, value, "holds a control character (a tab, an escape, a newline): give plain text")
        if key in BOOLEANS and value.strip("'\"").lower() not in ("true", "false"):
            raise ConfigError(key, value, "must be true or false")
        if not key.startswith("hydra") and (found := not_plain_reference(value)):  # (else its record is refused)
            why = f"{found}... would run again wherever the run's record is read: give the value itself"
            raise ConfigError(key, value, why)


def check_yaml_files(folder: Path) -> None:
    """Every YAML file under `folder` parses, or a ConfigError names the file and the place."""
    for path in sorted(folder.rglob("*.yaml")):
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise ConfigError("config file", where, f"not valid YAML: {getattr(e, 'problem', None) or e}") from e


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)


def to_plain(cfg: DictConfig, output_dir: str | None = None) -> dict[str, Any]:
    """The resolved config as plain values (enums as names); with `output_dir`, a composed config's own part
    (Hydra's node left out) run there. A `???` left or a broken `${...}` is a ConfigError."""
    if output_dir is not None:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        with open_dict(cfg):
            cfg.output_dir = ""  # Hydra's runtime folder in conf/train.yaml, set below
    try:
        plain: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True)  # type: ignore[assignment]
    except (MissingMandatoryValue, InterpolationResolutionError) as e:
        missing = isinstance(e, MissingMandatoryValue)
        what = "is not set (???)" if missing else f"cannot be resolved: {str(e.msg).splitlines()[0]}"
        raise ConfigError(e.full_key, lookup(OmegaConf.to_container(cfg), e.full_key), what) from e  # type: ignore[arg-type]
    if output_dir is not None:  # after resolving: OmegaConf would read a `${` in a folder's name as interpolation
        plain["output_dir"] = output_dir
    return plain


SET_BY_ATTNLAB = {  # Trainer arguments train.py sets itself -> what to use instead
    "logger": "logger=<name>",
    "callbacks": "early_stop.patience or trainer.max_time to stop early",
    "plugins": "nothing: attnlab sets its checkpoint and SLURM plugins",
    "default_root_dir": "hydra.run.dir",
    "enable_checkpointing": "nothing: best.ckpt and last.ckpt are how runs resume",
    "barebones": "nothing: it turns off the logging and checkpoints every run records its results with",
}
AT_LEAST = {"accumulate_grad_batches": 1, "num_nodes": 1, "max_steps": -1, "min_steps": 0, "min_epochs": 0,
            "num_sanity_val_steps": -1}  # fmt: skip


@functools.cache
def trainer_arguments() -> dict[str, Any]:
    """`pytorch_lightning.Trainer`'s arguments -> their types (Lightning imported only for a `+trainer.X`)."""
    import pytorch_lightning as pl

    hints = get_type_hints(pl.Trainer.__init__)
    return {p: hints.get(p, Any) for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"}


def trainer_argument(key: str) -> bool:
    """`trainer.<name>`, a Trainer argument attnlab does not set (a dotted name: no, without importing Lightning)."""
    section, _, name = key.partition(".")
    return section == "trainer" and "." not in name and name in trainer_arguments() and name not in SET_BY_ATTNLAB


def check_trainer_extra(name: str, value: Any) -> None:
    """`+trainer.<name>=value`: typed by Lightning's signature, and the bounds Lightning enforces only once
    training runs (a FAILED folder instead of this one line)."""
    key = f"trainer.{name}"
    if name in SET_BY_ATTNLAB:
        raise ConfigError(key, value, f"is set by attnlab; use {SET_BY_ATTNLAB[name]}")
    if name not in trainer_arguments():
        raise ConfigError(
            key, value, f"pytorch_lightning.Trainer has no such argument; it takes {list(trainer_arguments())}"
        )
    if name in AT_LEAST and fits(value, int) and value < AT_LEAST[name]:  # a wrong type: check_trainer says so
        raise ConfigError(key, value, f"must be an integer >= {AT_LEAST[name]}")
    if name == "max_steps" and value == 0:  # no step: the initial weights tested, as if trained
        raise ConfigError(key, value, "must be -1 (no limit) or an integer >= 1")
    if name == "num_nodes" and fits(value, int) and value > 1 and not os.environ.get("SLURM_JOB_ID"):
        why = "needs a cluster that starts a process on each node (hydra/launcher=slurm); on one machine use "
        why += "trainer.devices"
        raise ConfigError(key, value, why)


def split_batches(data: dict[str, Any], split: str) -> int:
    """Batches in an epoch of `split` (train, val, test), before any trainer.limit_*_batches."""
    return -(-data[f"n_{split}"] // data["batch_size"])


def limited_batches(batches: int, limit: int | float | None) -> int:
    """The batches of an epoch of `batches` that run under a trainer.limit_*_batches: an int counts batches, a float
    is a fraction of them, null is all."""
    if isinstance(limit, float):
        return int(batches * limit)
    return batches if limit is None else min(batches, limit)


def training_batches(cfg: dict[str, Any]) -> int:
    """Training batches per epoch (with trainer.overfit_batches, else trainer.limit_train_batches); at least one
    (config.validate)."""
    limit = cfg["trainer"]["overfit_batches"] or cfg["trainer"]["limit_train_batches"]  # (0 or 0.0: not overfitting)
    return limited_batches(split_batches(cfg["data"], "train"), limit)


def check_section(cfg: dict[str, Any], schema: Any = TrainConfig, prefix: str = "", record: bool = False) -> None:
    """Refuse keys the schema lacks (a `+key=value`; the trainer section takes any Trainer argument) and
    values their field's rules refuse. `record`: a run's saved config (run_config), every key's type checked
    (Hydra converted them as it composed) but not the rules, which it passed where it ran (a GPU, the memory, and
    an earlier version's rules: a report reads an older sweep). What builds from one checks them (plot_attention)."""
    known = {f.name: f for f in fields(schema)}
    for key in known.keys() - cfg.keys():  # deleted by a `~key` override: the code reads every key of the schema
        why = "is missing" if record else f"must be set; the schema requires it (~{prefix}{key} deleted it)"
        raise ConfigError(f"{prefix}{key}", None, why)
    for key, value in cfg.items():
        if key not in known and schema is TrainerConfig:
            if not record:  # (a record's: checked where it ran, by Lightning's signature then)
                check_trainer_extra(key, value)
        elif key not in known:
            raise ConfigError(
                f"{prefix}{key}", value, f"unknown key; {prefix.rstrip('.') or 'the top level'} has {sorted(known)}"
            )
        elif is_dataclass(sub := known[key].default_factory):  # a nested section
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key}", value, "must be a section of keys")
            check_section(value, sub, f"{prefix}{key}.", record)
        else:
            # (an interpolation's value is not converted to the field's type: `seed=${data.task}` is text)
            hint = known[key].type
            if (record or hint in (int, float, bool)) and not fits(value, hint):
                shown = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
                why = f"must be of type {shown}"
                if isinstance(hint, EnumMeta):
                    why = f"expected one of {list(hint.__members__)}"
                raise ConfigError(f"{prefix}{key}", value, why)
            for ok, allowed in () if record else known[key].metadata.get("rules", ()):
                if value is not None and not ok(value):
                    raise ConfigError(f"{prefix}{key}", value, allowed)


def check_seq_len(data: dict[str, Any], model: dict[str, Any], seq_len: int) -> None:
    """ConfigError if the task or the positional encoding cannot run at this length."""
    TASKS.build(data["task"]).check(seq_len)
    POS_ENCODINGS.get(model["pos_enc"]).check(seq_len, model["d_model"], model["num_heads"], model["max_len"])


def untrained_reason(data: dict[str, Any], model: dict[str, Any], seq_len: int) -> str | None:
    """Why scoring a model trained on `data` at `seq_len` would use parameters training never reached
    (positions or offsets past the training length), or None when it would not."""
    if not POS_ENCODINGS.get(model["pos_enc"]).per_position or seq_len <= data["seq_len"]:
        return None
    return f"untrained positions: pos_enc={model['pos_enc']} was trained at length {data['seq_len']} (data.seq_len)"


def check_memory(
    key: str, sequences: int, seq_len: int, batch: int, data: dict[str, Any], model: dict[str, Any]
) -> None:
    """Refuse a run (or an evaluation) at `seq_len` that needs more memory than MemAvailable (Linux). A rough
    lower bound: the float32 sequences twice (generated, then offset), one batch's activations and gradients
    per layer, and where the scores may be materialised (an encoding with a bias; rope beside a cls token,
    attnlab.model) the (H, L, L) table and the (B, H, L, L) scores."""
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        free = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return
    dim, d_model, heads, layers = data["dim"], model["d_model"], model["num_heads"], model["num_layers"]
    need = 2 * sequences * seq_len * dim * 4 + sequences * 8  # (and the int64 labels)
    need += batch * seq_len * d_model * 4 * (12 * layers + 4)
    encoding = POS_ENCODINGS.get(model["pos_enc"])
    if encoding.bias is not POS_ENCODINGS.get("none").bias or (encoding.rotary and POOLINGS.get(model["pool"]).prefix):
        need += heads * seq_len * seq_len * (4 * 3 + 8) + batch * heads * seq_len * seq_len * 4 * layers
    if need > free:
        raise ConfigError(
            key, seq_len, f"needs about {need / 2**30:.1f} GiB of memory, and {free / 2**30:.1f} GiB is available here"
        )


def check_data_memory(data: dict[str, Any], model: dict[str, Any]) -> None:
    """`check_memory` of a run's three splits at data.seq_len (a run, and what regenerates a run's data)."""
    sequences = data["n_train"] + data["n_val"] + data["n_test"]
    check_memory("data.seq_len", sequences, data["seq_len"], data["batch_size"], data, model)


def check_eval(eval_cfg: dict[str, Any], data: dict[str, Any], model: dict[str, Any]) -> None:
    """Every eval.seq_lens length possible for the task and encoding, and trained unless eval.untrained allows."""
    for length in eval_cfg["seq_lens"]:
        if not (fits(length, int) and length > 0):
            raise ConfigError("eval.seq_lens", length, "lengths must be integers > 0")
        try:
            check_seq_len(data, model, length)
        except ConfigError as e:
            raise ConfigError("eval.seq_lens", length, e.allowed) from e
        check_memory("eval.seq_lens", eval_cfg["n"] or data["n_test"], length, eval_cfg["batch_size"], data, model)
        reason = untrained_reason(data, model, length)
        if reason and eval_cfg["untrained"] == "refuse":
            raise ConfigError(
                "eval.seq_lens", length, f"{reason}; eval.untrained=mark scores it anyway, marked; skip records it"
            )


def validate(cfg: dict[str, Any]) -> None:
    """ConfigError for a value that would fail (or silently mislead) later. `cfg` is `to_plain(composed)`."""
    check_section(cfg)
    model, data, trainer = cfg["model"], cfg["data"], cfg["trainer"]
    if model["dim"] != data["dim"]:
        raise ConfigError("model.dim", model["dim"], f"must equal data.dim={data['dim']} (its default, ${{data.dim}})")
    if model["d_model"] % model["num_heads"]:
        raise ConfigError(
            "model.d_model", model["d_model"], f"must be divisible by model.num_heads={model['num_heads']}"
        )
    check_seq_len(data, model, data["seq_len"])
    check_data_memory(data, model)
    check_eval(cfg["eval"], data, model)
    check_logger(cfg["logger"])
    for split in ("train", "val", "test"):  # a fraction of an epoch's batches that is none: Lightning fails the run
        limit, batches = trainer[f"limit_{split}_batches"], split_batches(data, split)
        if isinstance(limit, float) and limited_batches(batches, limit) == 0:
            why = f"is none of the {batches} {split} batches of an epoch; give at least {1 / batches:.3g}"
            raise ConfigError(f"trainer.limit_{split}_batches", limit, why)
    every, epochs = trainer["check_val_every_n_epoch"], trainer["max_epochs"]
    # no validation: no checkpoint, the final weights tested (as debug=fdr and debug=overfit check the pipeline)
    if every > epochs and not (trainer["fast_dev_run"] or trainer["overfit_batches"]):
        why = f"must be <= trainer.max_epochs={epochs}: no validation would run, and no checkpoint be kept"
        raise ConfigError("trainer.check_val_every_n_epoch", every, why)
    interval, batches = trainer.get("val_check_interval"), training_batches(cfg)
    # an int counts batches, a float is a fraction of an epoch (Lightning validates after every batch at 0.0)
    if (isinstance(interval, int) and not 1 <= interval <= batches) or (
        isinstance(interval, float) and not (0 < interval <= 1 and int(batches * interval) >= 1)
    ):
        why = f"must be 1..{batches}, the training batches of an epoch, or a fraction in [{1 / batches:.3g}, 1]"
        raise ConfigError("trainer.val_check_interval", interval, why)
    if (least := trainer.get("min_epochs")) is not None and fits(least, int) and least > epochs:  # Lightning: ignored
        raise ConfigError("trainer.min_epochs", least, f"must be <= trainer.max_epochs={epochs}")
    if cfg["progress"] != "auto" and not trainer["enable_progress_bar"]:  # (no bar: the choice would do nothing)
        why = "shows nothing with trainer.enable_progress_bar=false: give one of them"
        raise ConfigError("progress", cfg["progress"], why)
    # ddp_spawn, ddp_fork, ddp_notebook: the training runs in processes started for it, and what they trained (the
    # steps, the history, the tested checkpoint) does not come back to this one, which would record none of it
    if re.search(r"spawn|fork|notebook", str(trainer["strategy"])):
        why = "trains in processes whose record of the training does not come back to the run's: use ddp"
        raise ConfigError("trainer.strategy", trainer["strategy"], why)
    # Lightning runs 16-bit mixed precision on a CPU as bf16-mixed, with a warning: the record would say 16
    on_cpu = trainer["accelerator"] == "cpu" or (trainer["accelerator"] == "auto" and not torch.cuda.is_available())
    if on_cpu and str(trainer["precision"]) in ("16", "16-mixed"):
        why = "16-bit mixed precision needs a GPU; on a CPU Lightning would run bf16-mixed: give that, or 32-true"
        raise ConfigError("trainer.precision", trainer["precision"], why)
    # Read later (attnlab.resume.plan); a resumed run goes on from its own checkpoints, if it has any.
    if cfg["ckpt_path"] is not None and not cfg["resume"] and not Path(cfg["ckpt_path"]).is_file():
        raise ConfigError("ckpt_path", cfg["ckpt_path"], "no such checkpoint file")
    check_trainer(trainer)


_trainers_checked: set[str] = set()


def check_trainer(trainer: dict[str, Any]) -> None:
    """Lightning checks its own arguments: a Trainer is built from the trainer section and dropped (once per
    distinct section), and what it refuses becomes one line naming the key."""
    checked_key = canonical(trainer)
    if checked_key in _trainers_checked:
        return
    for name, value in trainer.items():  # Lightning's annotations first (deterministic: bool | "warn", ...)
        if not fits(value, hint := trainer_arguments().get(name, Any)):
            shown = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise ConfigError(f"trainer.{name}", value, f"must be of type {shown.replace('NoneType', 'None')}")
    import pytorch_lightning as pl

    from attnlab.console import lightning_messages

    try:  # quiet: Lightning's "GPU available: ...", said again by the run itself
        with lightning_messages(verbose=False, level=logging.ERROR):
            pl.Trainer(**trainer, logger=False, enable_checkpointing=False)
    except Exception as e:
        message = " ".join(str(e.args[0] if e.args else e).split()) or type(e).__name__
        named = [k for k in trainer if k.lower() in message.lower()]
        # the argument the message is about: written `key=...` or `key` in it, else the longest name it holds
        key = max(named, key=lambda k: (f"{k}=" in message or f"`{k}`" in message, len(k)), default=None)
        if key is None:  # the settings this run changed from attnlab's defaults
            defaults = TrainerConfig()
            given = {k: v for k, v in trainer.items() if getattr(defaults, k, None) != v}
            raise ConfigError("trainer", given, f"Lightning refuses it: {message}") from e
        raise ConfigError(f"trainer.{key}", trainer[key], f"Lightning refuses it: {message}") from e
    _trainers_checked.add(checked_key)


# ${data.dim} is a key's value; a resolver such as ${oc.env:HOME} reads what a record has no business with. Hydra's
# own stays (output_dir: ${hydra:runtime.output_dir}). Every `${` must open one of these: a resolver's name made by
# an interpolation (${${a.b}:X}) or any other form is refused with them.
PLAIN_REFERENCE = re.compile(r"\$\{\s*(hydra\s*:\s*)?([\w.-]+)\s*\}")  # (Hydra's prefix, the key)


def not_plain_reference(text: str) -> str | None:
    """The first `${...}` in `text` that is not a key reference (or Hydra's own), as written; None if none."""
    for found in re.finditer(r"\$\{", text):
        if not PLAIN_REFERENCE.match(text, found.start()):
            return text[found.start() : found.start() + 40]
    return None


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's where PyYAML was built with it


def check_no_aliases(text: str) -> None:
    """A record as Hydra writes it holds no YAML alias (`*name`): one that does is refused (ValueError) before it
    is read. Each alias of an alias multiplies what a reader expands."""
    if "*" in text and any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=SAFE_LOADER)):
        raise ValueError("it holds a YAML alias (*name), which no record Hydra writes holds")


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The plain config a run was trained with (its config.json, the resolved config `attnlab.train` writes), every
    key and type checked against the schema (ConfigError). Plain JSON, read as such: nothing in it is resolved or
    expanded, so a crafted record can name values only."""
    path = Path(run_dir) / run_folder.CONFIG
    if not path.is_file():
        why = f"not a run folder: {path} does not exist"
        if (Path(run_dir) / "multirun.yaml").is_file():
            why += "; it is a sweep's folder: give one of its job folders"
        elif path.exists() or (Path(run_dir) / ".hydra").is_dir():  # a run's folder (Hydra's record)
            why = f"{path} is missing or not a file: the run stopped before it trained, or is of an earlier version"
        raise ConfigError("run_dir", str(run_dir), why)
    try:
        cfg = json.loads(path.read_text(), object_pairs_hook=unique_keys)
        if not isinstance(cfg, dict):
            raise ValueError("not a mapping of keys to values")
        cfg["output_dir"] = str(run_dir)  # where it is now: a run folder can move
        check_section(cfg, record=True)
        return cfg
    except Exception as e:
        why = f"its {run_folder.CONFIG} does not load ({first_line(e)})"
        raise ConfigError("run_dir", str(run_dir), why) from e


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's keys, refusing one given twice (json keeps the last)."""
    mapping = dict(pairs)
    if len(mapping) < len(pairs):  # which one, in one pass (a record may hold 10^5 keys)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"{key} given twice")
            seen.add(key)
    return mapping
