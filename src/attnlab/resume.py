"""Resuming: one plan per run (`plan`), and the checks that make a resume continue the same run.

`scripts/train.py resume=<folder>` (`-m` for a sweep) becomes the folder's saved overrides, checked as untrusted
input, then the ones given now (`resume_argv`, before Hydra parses anything). A resume may change only
`RESUMABLE` keys (budget, display, threads: never what the checkpoints hold) and continues from the folder's
newest loadable checkpoint; a new run may start from another run's checkpoint (`ckpt_path`). Refusals are
ConfigErrors, raised before a file is touched.
"""

import itertools
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import yaml
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf, read_write

from attnlab import run_folder
from attnlab.config import (
    KINDS,
    check_no_aliases,
    check_overrides,
    keys_of_kind,
    not_plain_reference,
    run_config,
    to_plain,
    trainer_argument,
    validate,
)
from attnlab.errors import CONTROL, ConfigError, first_line, one_line
from attnlab.naming import canonical, flatten, hydra_quote
from attnlab.sweep_record import in_sweep

# Keys a resume may change: how long to train, how to show it, where, what is scored after: never what the
# checkpoints hold (the kinds declared on the schema's fields, attnlab.config.KINDS).
RESUMABLE = (*keys_of_kind(*KINDS), "trainer.max_steps")  # (and Lightning's step budget, `+trainer.max_steps`)
SCHEMA_KEYS = frozenset(keys_of_kind())  # every key of the schema
IGNORED_ON_RESUME = ("resume", "output_dir")  # differ by construction
SWEEP_HYDRA_KEYS = ("hydra/launcher", "hydra.launcher.", "hydra.verbose")  # what a continued sweep takes over
CONF = Path(__file__).resolve().parents[2] / "conf"
PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")
# Hydra's escaped `$\{`, or control characters (errors.CONTROL; an interpolation: config.not_plain_reference)
UNSAFE_VALUE = re.compile(rf"\$\\\{{|{CONTROL.pattern}")
# Not taken from a record: where the run writes (the folder being resumed decides) and where a logger sends data.
NOT_FROM_RECORDS = ("output_dir", "resume", "logger.save_dir")
# A sweep's launcher settings a record may carry: plain numbers and names; not `setup`, `srun_args`,
# `additional_parameters` (shell lines) or `submitit_folder` (a path).
LAUNCHER_SETTINGS = (
    "n_jobs", "partition", "timeout_min", "cpus_per_task", "mem_gb", "gpus_per_node", "account", "qos",
    "array_parallelism", "max_num_timeout", "signal_delay_s", "nodes", "tasks_per_node", "poll_s", "grace_s",
)  # fmt: skip
PLAIN_SETTING = re.compile(r"[A-Za-z0-9_.:+-]*")
# Hydra's command-line flags that take the next argument as their value (`--cfg job`), not an override
HYDRA_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun")  # fmt: skip
PROGRESS_FIELDS = ("ready", "started", "processed", "completed")  # Lightning's loop progress counts
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")  # --info's optional value


class Plan(NamedTuple):
    """Where a run's training starts."""

    checkpoint: Path | None  # this run's newest checkpoint (a resume), or `ckpt_path`; None: from scratch
    epoch: int  # the checkpoint's epoch, from 1 (0 from scratch)
    step: int  # its global step: a resumed TensorBoard run hides what came after it
    own: bool  # the checkpoint is this run's own (a resume), not another run's (ckpt_path)
    spent: str = ""  # why a resume from it would train nothing more under this config ("" if it would train)
    note: str = ""  # another run's checkpoint trained on other data: what differs (`other_data`)
    stuck: ConfigError | None = None  # training from it would go wrong (`steps_restart`): raised where it would train
    inside: bool = False  # the checkpoint was saved inside its epoch (`inside_epoch`)

    def check_trains(self) -> None:
        if self.stuck is not None:
            raise self.stuck


