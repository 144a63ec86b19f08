"""Resuming: one plan per run, computed once, and the checks that make a resume continue the same run.

`python scripts/train.py resume=<folder>` (`-m` for a sweep) is rewritten before Hydra parses anything
(`resume_argv`): the folder's own saved overrides, checked as untrusted input (`check_saved_override`),
then the ones given now, `resume=true` and the folder as output. A single run is then checked before
Hydra writes into its folder (`RunFolderCallback`), a sweep's jobs by the sweeper, both through `check`.

`plan(c, folder)`: where training starts. A resume continues from the folder's newest loadable
checkpoint, provided its config differs from the saved one only in `RESUMABLE` keys (budget, display,
threads: never what the checkpoints hold) and the checkpoint holds a model of this config; a new run may
start from another run's checkpoint (`ckpt_path`). Refusals are ConfigErrors, before a file is touched.
"""

from __future__ import annotations

import datetime
import functools
import re
import shlex
import sys
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf, open_dict, read_write

from attnlab import run_folder
from attnlab.config import TrainConfig, saved_config, to_plain, trainer_argument, validate
from attnlab.errors import ConfigError
from attnlab.naming import canonical, flatten, hydra_quote

# Keys a resume may change: how long to train and how to show it, never what the checkpoints hold.
RESUMABLE = (
    "trainer.max_epochs",
    "early_stop.patience",
    "early_stop.min_delta",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.accelerator",
    "progress",
    "verbose",
    "torch_threads",
    "eval.seq_lens",  # what is scored after the test, not what is trained
    "eval.n",
    "eval.batch_size",
    "eval.untrained",
)
# ... and the settings of the callbacks that end training (budgets, like trainer.max_epochs)
RESUMABLE_CALLBACKS = ("callbacks.timer.", "callbacks.early_stopping.")
IGNORED_ON_RESUME = ("resume", "output_dir")  # differ by construction
CONFIG_GROUPS = ("data", "model", "trainer", "logger", "callbacks", "experiment", "debug")  # conf/<group>/ folders
# Hydra settings a continued sweep takes over from the original (how its jobs were launched).
SWEEP_HYDRA_KEYS = ("hydra/launcher", "hydra.launcher.", "hydra.verbose")
CONF = Path(__file__).resolve().parents[2] / "conf"  # the project's config groups (scripts/train.py: ../conf)
PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")
# an interpolation (its resolvers read the environment, files), also as Hydra's escaped `$\{`, or control characters
UNSAFE_VALUE = re.compile(r"\$\\?\{|[\x00-\x1f]")
# Keys a record may not set: where the run writes (the folder being resumed decides that) and where a logger
# sends its data (a path or URL: give it on the command line when resuming).
NOT_FROM_RECORDS = ("output_dir", "resume", "logger.save_dir")
# A sweep's launcher settings a record may carry: plain numbers and names. Not `setup`, `srun_args`,
# `additional_parameters` (shell lines) or `submitit_folder` (a path).
LAUNCHER_SETTINGS = (
    "n_jobs", "partition", "timeout_min", "cpus_per_task", "mem_gb", "gpus_per_node", "account", "qos",
    "array_parallelism", "max_num_timeout", "signal_delay_s", "nodes", "tasks_per_node",
)  # fmt: skip
PLAIN_SETTING = re.compile(r"[A-Za-z0-9_.:+-]*")


class Plan(NamedTuple):
    """Where a run's training starts."""

    checkpoint: Path | None  # this run's newest checkpoint (a resume), or `ckpt_path`; None: from scratch
    epoch: int  # the checkpoint's epoch, from 1 (0 from scratch)
    step: int  # its global step: a resumed TensorBoard run hides what came after it
    own: bool  # the checkpoint is this run's own (a resume), not another run's (ckpt_path)


_checked: dict[str, Plan] = {}  # plans made by a run's checks (preflight, the sweeper), for its train() here


def check(c: dict[str, Any], folder: Path) -> Plan:
    """Every check a resume or a `ckpt_path` needs (ConfigError); the plan is kept for the run's `plan`."""
    _checked[canonical([str(folder.resolve()), c])] = made = make_plan(c, folder, recorded=True)
    return made


