"""Run folders: one run per folder, resumes that cannot corrupt a run, and each folder's status.

A folder *holds a run* once it has `.hydra/` (written by Hydra when the run starts). The rules:
- A new run claims a folder of its own. The default name (a timestamp) gets a `-2`, `-3`, ...
  suffix when the folder is taken, so two runs started in the same second never share one; an
  explicit `hydra.run.dir` / `hydra.sweep.dir` that holds a run is refused.
- While a run or sweep works in a folder it holds an exclusive lock on `<folder>/.lock`
  (`fcntl.flock`, released by the kernel when the process dies, even by SIGKILL), so a second
  process can neither start nor resume a run that is still running.
- A resume continues the *same* run: its composed config may differ from the saved one only in
  `RESUMABLE` keys (budget, display, threads); anything that changes what the checkpoints hold is
  refused before a file is touched.
- The status of a run is in its folder: `metrics.json` (finished), `FAILED` (error, with the
  traceback) or `INTERRUPTED` (stopped by a signal, resumable). Both markers are removed when the
  run is resumed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback

from attnlab.errors import ConfigError

LOCK = ".lock"
FAILED, INTERRUPTED, METRICS = "FAILED", "INTERRUPTED", "metrics.json"
PREVIOUS_METRICS = "metrics.previous.json"  # a resumed run's earlier results, until it finishes
SWEEP_JOBS_ENV = "ATTNLAB_SWEEP_JOBS"  # a sweep's job count, for its jobs' "job k/N" lines (set by the sweeper)
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
CHECKPOINTS = ("last", "best", "interrupted")  # resume candidates; see newest_checkpoint
CONFIG_GROUPS = ("data", "model", "trainer", "logger", "callbacks", "experiment", "debug")  # conf/<group>/ folders

_held: dict[str, int] = {}  # folder -> file descriptor of its lock, for the life of this process


# ---------------------------------------------------------------- locks and claims


def try_lock(folder: Path) -> bool:
    """Take `folder`'s lock (non-blocking); False when another process holds it."""
    key = str(folder.resolve())
    if key in _held:
        return True
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd
    return True


def held() -> list[Path]:
    """The folders this process holds the lock of (a run's or a sweep's)."""
    return [Path(p) for p in _held]