def plan(cfg: dict[str, Any], folder: Path, recorded: bool = False) -> Plan:
    """Every check a resume or a `ckpt_path` needs (ConfigError), and where training starts. `recorded`: the
    run's checks before Hydra writes (preflight, the sweeper), so the folder must hold the config the run was
    trained with; `train` plans again, from the checkpoints as they are then."""
    from pytorch_lightning.callbacks import Timer  # imported once the values are checked

    from attnlab.checkpoints import check_callback_paths, newest_checkpoint

    newest = None
    if cfg["resume"] and run_folder.holds_run(folder):
        run_folder.check_no_links_out(folder, "resume")
        newest = newest_checkpoint(folder)
    if newest is None:  # a new run, or a resumed one that saved no checkpoint yet: no weights depend on its config
        # but a sweep's plan does (jobs.json, the folder's name), for a job of one
        if cfg["resume"] and recorded and in_sweep(folder):
            check_planned(cfg, folder)
        if start := check_start_checkpoint(cfg):
            return Plan(start[0], 0, 0, own=False, note=other_data(cfg, start[1]))
        return Plan(None, 0, 0, own=False)
    path, ckpt = newest
    try:
        saved = run_config(folder)
    except ConfigError as e:  # missing (a run of an earlier version), or edited
        if recorded:  # (else a job in a sweep's worker, or `train` without Hydra: the sweep or caller checked it)
            missing = not (folder / run_folder.CONFIG).is_file()
            what = f"{run_folder.CONFIG} is missing or unreadable" if missing else e.allowed
            raise ConfigError("resume", str(folder), f"{what}: cannot check that this is the same run") from e
    else:
        check_same_run(saved, cfg, folder)
    check_held_settings(ckpt["hyper_parameters"], cfg, "resume", path)
    check_callback_paths(ckpt, "resume", path)
    check_position(ckpt, "resume", path)
    epoch, step = int(ckpt["epoch"]) + 1, int(ckpt["global_step"])
    if (max_epochs := cfg["trainer"]["max_epochs"]) < epoch:  # Lightning would fail it, or record a budget it overran
        why = f"{path.name} is at epoch {epoch}, step {step}; a resume may lengthen the budget, not cut it"
        raise ConfigError("trainer.max_epochs", max_epochs, why)
    if max_time := cfg["trainer"]["max_time"]:  # Lightning's Timer, restored from the checkpoint as `fit` restores it
        timer = Timer(max_time)
        timer.load_state_dict(ckpt.get("callbacks", {}).get("Timer", {}))
        if timer.time_remaining() <= 0:  # type: ignore[operator]
            why = f"this run's timer has run out ({timer.time_elapsed():.0f} s trained): nothing would train; "
            raise ConfigError("trainer.max_time", max_time, why + "give a longer trainer.max_time to continue it")
    if (max_steps := cfg["trainer"].get("max_steps", -1)) not in (-1, None) and max_steps < step:  # as max_epochs
        why = f"{path.name} is at step {step}; a resume may lengthen the budget, not cut it"
        raise ConfigError("trainer.max_steps", max_steps, why)
    spent = spent_budget(ckpt, cfg, epoch, step)
    stuck = None if spent else steps_restart(cfg, ckpt, path)
    return Plan(path, epoch, step, own=True, spent=spent, stuck=stuck, inside=inside_epoch(ckpt))


def steps_restart(cfg: dict[str, Any], ckpt: dict[str, Any], path: Path) -> ConfigError | None:
    """Under `trainer.max_steps`, Lightning 2.6 restarts from a checkpoint saved at an epoch's end as if inside that
    epoch: it trains no step, counts one more epoch all the same, and the record would claim it (a neighbour of
    Lightning-AI/pytorch-lightning#19617). The refusal of training from `ckpt` so, or None: by epochs (max_steps
    -1) it trains on exactly."""
    if (max_steps := cfg["trainer"].get("max_steps", -1)) in (-1, None) or inside_epoch(ckpt):
        return None
    why = f"from {path.name}, saved at an epoch's end, Lightning would train no step under max_steps and count "
    why += "an epoch all the same: give +trainer.max_steps=-1 (and the epochs in trainer.max_epochs)"
    return ConfigError("trainer.max_steps", max_steps, why)