def plan(c: dict[str, Any], folder: Path) -> Plan:
    """The run's plan: the one its checks made in this process (taken, so that a later run re-checks), else
    made now (a sweep job in a worker process, whose sweep checked it; `train` called directly, without
    Hydra's record of the config). The checkpoints are read once per run."""
    return _checked.pop(canonical([str(folder.resolve()), c]), None) or make_plan(c, folder, recorded=False)


def make_plan(c: dict[str, Any], folder: Path, recorded: bool) -> Plan:
    """`recorded`: the run was started through Hydra, so its folder must hold the config it was trained with."""
    from attnlab.checkpoints import newest_checkpoint  # imported once the values are checked: it loads Lightning

    newest = None
    if c["resume"] and run_folder.holds_run(folder):
        run_folder.check_no_links_out(folder, "resume")
        newest = newest_checkpoint(folder)
    if newest is None:  # a new run, or a resumed one that saved no checkpoint yet: nothing depends on its config
        return Plan(check_start_checkpoint(c), 0, 0, own=False)
    path, ckpt = newest
    saved = saved_config(folder)
    if saved is not None:
        check_same_run(saved, c, folder)
    elif recorded:
        raise ConfigError(
            "resume", str(folder), ".hydra/config.yaml is missing or unreadable: cannot check that this is the same run"
        )
    check_held_settings(ckpt["hyper_parameters"], c, "resume", path)
    timer = c["callbacks"].get("timer")
    trained = float(ckpt.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {}).get("train", 0.0))
    if timer and trained >= duration_seconds(timer.get("duration")):
        raise ConfigError(
            "callbacks.timer.duration",
            timer.get("duration"),
            f"this run's timer has run out ({trained:.0f} s trained): nothing would train; "
            "give a longer duration to continue it",
        )
    return Plan(path, int(ckpt["epoch"]) + 1, int(ckpt["global_step"]), own=True)


def check_held_settings(hp: dict[str, Any], c: dict[str, Any], key: str, path: Path) -> None:
    """The weights fix the model's shape; the optimizer state restored with them fixes lr and weight
    decay: a checkpoint's hyperparameters must match the run's config."""
    held = {**{f"model.{k}": v for k, v in hp["model"].items()}, **{f"optim.{k}": hp.get(k) for k in c["optim"]}}
    wanted = flatten({"model": c["model"], "optim": c["optim"]})
    differ = [f"{k}={held.get(k)!r} (this run: {v!r})" for k, v in wanted.items() if held.get(k) != v]
    if differ:
        raise ConfigError(key, str(path), f"was trained with other settings: {', '.join(differ)}")


def check_start_checkpoint(c: dict[str, Any]) -> Path | None:
    """`ckpt_path`: a new run that starts from another run's checkpoint. It must load, hold a model of
    this run's shape, and leave epochs to train (else nothing would be trained or saved here)."""
    from attnlab.checkpoints import read_checkpoint

    if not c["ckpt_path"]:
        return None
    path = Path(c["ckpt_path"])
    ckpt = read_checkpoint(path, "ckpt_path")
    check_held_settings(ckpt["hyper_parameters"], c, "ckpt_path", path)
    trained = int(ckpt["epoch"]) + 1  # saved at the end of epoch `epoch` (0-based)
    if c["trainer"]["max_epochs"] <= trained:
        raise ConfigError(
            "ckpt_path",
            str(path),
            f"has trained {trained} epochs already; set trainer.max_epochs > {trained} to train further from it",
        )
    return path


def duration_seconds(duration: Any) -> float:
    """A Timer duration ("DD:HH:MM:SS" or {days, hours, ...}) in seconds; infinite for None (no limit)."""
    if duration is None:
        return float("inf")
    if not isinstance(duration, dict):
        duration = dict(zip(("days", "hours", "minutes", "seconds"), map(int, str(duration).split(":")), strict=True))
    return datetime.timedelta(**duration).total_seconds()