def release(folder: Path) -> None:
    fd = _held.pop(str(folder.resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


@contextlib.contextmanager
def locked(folder: Path, key: str) -> Iterator[None]:
    """Hold `folder`'s lock for the block; ConfigError(key) if another process has it."""
    if not try_lock(folder):
        raise ConfigError(key, str(folder), "another process is running in this folder right now")
    try:
        yield
    finally:
        release(folder)


def requeued() -> bool:
    """This process is a SLURM job that SLURM restarted (time limit, preemption, `scontrol requeue`):
    it continues its own run folder (hydra/launcher=slurm)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def secondary_process() -> bool:
    """A process Lightning started for DDP rank > 0 (it re-runs the script into the same folder, which
    the first process has claimed and locked)."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def holds_run(folder: Path, marker: str = ".hydra") -> bool:
    """A run: Hydra's record or checkpoints (`train()` called directly has no `.hydra`). A sweep: multirun.yaml."""
    return (folder / marker).exists() or (marker == ".hydra" and (folder / "checkpoints").is_dir())


def claim(folder: str | Path, key: str, explicit: bool, resuming: bool, marker: str = ".hydra") -> Path:
    """Claim `folder` for a run (marker `.hydra`) or a sweep (marker `multirun.yaml`) and lock it.

    New, default name: the first of folder, folder-2, folder-3, ... that is free. New, explicit name:
    refused if it holds a run. Resuming: the folder must hold the run, and nobody else may run it."""
    base = Path(folder)
    what = "sweep" if marker == "multirun.yaml" else "run"
    for n in range(1, 10_000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(key, str(path), f"cannot create the folder ({e.strerror})") from e
        if not os.access(path, os.W_OK):
            raise ConfigError(key, str(path), "the folder is not writable")
        if resuming:
            if not holds_run(path, marker):
                raise ConfigError(key, str(path), f"holds no {what} to resume ({path / marker} does not exist)")
            if not try_lock(path):
                raise ConfigError(key, str(path), f"this {what} is still running in another process")
            return path
        if not holds_run(path, marker) and try_lock(path):
            if not holds_run(path, marker):  # re-check under the lock: a run may have claimed it meanwhile
                return path
            release(path)
        if explicit:
            raise ConfigError(
                key,
                str(path),
                f"holds another {what}; choose a new folder, or continue it with "
                f"`python scripts/train.py {'-m ' if what == 'sweep' else ''}resume={path}`",
            )
    raise ConfigError(key, str(base), "no free folder name")


# ---------------------------------------------------------------- status of a run folder


def write_marker(folder: Path, name: str, text: str) -> None:
    with contextlib.suppress(OSError):  # the disk that failed the run may not take the note
        (folder / name).write_text(text)


def clear_markers(folder: Path) -> None:
    for name in (FAILED, INTERRUPTED):
        (folder / name).unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def status(folder: Path) -> tuple[str, str]:
    """(status, reason): ok | failed | interrupted | unfinished. A marker wins over metrics.json,
    so a failed run that something else wrote metrics into is still reported as failed."""
    for name, state in ((FAILED, "failed"), (INTERRUPTED, "interrupted")):
        path = folder / name
        if path.is_file():
            lines = path.read_text(errors="replace").strip().splitlines()
            return state, lines[-1] if lines else ""
    metrics = folder / METRICS
    if metrics.is_file():
        try:
            data = json.loads(metrics.read_text())
        except (ValueError, OSError) as e:
            return "failed", f"metrics.json is unreadable ({type(e).__name__})"
        if not isinstance(data, dict) or data.get("test/acc") is None:
            return "failed", "metrics.json has no test/acc"
        return "ok", ""
    return "unfinished", ""


# ---------------------------------------------------------------- resuming


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the keys its version did not have yet set to their schema defaults, which are
    resolved against it (model.dim: ${data.dim})."""
    from omegaconf import OmegaConf

    from attnlab.config import TrainConfig

    schema = OmegaConf.to_container(OmegaConf.structured(TrainConfig), resolve=False, enum_to_str=True)
    merged = OmegaConf.merge(OmegaConf.create(schema), OmegaConf.create(saved))
    return flatten(OmegaConf.to_container(merged, resolve=True, throw_on_missing=False))  # type: ignore[arg-type]


def check_same_run(saved: dict[str, Any], new: dict[str, Any], folder: Path) -> None:
    """Refuse a resume whose config differs from the run's saved one outside RESUMABLE. A key the run's
    version did not have yet counts as its default (a run saved before `logger` existed logged to
    TensorBoard)."""
    try:
        a = with_defaults(saved)
    except Exception as e:  # an interpolation that does not resolve, a wrong type: unreadable, not a licence
        raise ConfigError("resume", str(folder), f"its saved config does not load ({type(e).__name__})") from e
    b = flatten(new)

    def same(x: Any, y: Any) -> bool:  # by type too: limit_train_batches=1 (one batch) is not 1.0 (all)
        return json.dumps(x, sort_keys=True, default=str) == json.dumps(y, sort_keys=True, default=str)

    changed = [
        f"{k} ({a.get(k)!r} -> {b.get(k)!r})"
        for k in sorted(set(a) | set(b))
        if k not in RESUMABLE
        and k not in IGNORED_ON_RESUME
        and not k.startswith(RESUMABLE_CALLBACKS)
        and not same(a.get(k), b.get(k))
    ]
    if changed:
        raise ConfigError(
            "resume",
            str(folder),
            f"would change {', '.join(changed)}, which the checkpoints depend on; "
            f"only {', '.join(RESUMABLE)} may change when resuming",
        )


def schema_keys(schema: Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for f in fields(schema):
        section = f.default_factory  # type: ignore[misc]
        if is_dataclass(section):
            keys |= schema_keys(section, f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


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


def group_options(group: str) -> list[str]:
    """The options of a config group: conf/<group>/<name>.yaml."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def check_saved_override(item: str, source: Path) -> None:
    """An entry of a run's or sweep's saved overrides is input, like any file read back: it may set only the
    project's own config keys (no `hydra.*`: callbacks and launchers are code; no `_target_`), a config group
    only to options that exist in conf/ (by plain name: a `../` path would load any YAML file), and any
    other key only to a plain value (no `${...}` interpolation). Anything else is refused with one line."""
    from attnlab.config import TrainConfig, trainer_argument

    key, _, value = item.partition("=")
    key = key.lstrip("+~")

    def refuse(why: str) -> None:
        raise ConfigError("resume", str(source), f"refusing its saved override {item!r}: {why}")

    if not _ or "_target_" in item:
        refuse("a run's overrides may only set the project's config keys (no hydra.*, no _target_)")
    if key in CONFIG_GROUPS:
        # one option, a list of them ([a,b]), or a sweep over either (a,b  [a],[a,b]  choice(a,b))
        options = group_options(key)
        inner = value[len("choice(") : -1] if value.startswith("choice(") and value.endswith(")") else value
        for name in re.split(r"[\[\],\s]+", inner):
            if name and name != "null" and not (PLAIN_NAME.fullmatch(name) and name in options):
                refuse(f"{key} may only name its options in conf/{key}/: {options}")
        return
    if key in NOT_FROM_RECORDS:
        refuse(f"{key} is not taken from a record (give it on the command line)")
    # callbacks.<name>.<argument>: a mapping the schema leaves open, checked against the callback's signature;
    # trainer.<argument> (saved as +trainer.X): any Trainer argument, checked against Lightning's signature
    allowed = key in schema_keys(TrainConfig) or key.startswith("callbacks.") or trainer_argument(key)
    if not allowed:
        refuse("a run's overrides may only set the project's config keys (no hydra.*, no _target_)")
    if UNSAFE_VALUE.search(value):
        refuse("a saved value must be plain (no ${...} interpolation, no control characters)")


def check_saved_launcher(item: str, source: Path) -> None:
    """A sweep's saved launcher setting (multirun.yaml): `hydra/launcher=<plain name>`, or a plain value for
    one of its `hydra.launcher.*` settings; never a `_target_` or an interpolation."""
    key, _, value = item.partition("=")
    setting = key.removeprefix("hydra.launcher.") if key.startswith("hydra.launcher.") else None
    ok = (key == "hydra/launcher" and PLAIN_NAME.fullmatch(value)) or (
        (key == "hydra.verbose" or setting in LAUNCHER_SETTINGS) and PLAIN_SETTING.fullmatch(value)
    )
    if not ok or "_target_" in item:
        raise ConfigError("resume", str(source), f"refusing its saved override {item!r}: not a plain launcher setting")


def inside(folder: Path, relative: Any, key: str, source: Path) -> Path:
    """`folder / relative` for a relative path read from a record (jobs.json's job folders), refused unless it
    stays inside `folder`: no absolute path, no `..`, nothing that resolves elsewhere (a symlink)."""
    path = Path(relative) if isinstance(relative, str) and relative and "\x00" not in relative else None
    if path is None or path.is_absolute() or ".." in path.parts or path.name in ("", "."):
        raise ConfigError(key, str(source), f"names a job folder outside the sweep: {relative!r}")
    target = folder / path
    if not target.resolve().is_relative_to(folder.resolve()):
        raise ConfigError(key, str(source), f"names a job folder outside the sweep: {relative!r}")
    return target


def check_no_links_out(folder: Path, key: str, depth: int = 2) -> None:
    """Refuse a folder about to be written (a run resumed or evaluated, a sweep continued or reported) that
    holds a symbolic link leading outside it: every write would follow it (a lock, a checkpoint, a report)."""
    root = folder.resolve()

    def walk(here: Path, level: int) -> None:
        try:
            entries = list(here.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise ConfigError(key, str(folder), f"holds a link to outside it ({entry.relative_to(folder)})")
            if level < depth and entry.is_dir() and not entry.is_symlink():
                walk(entry, level + 1)

    walk(folder, 0)


# ---------------------------------------------------------------- checkpoints


def checkpoint_info(path: Path) -> dict[str, Any] | None:
    """epoch/global_step/shapes of a checkpoint, or None when it does not load."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        timer = ckpt.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {})
        return {
            "epoch": int(ckpt["epoch"]),
            "global_step": int(ckpt["global_step"]),
            "hyper_parameters": ckpt["hyper_parameters"],
            "timer_seconds": float(timer.get("train", 0.0)),  # a Timer callback's training time so far
        }
    except Exception:
        return None


def newest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume `folder` from: of last.ckpt, best.ckpt and interrupted.ckpt the loadable
    one with the most steps (mid-epoch ones resume exactly too: attnlab.data.TensorBatches). A file cut
    short by a kill is skipped, never trusted."""
    found, unloadable = [], []
    for rank, name in enumerate(CHECKPOINTS):
        path = folder / "checkpoints" / f"{name}.ckpt"
        info = checkpoint_info(path) if path.is_file() else None
        if info is not None:
            found.append((-info["global_step"], rank, path, info))
        elif path.is_file():
            unloadable.append(path.name)
    if not found and unloadable:  # (writes are atomic: a kill leaves <name>.tmp, never a cut .ckpt)
        raise ConfigError(
            "resume",
            str(folder),
            f"holds checkpoints none of which loads ({', '.join(unloadable)}): refusing to train over them; "
            "move them away to start the run again",
        )
    if not found:
        return None
    *_, path, info = min(found)
    return path, info


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The plain config a run was trained with (its .hydra/config.yaml), checked against the schema: a file
    that does not parse, has the wrong types or interpolations that do not resolve is a ConfigError."""
    from omegaconf import OmegaConf

    from attnlab.config import TrainConfig, to_plain

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError("run_dir", str(run_dir), f"not a run folder: {path} does not exist")
    try:
        schema = OmegaConf.structured(TrainConfig)
        OmegaConf.set_struct(schema.trainer, False)  # +trainer.X: kept as Hydra composed them (types checked)
        cfg = OmegaConf.merge(schema, OmegaConf.load(path))
        cfg.output_dir = str(run_dir)  # was an interpolation into Hydra's runtime
        return to_plain(cfg)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError("run_dir", str(run_dir), f"its .hydra/config.yaml does not load ({reason})") from e


def saved_config(folder: Path) -> dict[str, Any] | None:
    """The config a run saved, or None when a kill cut it short (or it is missing): Hydra writes it
    anew when the run continues, and the checkpoints' own hyperparameters are checked on load."""
    try:
        c = run_config(folder)
    except Exception:
        return None
    return c if all(isinstance(c.get(k), dict) for k in ("data", "model", "optim", "trainer")) else None


def check_held_settings(hp: dict[str, Any], c: dict[str, Any], key: str, path: Path) -> None:
    """The weights fix the model's shape; the optimizer state restored with them fixes lr and weight
    decay: a checkpoint's hyperparameters must match the run's config."""
    held = {**{f"model.{k}": v for k, v in hp["model"].items()}, **{f"optim.{k}": hp.get(k) for k in c["optim"]}}
    wanted = {
        **{f"model.{k}": v for k, v in c["model"].items()},
        **{f"optim.{k}": v for k, v in c["optim"].items()},
    }
    differ = [f"{k}={held.get(k)!r} (this run: {v!r})" for k, v in wanted.items() if held.get(k) != v]
    if differ:
        raise ConfigError(key, str(path), f"was trained with other settings: {', '.join(differ)}")


def check_start_checkpoint(c: dict[str, Any]) -> Path | None:
    """`ckpt_path`: a new run that starts from another run's checkpoint. It must load, hold a model of
    this run's shape, and leave epochs to train (else nothing would be trained or saved here)."""
    if not c["ckpt_path"]:
        return None
    path = Path(c["ckpt_path"])
    if not path.is_file():
        raise ConfigError("ckpt_path", str(path), "no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        epoch, hp = int(ckpt["epoch"]), ckpt["hyper_parameters"]
    except Exception as e:  # truncated, garbage, a pickle with code in it, a foreign file, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            "ckpt_path", str(path), f"not a loadable attnlab checkpoint ({type(e).__name__}: {reason})"
        ) from e
    check_held_settings(hp, c, "ckpt_path", path)
    trained = epoch + 1  # saved at the end of epoch `epoch` (0-based)
    if c["trainer"]["max_epochs"] <= trained:
        raise ConfigError(
            "ckpt_path",
            str(path),
            f"has trained {trained} epochs already; set trainer.max_epochs > {trained} to train further from it",
        )
    return path


def check_resume(folder: Path, c: dict[str, Any]) -> bool:
    """Whether resuming `folder` with config `c` continues from a checkpoint; refused (ConfigError) when it
    would change what its checkpoints depend on, or when its saved config cannot be read to tell: a record
    that cannot be read is a refusal, not a licence. With no checkpoint nothing depends on the config, so
    a run that failed on a bad value can be resumed with a corrected one."""
    newest = newest_checkpoint(folder)
    if newest is None:
        return False
    saved = saved_config(folder)
    if saved is None:
        raise ConfigError(
            "resume", str(folder), ".hydra/config.yaml is missing or unreadable: cannot check that this is the same run"
        )
    check_same_run(saved, c, folder)
    timer = c["callbacks"].get("timer")
    if timer and newest[1]["timer_seconds"] >= duration_seconds(timer.get("duration")):
        raise ConfigError(
            "callbacks.timer.duration",
            timer.get("duration"),
            f"this run's timer has run out ({newest[1]['timer_seconds']:.0f} s trained): nothing would train; "
            "give a longer duration to continue it",
        )
    return True


def duration_seconds(duration: Any) -> float:
    """A Timer duration ("DD:HH:MM:SS" or {days, hours, ...}) in seconds; infinite for None (no limit)."""
    import datetime

    if duration is None:
        return float("inf")
    if isinstance(duration, dict):
        return datetime.timedelta(**duration).total_seconds()
    days, hours, minutes, seconds = (int(part) for part in str(duration).split(":"))
    return datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()


def resuming(c: dict[str, Any], folder: Path) -> bool:
    return bool(c["resume"]) and holds_run(folder)


def preflight(config: Any) -> Path:
    """All checks of a single run that need no training, before Hydra writes anything; then claim
    its folder. Returns the folder (maybe suffixed). `config` is Hydra's full config (with `hydra`)."""
    from omegaconf import OmegaConf, open_dict

    from attnlab.config import to_plain, validate

    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    wanted = Path(str(config.hydra.run.dir))
    with open_dict(task):
        task.output_dir = str(wanted)
    c = to_plain(task)
    validate(c)
    if secondary_process():
        return wanted
    resume = resuming(c, wanted)
    if resume:
        check_no_links_out(wanted, "resume")
    if not (resume and check_resume(wanted, c)):  # else it continues from its own checkpoints
        check_start_checkpoint(c)
    explicit = any(o.split("=", 1)[0] == "hydra.run.dir" for o in config.hydra.overrides.hydra)
    return claim(wanted, "hydra.run.dir", explicit, resume)


class RunFolderCallback(Callback):
    """Checks a single run and claims its folder in `on_run_start`, which Hydra calls after composing
    the config and before it creates the folder or writes `.hydra/`: a refused run leaves nothing
    behind, and a refused resume leaves its run untouched. (Hydra turns exceptions raised in callbacks
    into warnings, so a refusal exits here.)"""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        import sys

        from omegaconf import read_write

        try:
            folder = preflight(config)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except Exception as e:  # Hydra would turn it into a warning and run unchecked: a refusal instead
            print(f"error: the run's checks failed: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(1)
        if folder != Path(str(config.hydra.run.dir)):
            with read_write(config.hydra):
                config.hydra.run.dir = str(folder)