def inside_epoch(ckpt: dict[str, Any]) -> bool:
    """The checkpoint was saved before its epoch's last batch (a signal's, a timer's, a validation mid-epoch)."""
    state: Any = ckpt
    for key in ("loops", "fit_loop", "epoch_loop.batch_progress"):
        state = state.get(key, {}) if isinstance(state, dict) else {}
    return isinstance(state, dict) and state.get("is_last_batch", True) is False


def check_position(ckpt: dict[str, Any], key: str, path: Path) -> None:
    """Where a checkpoint continues training (Lightning's loop counts, its optimizer steps, the data's position)
    must read as this version writes it: others (crafted, or an earlier version's) would resume at another batch
    without a word, or fail inside Lightning after the run's files moved."""
    try:
        problem = position_problem(ckpt)
    except (KeyError, TypeError, ValueError) as e:  # a part missing, or not of its shape
        problem = f"no {e}: an earlier version's, or edited"
    if problem:
        raise ConfigError(key, str(path), f"its training position is not one this version writes ({problem})")


def position_problem(ckpt: dict[str, Any]) -> str:
    def leaves(value: Any) -> list[Any]:
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        return [value] if items is None else [leaf for item in items for leaf in leaves(item)]

    if not all(type(n) is bool or (type(n) is int and 0 <= n < 2**53) for n in leaves(ckpt["loops"])):
        return "a count that is not a whole number"
    fit = ckpt["loops"]["fit_loop"]
    progress = [fit["epoch_progress"], fit["epoch_loop.batch_progress"]]
    for counts in (p[part] for p in progress for part in ("current", "total")):
        if [counts[n] for n in PROGRESS_FIELDS] != sorted((counts[n] for n in PROGRESS_FIELDS), reverse=True):
            return "counts out of order"
    if any(p["current"][n] > p["total"][n] for p in progress for n in PROGRESS_FIELDS):
        return "an epoch's count past the run's"
    if (
        fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]["total"]["completed"]
        != ckpt["global_step"]
    ):
        return "optimizer steps other than its global_step"
    (data,) = fit["state_dict"]["combined_loader"]
    if data["epoch"] != ckpt["epoch"] or data["batches_done"] != progress[1]["current"]["completed"]:
        return "the data's position is not the loop's"
    return ""


def keep_cut_epoch_open(ckpt: dict[str, Any], epoch_batches: int | float) -> bool:
    """An epoch that a budget cut short (max_steps, trainer.max_time) still ends with the epoch-end hooks, and the
    checkpoint saved there says the epoch was done: Lightning 2.6 resumes it with the next epoch (by max_epochs) or
    finishes it and counts it twice (under max_steps), so a longer budget never trains the rest of it and the run
    records epochs it did not train. Such a checkpoint (`epoch_batches`: the trainer's num_training_batches) is
    marked here as saved inside its epoch, as a signal's interrupted.ckpt is, and a resume trains the epoch's
    remaining batches. Whether it was one."""
    fit = ckpt["loops"]["fit_loop"]
    epochs, batches = fit["epoch_progress"], fit["epoch_loop.batch_progress"]
    ended = epochs["current"]["processed"] == epochs["current"]["completed"] + 1  # in the epoch-end hooks
    if not ended or batches["current"]["completed"] >= epoch_batches:
        return False
    for counts in (epochs["current"], epochs["total"]):
        counts["processed"] -= 1
    return True


def spent_budget(ckpt: dict[str, Any], cfg: dict[str, Any], epoch: int, step: int) -> str:
    """Why training from this checkpoint would stop at once under config `cfg`; "" if it would train."""
    trainer, patience = cfg["trainer"], cfg["early_stop"]["patience"]
    if inside_epoch(ckpt):  # (a timer, a signal): that epoch is not done
        epoch -= 1
    if epoch >= trainer["max_epochs"]:
        return f"it has trained its trainer.max_epochs={trainer['max_epochs']}"
    if (max_steps := trainer.get("max_steps", -1)) not in (-1, None) and step >= max_steps:
        return f"it has trained its trainer.max_steps={max_steps}"
    states = [s for k, s in ckpt.get("callbacks", {}).items() if "EarlyStopping" in k and isinstance(s, dict)]
    waits = [s.get("wait_count") for s in states]
    if patience is not None and any(isinstance(w, int | float) and w >= patience for w in waits):  # as Lightning
        return f"early stopping ended it (early_stop.patience={patience})"
    return ""