def check_same_run(saved: dict[str, Any], new: dict[str, Any], folder: Path) -> None:
    """Refuse a resume whose config (`new`) differs from the run's saved one (`saved`, read by
    config.saved_config: checked against the schema) outside RESUMABLE."""
    a, b = flatten(saved), flatten(new)
    # compared as JSON, so by type too: limit_train_batches=1 (one batch) is not 1.0 (all)
    changed = [
        f"{k} ({a.get(k)!r} -> {b.get(k)!r})"
        for k in sorted(set(a) | set(b))
        if k not in (*RESUMABLE, *IGNORED_ON_RESUME)
        and not k.startswith(RESUMABLE_CALLBACKS)
        and canonical(a.get(k)) != canonical(b.get(k))
    ]
    if changed:
        raise ConfigError(
            "resume",
            str(folder),
            f"would change {', '.join(changed)}, which the checkpoints depend on; "
            f"only {', '.join(RESUMABLE)} may change when resuming",
        )


@functools.cache
def schema_keys() -> frozenset[str]:
    """Every dotted key of the schema (the saved overrides of a resume are checked against them)."""
    return frozenset(flatten(OmegaConf.to_container(OmegaConf.structured(TrainConfig))))  # type: ignore[arg-type]


def refuse(item: Any, source: Path, why: str) -> NoReturn:
    raise ConfigError("resume", str(source), f"refusing its saved override {item!r}: {why}")


def check_saved_override(item: str, source: Path) -> None:
    """An entry of a run's or sweep's saved overrides is input, like any file read back: it may set only the
    project's own config keys (no `hydra.*`: callbacks and launchers are code; no `_target_`), a config group
    only to options that exist in conf/ (by plain name: a `../` path would load any YAML file), and any
    other key only to a plain value (no `${...}` interpolation)."""
    key, sep, value = item.partition("=")
    key = key.lstrip("+~")
    # callbacks.<name>.<argument>: a mapping the schema leaves open, checked against the callback's signature;
    # trainer.<argument> (saved as +trainer.X): any Trainer argument, checked against Lightning's signature
    ours = key in CONFIG_GROUPS or key in schema_keys() or key.startswith("callbacks.")
    if not sep or "_target_" in item or not (ours or trainer_argument(key)):
        refuse(item, source, "a run's overrides may only set the project's config keys (no hydra.*, no _target_)")
    if key in CONFIG_GROUPS:
        # one option, a list of them ([a,b]), or a sweep over either (a,b  [a],[a,b]  choice(a,b))
        options = sorted(p.stem for p in (CONF / key).glob("*.yaml"))  # conf/<group>/<name>.yaml
        inner = value[len("choice(") : -1] if value.startswith("choice(") and value.endswith(")") else value
        for name in re.split(r"[\[\],\s]+", inner):
            if name and name != "null" and not (PLAIN_NAME.fullmatch(name) and name in options):
                refuse(item, source, f"{key} may only name its options in conf/{key}/: {options}")
    elif key in NOT_FROM_RECORDS:
        refuse(item, source, f"{key} is not taken from a record (give it on the command line)")
    elif UNSAFE_VALUE.search(value):
        refuse(item, source, "a saved value must be plain (no ${...} interpolation, no control characters)")


def check_saved_launcher(item: str, source: Path) -> None:
    """A sweep's saved launcher setting (multirun.yaml): `hydra/launcher=<plain name>`, or a plain value for
    one of its `hydra.launcher.*` settings; never a `_target_` or an interpolation."""
    key, _, value = item.partition("=")
    if not key.startswith(SWEEP_HYDRA_KEYS):
        refuse(item, source, "not a launcher setting")
    known = key in ("hydra/launcher", "hydra.verbose") or key.removeprefix("hydra.launcher.") in LAUNCHER_SETTINGS
    plain = PLAIN_NAME if key == "hydra/launcher" else PLAIN_SETTING
    if "_target_" in item or not (known and plain.fullmatch(value)):
        refuse(item, source, "not a plain launcher setting")


def continue_command(folder: Path, sweep: bool) -> str:
    return f"python scripts/train.py {'-m ' if sweep else ''}resume={shlex.quote(str(folder))}"


