"""Run folders: one run per folder, locked while it runs (`.lock`, flock: the kernel releases it when the
process dies, even by SIGKILL), its status (`metrics.json`: finished; `FAILED` with the traceback;
`INTERRUPTED`: resumable), atomic writes, and paths read back from records kept inside it.
"""

import contextlib
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from attnlab.errors import CONTROL, ConfigError, printable

LOCK = ".lock"
FAILED, INTERRUPTED, METRICS = "FAILED", "INTERRUPTED", "metrics.json"
PREVIOUS_METRICS = "metrics.previous.json"  # a resumed run's earlier results, until it finishes
CONFIG = "config.json"  # the config a run trains with, resolved (attnlab.config.run_config reads it)
EVALUATION, FIGURE = "evaluation.json", "length_generalization.png"  # attnlab.evaluate's

_held: dict[str, FileLock] = {}  # folder -> its lock, held by this process


def try_lock(folder: Path) -> bool:
    key = str(folder.resolve())
    if key in _held:
        return True
    lock = FileLock(folder / LOCK, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    _held[key] = lock
    return True


def held() -> list[Path]:
    return [Path(p) for p in _held]


def release(folder: Path) -> None:
    lock = _held.pop(str(folder.resolve()), None)
    if lock is not None:
        lock.release()


@contextlib.contextmanager
def locked(folder: Path, key: str) -> Iterator[None]:
    if not try_lock(folder):
        raise ConfigError(key, str(folder), "another process is running in this folder right now")
    try:
        yield
    finally:
        release(folder)


def requeued() -> bool:
    """SLURM restarted this job (time limit, preemption): it continues its own folder (hydra/launcher=slurm)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def secondary_process() -> bool:
    """A DDP process of rank > 0: it re-runs the script into the folder rank 0 has claimed and locked."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def holds_run(folder: Path, marker: str = ".hydra") -> bool:
    """A run: Hydra's record or checkpoints (`train()` called directly has no `.hydra`). A sweep: multirun.yaml."""
    return (folder / marker).exists() or (marker == ".hydra" and (folder / "checkpoints").is_dir())


def taken(folder: Path) -> bool:
    """Holds a run or a sweep: a new one of either goes elsewhere."""
    return holds_run(folder) or holds_run(folder, "multirun.yaml")


CHECKPOINTS = ("last", "best", "interrupted")  # a run's checkpoints/<name>.ckpt: what a resume continues from
# what attnlab writes in a run folder through `replacing`
RUN_FILES = (CONFIG, METRICS, FAILED, INTERRUPTED, EVALUATION, FIGURE, *(f"checkpoints/{n}.ckpt" for n in CHECKPOINTS))


def check_name(folder: str | Path, key: str) -> None:
    """A folder every writer keeps to: Hydra reads `${` in hydra.run.dir / hydra.sweep.dir again as an interpolation
    when it sets runtime.output_dir (a folder named `a${oc.env:HOME}` would be claimed and another written), and
    Lightning's TensorBoard logger expands `$NAME` in its folder (`d$HOME` would write into `d/root`)."""
    if "${" in str(folder):
        why = "Hydra would read '${' in a folder's name as an interpolation and write elsewhere: rename the folder"
        raise ConfigError(key, str(folder), why)
    if re.search(r"\$[A-Za-z_]", os.path.abspath(folder)):  # (the working folder's name too: the logger's is absolute)
        why = "TensorBoard's logger would read '$NAME' in a folder's path as a variable and write elsewhere: rename it"
        raise ConfigError(key, str(folder), why + (" (or the value it is named by)" if "subdir" in key else ""))


def claim(folder: str | Path, key: str, explicit: bool, resuming: bool, marker: str = ".hydra") -> Path:
    """Claim and lock `folder` for a run (marker `.hydra`) or a sweep (`multirun.yaml`). A default (timestamped)
    name: the first free of folder, folder-2, ...; an explicit one: refused if it holds a run; resuming: it must
    hold the run, and nobody else may be running it."""
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
        if not taken(path) and try_lock(path):
            if not taken(path):  # re-check under the lock: a run may have claimed it meanwhile
                return path
            release(path)
        if explicit:
            kind = "sweep" if holds_run(path, "multirun.yaml") else "run"  # (a run is not put in a sweep's folder)
            how = f"choose a new folder, or continue it with `{continue_command(path, kind == 'sweep')}`"
            raise ConfigError(key, str(path), f"holds another {kind}; {how}")
    raise ConfigError(key, str(base), "no free folder name")


def continue_command(folder: Path, sweep: bool) -> str:
    return f"python scripts/train.py {'-m ' if sweep else ''}resume={shlex.quote(str(folder))}"


def write_marker(folder: Path, name: str, text: str) -> None:
    with contextlib.suppress(OSError), replacing(folder / name) as tmp:  # (a full disk may not take the note)
        tmp.write_text(text)  # (replacing: never through a link left under the marker's name)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """`<path>.<random>.tmp` to write, renamed over `path` when the block ends (atomic: a reader or a kill finds the
    old file or the new one, never half of one); removed if the block fails. A name of its own: two processes
    writing one file at once (two reports of a sweep) each rename a whole one, and no link can lie in wait under it."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        # stamped at the clock's resolution, not the file system's tick (~4 ms): jobs that finish within one tick
        # are ordered by their metrics.json's stamp (console.finished_by)
        os.utime(tmp, ns=(now := time.time_ns(), now))
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal (StopOnSignal raises in the block): the old file stays
        tmp.unlink(missing_ok=True)
        raise