def recorded_spent(folder: Path, cfg: dict[str, Any]) -> str:
    """A finished run's metrics.json says max_epochs ended it, all of them trained (its last epoch may have saved no
    checkpoint: one without a validation, trainer.check_val_every_n_epoch), or "". (Ended by a budget, its
    `epochs` counts a last epoch the budget cut: its checkpoints tell what is left.)"""
    try:
        metrics = json.loads((folder / run_folder.METRICS).read_text())
        epochs, end = metrics.get("epochs"), metrics.get("ended_by")
    except (OSError, ValueError, AttributeError, RecursionError):
        return ""
    max_epochs = cfg["trainer"]["max_epochs"]
    trained_all = end == "max_epochs" and type(epochs) is int and epochs >= max_epochs
    return f"it has trained its trainer.max_epochs={max_epochs}" if trained_all else ""


def check_held_settings(hp: dict[str, Any], cfg: dict[str, Any], key: str, path: Path) -> None:
    """The weights fix the model's shape, the optimizer state restored with them lr and weight decay: a
    checkpoint's hyperparameters must match the run's config."""
    held = {**{f"model.{k}": v for k, v in hp["model"].items()}, **{f"optim.{k}": hp.get(k) for k in cfg["optim"]}}
    wanted = flatten({"model": cfg["model"], "optim": cfg["optim"]})
    differ = [f"{k}={held.get(k)!r} (this run: {v!r})" for k, v in wanted.items() if held.get(k) != v]
    if differ:
        raise ConfigError(key, str(path), f"was trained with other settings: {', '.join(differ)}")