def saved_overrides(folder: Path, sweep: bool) -> list[str]:
    """What the run (its .hydra/overrides.yaml) or sweep (multirun.yaml) was started with, checked."""
    record = folder / ("multirun.yaml" if sweep else ".hydra/overrides.yaml")
    if not record.is_file():
        what = "sweep folder" if sweep else "run folder"
        raise ConfigError("resume", str(folder), f"not a {what} ({record} does not exist)")
    try:
        # As written: unresolved, so that an interpolation in a record is seen (and refused), never run.
        saved = OmegaConf.to_container(OmegaConf.load(record), resolve=False)
        task = list(saved["hydra"]["overrides"]["task"] if sweep else saved)
        launch = list(saved["hydra"]["overrides"]["hydra"]) if sweep else []
    except Exception as e:
        raise ConfigError("resume", str(folder), f"{record} is unreadable ({type(e).__name__})") from e
    for item in [*task, *launch]:
        if not isinstance(item, str):
            refuse(item, record, "not an override")
    # `resume`, `hydra.sweep.dir` and `hydra.mode`: set again by this resume and by -m
    task = [item for item in task if item.split("=", 1)[0] != "resume"]
    launch = [item for item in launch if item.split("=", 1)[0] not in ("hydra.sweep.dir", "hydra.mode")]
    for item in task:
        check_saved_override(item, record)
    for item in launch:
        check_saved_launcher(item, record)
    return [*task, *launch]


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=<folder>` becomes the folder's own overrides (so the same config is composed), then the
    ones given now (which win, e.g. trainer.max_epochs=40), `resume=true` and the folder as output.
    Done before Hydra parses anything: a sweep job's folder name (`data=halfswap,seed=1`) is no
    valid override value, so it reaches Hydra quoted."""
    given = [a for a in argv[1:] if a.split("=", 1)[0] == "resume"]
    if not given:
        return argv
    sweep = "-m" in argv or "--multirun" in argv
    folder = Path(given[-1].split("=", 1)[1])
    try:
        saved = saved_overrides(folder, sweep)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    flags = [a for a in argv[1:] if a.startswith("-")]
    now = [a for a in argv[1:] if not a.startswith("-") and a.split("=", 1)[0] != "resume"]
    where = f"hydra.{'sweep' if sweep else 'run'}.dir={hydra_quote(str(folder))}"
    overrides = {item.split("=", 1)[0].lstrip("+~"): item for item in [*saved, *now, "resume=true", where]}
    return [argv[0], *flags, *overrides.values()]  # one per key, the last given


def preflight(config: Any) -> Path:
    """All checks of a single run that need no training, before Hydra writes anything; then claim
    its folder. Returns the folder (maybe suffixed). `config` is Hydra's full config (with `hydra`)."""
    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    wanted = Path(str(config.hydra.run.dir))
    with open_dict(task):
        task.output_dir = str(wanted)
    c = to_plain(task)
    validate(c)
    if run_folder.secondary_process():
        return wanted
    check(c, wanted)
    explicit = any(o.split("=", 1)[0] == "hydra.run.dir" for o in config.hydra.overrides.hydra)
    return run_folder.claim(wanted, "hydra.run.dir", explicit, bool(c["resume"]) and run_folder.holds_run(wanted))


class RunFolderCallback(Callback):
    """Checks a single run and claims its folder in `on_run_start`, which Hydra calls after composing
    the config and before it creates the folder or writes `.hydra/`: a refused run leaves nothing
    behind, and a refused resume leaves its run untouched. (Hydra turns exceptions raised in callbacks
    into warnings, so a refusal exits here.)"""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        try:
            folder = preflight(config)
        except Exception as e:  # Hydra would turn it into a warning and run unchecked: a refusal instead
            why = e if isinstance(e, ConfigError) else f"the run's checks failed: {type(e).__name__}: {e}"
            print(f"error: {why}", file=sys.stderr)
            sys.exit(1)
        if folder != Path(str(config.hydra.run.dir)):
            with read_write(config.hydra):
                config.hydra.run.dir = str(folder)