def remove_left_writes(folder: Path) -> None:
    """The files killed processes were writing (`replacing`'s, of RUN_FILES) in a run folder this process now holds:
    no other process writes them meanwhile. Best effort: what cannot be removed stays, harmless."""
    for name in RUN_FILES:
        target = folder / name
        for left in target.parent.glob(f"{target.name}.*.tmp"):
            if re.fullmatch(r"[0-9a-f]{8}", left.name[len(target.name) + 1 : -4]) and not left.is_dir():
                with contextlib.suppress(OSError):
                    left.unlink()


STAGING = ".report-"  # a report's work folder, in the sweep's


@contextlib.contextmanager
def staging(folder: Path, view: str) -> Iterator[Path]:
    """A work folder in `folder` (STAGING), locked while in use, where a report writes its files to move them in
    whole when done (files by `os.replace`, the folder `view` by `swap_in`); removed at the end. Work folders killed
    reports left are removed first; if stopped between `swap_in`'s two renames, the `view` before is put back."""
    remove_left_staging(folder)
    work = Path(tempfile.mkdtemp(prefix=STAGING, dir=folder))
    held = os.open(work, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # (the kernel drops it when this process dies, however)
        yield work
    finally:
        if not (folder / view).exists() and (before := next(work.glob(f"{view}.old*"), None)):
            before.rename(folder / view)
        shutil.rmtree(work, ignore_errors=True)
        os.close(held)


def swap_in(work: Path, folder: Path) -> None:
    """Rename `work/<folder's name>` to `folder`, the one there moved into `work` (deleted with it). The newest wins:
    another report's renamed in meanwhile is moved aside in turn."""
    for attempt in range(10):
        with contextlib.suppress(FileNotFoundError):  # (none yet, or another report's swap moved it)
            folder.rename(work / f"{folder.name}.old{attempt}")
        try:
            (work / folder.name).rename(folder)
            return
        except OSError:
            if not folder.exists():  # not another report's renamed in since: fail (the one before goes back)
                raise
    raise OSError(f"{folder} kept being replaced by other reports")


def remove_left_staging(folder: Path) -> None:
    """Remove the work folders of reports killed while they wrote (SIGKILL): no process holds their lock. One made
    a moment ago, still empty, may not be locked yet: left."""
    for work in folder.glob(f"{STAGING}*"):
        try:
            if work.is_symlink() or (not any(work.iterdir()) and time.time() - work.stat().st_mtime < 10):
                continue
            held = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):  # gone meanwhile (another report's, finished), or a file
            continue
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(work, ignore_errors=True)
        except BlockingIOError:  # a report writing in it now
            pass
        finally:
            os.close(held)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def status(folder: Path) -> tuple[str, str]:
    """(ok | failed | interrupted | unfinished, reason). A marker wins over metrics.json."""
    for name in (FAILED, INTERRUPTED):
        if (folder / name).is_file():
            lines = (folder / name).read_text(errors="replace").strip().splitlines()
            # shown on terminals and in tables: control characters (a terminal's escape sequences) escaped
            return name.lower(), printable(lines[-1]) if lines else ""
    metrics = folder / METRICS
    if metrics.is_file():
        try:
            data = json.loads(metrics.read_text())
        except (ValueError, OSError, RecursionError) as e:  # (RecursionError: JSON nested past Python's limit)
            return "failed", f"metrics.json is unreadable ({type(e).__name__})"
        if not isinstance(data, dict) or data.get("test/acc") is None:
            return "failed", "metrics.json has no test/acc"
        return "ok", ""
    return "unfinished", ""


def inside(folder: Path, relative: Any, key: str, source: Path, root: str = "") -> str:
    """The real path of `folder / relative`, a path read from a record, refused unless it stays inside (no
    absolute path, no `..`, no symlink out). `root`: `folder`'s real path, for a caller checking many."""
    path = Path(relative if isinstance(relative, str) and not CONTROL.search(relative) else "..")  # (NUL, surrogates)
    inward = not path.is_absolute() and ".." not in path.parts and path.name not in ("", ".")
    real = os.path.realpath(folder / path)  # (os.path: Path.resolve is 5x slower, and a sweep reads 1,000s)
    if not (inward and real.startswith((root or os.path.realpath(folder)) + os.sep)):
        raise ConfigError(key, str(source), f"names a job folder outside the sweep: {relative!r}")
    return real


def check_no_links_out(folder: Path, key: str, depth: int = 2) -> None:
    """Refuse a folder about to be written (resumed, evaluated, reported) that holds a symbolic link to
    outside it: every write would follow it."""
    root = folder.resolve()
    for here, dirs, files in os.walk(folder):  # (never into a linked folder: it is checked as a link)
        for entry in (Path(here) / name for name in dirs + files):
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise ConfigError(key, str(folder), f"holds a link to outside it ({entry.relative_to(folder)})")
        if len(Path(here).relative_to(folder).parts) >= depth:
            dirs.clear()


def checkpoint_path(run_dir: str | Path, ckpt: str, key: str = "ckpt") -> Path:
    """`best`, `last`, or a path to a .ckpt file of the run, as given or relative to the run folder (as
    evaluation.json and evaluate.py name it): inside its folder (another run's weights, scored on this run's data
    and recorded as its own, would be another model's numbers)."""
    run = Path(run_dir)
    path = run / "checkpoints" / f"{ckpt}.ckpt" if ckpt in ("best", "last") else Path(ckpt)
    inside = run / path  # a relative path: the run's file first (evaluation.json's), then as given
    if not path.is_absolute() and inside.is_file():
        path = inside
    if not path.is_file():
        raise ConfigError(key, str(ckpt), "no such checkpoint file, as given or in the run folder")
    if not path.resolve().is_relative_to(run.resolve()):
        raise ConfigError(key, str(ckpt), f"not this run's: give best, last or a .ckpt file inside {run_dir}")
    return path