def check_start_checkpoint(cfg: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """`ckpt_path` and what it holds: it must load, hold a model of this run's shape, end an epoch, and leave
    epochs to train."""
    from attnlab.checkpoints import read_checkpoint

    if not cfg["ckpt_path"]:
        return None
    path = Path(cfg["ckpt_path"])
    ckpt = read_checkpoint(path, "ckpt_path")
    check_held_settings(ckpt["hyper_parameters"], cfg, "ckpt_path", path)
    check_position(ckpt, "ckpt_path", path)
    # Saved inside an epoch (interrupted.ckpt, a budget's cut; a validation mid-epoch): a new run would finish
    # that run's epoch on its own data, and count the part as an epoch of its own.
    if inside_epoch(ckpt):
        why = "was saved inside an epoch (a signal's stop, a budget's cut): continue that run with resume=<its folder>,"
        raise ConfigError("ckpt_path", str(path), why + " or start a new one from a checkpoint saved at an epoch's end")
    if stuck := steps_restart(cfg, ckpt, path):
        raise stuck
    trained = int(ckpt["epoch"]) + 1  # saved at the end of epoch `epoch` (0-based)
    if cfg["trainer"]["max_epochs"] <= trained:
        why = f"has trained {trained} epochs already; set trainer.max_epochs > {trained} to train further from it"
        raise ConfigError("ckpt_path", str(path), why)
    return path, ckpt


def other_data(cfg: dict[str, Any], ckpt: dict[str, Any]) -> str:
    """`ckpt_path` trains on this run's data: where the checkpoint was trained on other data (its datamodule's
    settings, kept in it), a note saying so (fine-tuning by design; a forgotten `data=` by mistake)."""
    from attnlab.checkpoints import plain

    saved = ckpt.get("datamodule_hyper_parameters")
    if not (isinstance(saved, dict) and plain(saved)):  # a record: only plain values are compared and shown
        return ""
    # what makes the training set (attnlab.tasks: the task, its shape, and the run's seed); not data.seed, n_val,
    # n_test (the validation and test sets) or batch_size
    keys = ("task", "seq_len", "dim", "n_train")
    now = {f"data.{k}": cfg["data"][k] for k in keys} | {"seed": cfg["seed"]}
    then = {f"data.{k}": saved.get(k) for k in keys} | {"seed": saved.get("train_seed")}
    differ = [f"{k}={then[k]!r} (this run: {v!r})" for k, v in now.items() if then[k] is not None and then[k] != v]
    return f", trained on other data: {', '.join(differ)}" if differ else ""


def changed_settings(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key (old -> new)` for each key outside RESUMABLE whose value differs, compared as JSON, so by type too:
    limit_train_batches=1 (one batch) is not 1.0 (all)."""
    a, b = flatten(saved), flatten(new)
    return [
        f"{k} ({a.get(k)!r} -> {b.get(k)!r})"
        for k in sorted(set(a) | set(b))
        if k not in (*RESUMABLE, *IGNORED_ON_RESUME) and canonical(a.get(k)) != canonical(b.get(k))
    ]


def check_same_run(saved: dict[str, Any], new: dict[str, Any], folder: Path) -> None:
    """Refuse a resume whose config differs from the run's saved one outside RESUMABLE."""
    if changed := changed_settings(saved, new):
        may = ", ".join("+trainer.max_steps" if k == "trainer.max_steps" else k for k in RESUMABLE)  # (not a field)
        why = f"would change {', '.join(changed)}, which the checkpoints depend on; only {may} may"
        raise ConfigError("resume", str(folder), f"{why} change when resuming")


def check_planned(cfg: dict[str, Any], folder: Path) -> None:
    """A sweep's job without a checkpoint resumes with the settings its sweep planned for it: another value would
    leave its folder's name, jobs.json and the report's row naming one config and the job trained with another."""
    try:
        saved = run_config(folder)
    except ConfigError:  # never started, or its record cut short: what it ran with is the plan's
        return
    if changed := changed_settings(saved, cfg):
        why = f"is a job of the sweep in {folder.parent}, planned with other settings: this resume would change "
        why += f"{', '.join(changed)}; another value is a run or sweep of its own"
        raise ConfigError("resume", str(folder), why)


def refuse(item: Any, source: Path, why: str) -> NoReturn:
    raise ConfigError("resume", str(source), f"refusing its saved override {item!r}: {why}")


def check_saved_override(item: str, source: Path) -> None:
    """A saved override is input: it may set only the project's config keys (no `hydra.*`, no `_target_`), a
    config group only to an option in conf/ by plain name (a `../` path would load any YAML file), any other
    key only to a plain value (no `${...}`)."""
    key, sep, value = item.partition("=")
    key = key.lstrip("+~")
    # conf/<group>/: the project's or a user's own; not conf/hydra/ (Hydra's settings: never from a record)
    group = PLAIN_NAME.fullmatch(key) and key != "hydra" and (CONF / key).is_dir()
    ours = group or key in SCHEMA_KEYS  # or +trainer.X, checked against Lightning's signature
    if not sep or "_target_" in item or not (ours or trainer_argument(key)):
        refuse(item, source, "a run's overrides may only set the project's config keys (no hydra.*, no _target_)")
    if group:
        # one option, a list of them ([a,b]), or a sweep over either (a,b  [a],[a,b]  choice(a,b))
        options = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
        inner = value[len("choice(") : -1] if value.startswith("choice(") and value.endswith(")") else value
        for name in re.split(r"[\[\],\s]+", inner):
            if name and name != "null" and not (PLAIN_NAME.fullmatch(name) and name in options):
                refuse(item, source, f"{key} may only name its options in conf/{key}/: {options}")
    elif UNSAFE_VALUE.search(value) or not_plain_reference(value):  # ${data.seq_len}: a key's value, accepted
        refuse(item, source, "a saved value must be plain (no ${...} but a key reference, no control characters)")


def check_parses(item: str, source: Path, sweep: bool) -> None:
    """Hydra can read the saved override (else its multi-line error, naming no record), as one value in a
    run's record (a sweep's `a,b` there: Hydra's "requires --multirun")."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([item])
    except Exception as e:
        refuse(item, source, f"Hydra cannot read it ({' '.join(str(e).split())[:120]})")
    if override.is_sweep_override() and not sweep:
        refuse(item, source, "a run's record holds one value, not a sweep's")


def check_saved_launcher(item: str, source: Path) -> None:
    """A sweep's saved `hydra/launcher=<plain name>`, or a plain value of a known `hydra.launcher.*` setting."""
    key, _, value = item.partition("=")
    known = key in ("hydra/launcher", "hydra.verbose") or key.removeprefix("hydra.launcher.") in LAUNCHER_SETTINGS
    plain = PLAIN_NAME if key == "hydra/launcher" else PLAIN_SETTING
    if "_target_" in item or not (known and plain.fullmatch(value)):
        refuse(item, source, "not a plain launcher setting")


def saved_overrides(folder: Path, sweep: bool) -> list[str]:
    """What the run (.hydra/overrides.yaml) or sweep (multirun.yaml) was started with, checked."""
    record = folder / ("multirun.yaml" if sweep else ".hydra/overrides.yaml")
    if not record.is_file():
        why = f"not a {'sweep' if sweep else 'run'} folder ({record} does not exist)"
        if sweep and run_folder.holds_run(folder):
            why += "; it is a run's folder: resume it without -m"
        elif not sweep and (folder / "multirun.yaml").is_file():
            why += "; it is a sweep's folder: add -m to continue the sweep, or resume one of its job folders"
        raise ConfigError("resume", str(folder), why)
    try:  # unresolved: an interpolation in a record is seen (and refused), never run
        check_no_aliases(text := record.read_text())
        saved = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
        task = list(saved["hydra"]["overrides"]["task"] if sweep else saved)
        launch = list(saved["hydra"]["overrides"]["hydra"]) if sweep else []
    except Exception as e:
        why = first_line(e) if isinstance(e, ValueError) else type(e).__name__
        raise ConfigError("resume", str(folder), f"{record} is unreadable ({why})") from e
    for item in [*task, *launch]:
        if not isinstance(item, str):
            refuse(item, record, "not an override")
    # `resume`, `hydra.sweep.dir` and `hydra.mode`: set again by this resume and by -m
    task = [item for item in task if item.split("=", 1)[0] != "resume"]
    launch = [item for item in launch if item.split("=", 1)[0] not in ("hydra.sweep.dir", "hydra.mode")]
    for item in task:
        check_saved_override(item, record)
        check_parses(item, record, sweep)
    # Not run from a record, and said so (a run or sweep started with them still continues): where it writes or
    # sends data (NOT_FROM_RECORDS: the resume's check of the config asks for a changed one again), and of a
    # sweep's Hydra settings all but how its jobs were launched (logging, say).
    places = [item for item in task if item.split("=", 1)[0].lstrip("+~") in NOT_FROM_RECORDS]
    left = [item for item in launch if not item.startswith(SWEEP_HYDRA_KEYS)]
    for item in places:  # (output_dir: the folder being resumed decides, and the command line may not set it)
        why = "the folder being resumed decides" if item.startswith("output_dir") else "give it again to resume"
        print(f"[attnlab] not taken over from {record}: {item!r} ({why})", file=sys.stderr)
    for item in left:
        print(f"[attnlab] not taken over from {record}: {item!r} (give it again if wanted)", file=sys.stderr)
    task = [item for item in task if item not in places]
    launch = [item for item in launch if item.startswith(SWEEP_HYDRA_KEYS)]
    for item in launch:
        check_saved_launcher(item, record)
    return [*task, *launch]


RERUN_FLAGS = {"--config-path": "path", "-cp": "path", "--config-dir": "dir", "-cd": "dir", "--config-name": "name",
               "-cn": "name"}  # fmt: skip


def check_rerun_config(argv: list[str]) -> None:
    """`--config-path <run>/.hydra --config-name config` (re-run a run; also `--config-dir`, and `--flag=value`)
    composes from a record: it may set the task's values (which attnlab builds from, by name), not Hydra's
    settings (`hydra.callbacks` would be instantiated: anything run), nor pick them (a defaults list, a file of
    package hydra). The config named and every group file of such a folder are checked. ConfigError otherwise."""
    given: dict[str, str] = {}
    for arg, after in itertools.zip_longest(argv, argv[1:], fillvalue=""):
        flag, sep, value = arg.partition("=")
        if flag in RERUN_FLAGS:
            given[RERUN_FLAGS[flag]] = value if sep else after
    name = given.get("name", "train").removesuffix(".yaml") + ".yaml"
    for folder in filter(None, (given.get("path"), given.get("dir"))):
        flag = "--config-path" if folder == given.get("path") else "--config-dir"
        # the config it composes from, and the group files a choice can pick (a record's hydra.yaml is neither)
        groups = [path for path in sorted(Path(folder).rglob("*.yaml"))[:1000] if path.parent != Path(folder)]
        for path in [Path(folder) / name, *groups]:
            try:
                text = path.read_text()
                record = yaml.safe_load(text)
            except (OSError, ValueError, yaml.YAMLError):
                continue  # Hydra says what is wrong with it, if it reads it
            try:
                check_no_aliases(text)
            except ValueError as e:
                raise ConfigError(flag, str(path), str(e)) from e
            package = re.search(r"^#\s*@package\s+(\S+)", text, re.MULTILINE)
            found = [key for key in ("hydra", "defaults") if isinstance(record, dict) and key in record]
            if package and package[1].split(".")[0] == "hydra":
                found.append(f"@package {package[1]}")
            if found:
                raise ConfigError(flag, str(path), f"a run's record sets the task's values only, not {found[0]}")


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=<folder>` becomes the folder's own overrides, the ones given now (which win), `resume=true` and
    the folder as output, quoted for Hydra (a job folder `data=halfswap,seed=1` is no valid value otherwise)."""
    given = [a for a in argv[1:] if a.split("=", 1)[0] == "resume"]
    # resume=true|false: the config's own value, the folder being hydra.run.dir's (as a DDP process of rank > 0
    # gets this rewritten command line again)
    if not given or given[-1].split("=", 1)[1].lower() in ("true", "false"):
        return argv
    sweep = "-m" in argv or "--multirun" in argv
    folder = Path(given[-1].split("=", 1)[1])
    flags, now = [], []
    # Hydra's flags (`--cfg job`: the flag's value with it), the overrides given now
    for before, arg in itertools.pairwise(["", *argv[1:]]):
        if arg.startswith("-") or before in HYDRA_VALUE_FLAGS or (before in ("--info", "-i") and arg in INFO_TOPICS):
            flags.append(arg)
        elif arg.split("=", 1)[0] != "resume":
            now.append(arg)
    dir_key = f"hydra.{'sweep' if sweep else 'run'}.dir"
    try:
        run_folder.check_name(folder, "resume")
        saved = saved_overrides(folder, sweep)
        if elsewhere := [item for item in now if item.split("=", 1)[0] == dir_key]:  # (below, the folder wins)
            why = f"continues in the folder it names; {elsewhere[-1]!r} cannot move it "
            why += "(copy the folder, resume the copy)"
            raise ConfigError("resume", str(folder), why)
        check_saved_start(folder, saved, now, sweep)
        if not sweep:
            check_unrecorded_job(folder, now)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    where = f"{dir_key}={hydra_quote(str(folder))}"
    overrides: dict[str, str] = {}  # one per key, the last given
    for item in [*saved, *now, "resume=true", where]:
        key = item.split("=", 1)[0]
        bare = key.lstrip("+~")
        added = overrides.get(bare, "").startswith("+")  # a key the run added (+trainer.max_steps)
        if added and key.startswith("~"):  # taken away: not added, rather than deleted from the schema's config
            del overrides[bare]
            continue
        if added and not key.startswith("+"):
            item = f"+{item}"  # a new value for it: added again, with it
        overrides[bare] = item
    return [argv[0], *flags, *overrides.values()]


def check_saved_start(folder: Path, saved: list[str], now: list[str], sweep: bool) -> None:
    """A record's `ckpt_path` names a file outside its folder, which a record may not make a run load: taken
    over only where it is never loaded (a run continuing from checkpoints of its own), else asked for again."""
    start = [item for item in saved if item.split("=", 1)[0].lstrip("+") == "ckpt_path"]
    if not start or any(item.split("=", 1)[0].lstrip("+") == "ckpt_path" for item in now):
        return
    # (a resume from them loads one or is refused: attnlab.checkpoints.newest_checkpoint)
    if not sweep and any((folder / "checkpoints" / f"{n}.ckpt").is_file() for n in run_folder.CHECKPOINTS):
        return
    value = start[-1].split("=", 1)[1].strip("'\"")
    command = f"{run_folder.continue_command(folder, sweep)} ckpt_path={shlex.quote(value)}"
    why = f"it started from ckpt_path={value!r}, outside it, which a record may not make a run load: `{command}`"
    raise ConfigError("resume", str(folder), why)


def check_unrecorded_job(folder: Path, now: list[str]) -> None:
    """A sweep's job stopped in its first moments, before it wrote its config.json (what `check_planned` compares):
    its overrides are then all that says what its sweep planned, so a resume may change only RESUMABLE keys."""
    if (folder / run_folder.CONFIG).exists() or not in_sweep(folder):
        return
    for item in now:
        if not item.startswith("hydra") and item.split("=", 1)[0].lstrip("+~") not in RESUMABLE:
            why = f"is a job of the sweep in {folder.parent} that stopped before it wrote its {run_folder.CONFIG}: it "
            why += f"resumes with the settings its sweep planned, and {item!r} may change one; another value is a run "
            raise ConfigError("resume", str(folder), why + "or sweep of its own")


def preflight(config: Any) -> Path:
    """A single run's checks, before Hydra writes anything; then its folder claimed (maybe suffixed)."""
    check_overrides(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))  # as given: not resolved
    own = OmegaConf.masked_copy(config, [k for k in config if k not in ("hydra", "output_dir")])  # (Hydra's: set)
    if missing := sorted(OmegaConf.missing_keys(own)):  # e.g. ~data: no task chosen
        group = missing[0].split(".")[0]
        removed = f"~{group}" in config.hydra.overrides.task  # the group's choice taken away: what it may be
        options = "|".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))
        hint = f"choose {group}=<{options}> (~{group} removed it)" if removed else f"give {missing[0]}=<value>"
        raise ConfigError(missing[0], "???", f"is not set: {hint}")
    wanted = Path(str(config.hydra.run.dir))
    run_folder.check_name(wanted, "hydra.run.dir")
    cfg = to_plain(config, str(wanted))
    validate(cfg)
    if run_folder.secondary_process():
        return wanted
    start = plan(cfg, wanted, recorded=True)
    if (params := config.hydra.sweeper.get("params")) and not cfg["resume"]:  # experiment=... without -m: one job
        print(f"[attnlab] note: the config sweeps {', '.join(params)} (hydra.sweeper.params): this is one run of it, "
              "with the values given; add -m for the sweep", file=sys.stderr)  # fmt: skip
    finished = start.own and run_folder.status(wanted)[0] == "ok"
    # (a re-test would only rewrite its record)
    if finished and (spent := start.spent or recorded_spent(wanted, cfg)):
        ended = re.search(r"(\w+\.\w+)=", spent)[1]  # type: ignore[index]  # the setting named: what to raise
        more = f"a larger {ended}"
        if ended == "trainer.max_steps" and not start.inside:  # at an epoch's end a larger one is refused in turn
            more = "+trainer.max_steps=-1 and the epochs in trainer.max_epochs"  # (`steps_restart`)
        why = f"has finished ({spent}) and was tested: nothing is left to do; give {more} to train on"
        raise ConfigError("resume", str(wanted), why)
    start.check_trains()
    explicit = any(o.split("=", 1)[0] == "hydra.run.dir" for o in config.hydra.overrides.hydra)
    return run_folder.claim(wanted, "hydra.run.dir", explicit, bool(cfg["resume"]) and run_folder.holds_run(wanted))


class RunFolderCallback(Callback):
    """`preflight` in `on_run_start`, which Hydra calls before it creates the folder: a refused run leaves
    nothing behind. Hydra turns a callback's exception into a warning, so a refusal exits here."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        try:
            folder = preflight(config)
        except Exception as e:
            why = e if isinstance(e, ConfigError) else f"the run's checks failed: {one_line(e)}"
            print(f"error: {why}", file=sys.stderr)
            sys.exit(1)
        if folder != Path(str(config.hydra.run.dir)):
            with read_write(config.hydra):
                config.hydra.run.dir = str(folder)
