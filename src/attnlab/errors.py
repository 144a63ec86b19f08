"""The exceptions scripts turn into one line and an exit code, and the type checks of plain config values."""

import argparse
import contextlib
import enum
import errno
import os
import re
import signal
import sys
import types
import typing
from pathlib import Path
from typing import Any

# What a terminal or a table must not be handed raw: the C0 and C1 control characters and DEL (a terminal's escape
# sequences, a newline), the line and paragraph separators, the bidirectional overrides (text shown reordered), and
# lone surrogates (a file name that is not UTF-8). Not the rest of Unicode: a no-break or ideographic space, the
# zero-width joiner inside an emoji.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(value: Any) -> str:
    """`value` as text that a terminal or a table shows as it is: CONTROL characters written as their escapes. For
    what a record or a folder's name holds, and every error's one line."""
    return CONTROL.sub(lambda found: ascii(found[0])[1:-1], str(value))


class ConfigError(ValueError):
    """A value that cannot work: one line naming the key, the value and what is allowed (scripts exit 1)."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        shown = repr(value)
        if len(shown) > 300:  # (a crafted record's value: still a line a reader can take in)
            shown = f"{shown[:300]}... ({len(shown):,} characters)"
        super().__init__(f"{printable(key)}={shown} is invalid: {printable(allowed)}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, refusing a bad argument as every bad value is: one line, exit 1 (argparse: usage, exit 2)."""

    def error(self, message: str) -> typing.NoReturn:
        sys.exit(f"error: {message} (python scripts/{self.prog} --help)")


def stop_on_signals(left: str) -> None:
    """A script's SIGTERM / SIGINT (report, evaluate, plot_attention; train.py has its own): one line saying what it
    leaves (`left`), exit 128 + signal. Raised, not exited at once: a file being written is removed on the way out."""

    def stopped(signum: int, frame: object) -> None:
        print(f"interrupted ({signal.Signals(signum).name}): {left}", file=sys.stderr)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stopped)


def outlive_readers() -> None:
    """The scripts' stdout and stderr: where their reader has gone (`| head`, `| true`) or they cannot be written
    (`> /dev/full`), what is printed goes to /dev/null and the script carries on, its exit code its work's."""
    sys.stdout, sys.stderr = ReaderGoneSafe(sys.stdout), ReaderGoneSafe(sys.stderr)


class ReaderGoneSafe:
    """A stream whose reader may go (outlive_readers): a print that cannot be written must not fail a finished run,
    a report or an evaluation, nor pass for a run's own folder being full."""

    def __init__(self, stream: typing.TextIO) -> None:
        self.stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as e:
            self.gone(e)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as e:
            self.gone(e)

    def gone(self, e: OSError) -> None:
        fd = self.stream.fileno()
        if not isinstance(e, BrokenPipeError):  # a reader that left needs no word; an output that fails does
            note = f"note: output to file descriptor {fd} cannot be written ({e.strerror}): sent to /dev/null\n"
            with contextlib.suppress(OSError):
                os.write(2 if fd == 1 else 1, note.encode())
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)  # (the buffer's rest: flushed there too)


class Interrupted(BaseException):
    """Stopped by a signal. A BaseException, like KeyboardInterrupt: Hydra's job runner lets it through, and a
    sweep stops instead of counting a failed job and starting the next."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT
        where = f" at step {step}" if step is not None else ""
        saved = f"; checkpoint: {checkpoint}" if checkpoint else ""
        super().__init__(f"stopped by signal {signum}{where}{saved}")

    def __reduce__(self) -> tuple:  # sent back from a sweep's worker process whole, not as its message
        return Interrupted, (self.signum, self.step, self.checkpoint)


# A stop signal a sweep's worker got outside a run's own handling (launcher.py; here, not in attnlab.signals,
# which imports Lightning): the next run stops before it trains, and the worker starts no further job.
pending_signal: int | None = None


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def run_failure(e: Exception, folder: Path, traceback_file: Path) -> str:
    """One line for a run-time failure in `folder`; its traceback is in `traceback_file`."""
    if isinstance(e, ConfigError):
        return str(e)
    if isinstance(e, OSError) and e.errno in DISK_ERRORS:
        # The file being written: a copy's destination (filename2), named without the .<random>.tmp it goes through.
        written = e.filename2 or e.filename
        name = re.sub(r"\.[0-9a-f]{8}\.tmp$", "", str(written)) if written else folder
        return f"cannot write {name}: {e.strerror}; earlier checkpoints are intact"
    return f"{type(e).__name__}: {e} (traceback in {traceback_file})"


# Hydra's message lines that say where in its own objects, or how to see its traceback
HYDRA_DETAIL = ("full_key:", "object_type=", "reference_type=", "Set the environment variable HYDRA_FULL_ERROR")


def one_line(e: BaseException) -> str:
    """Any error as one line: a ConfigError as it says itself; Hydra's composition error (an unknown option, a value
    of the wrong type) with its cause, in ConfigError's form where it names an override (Hydra prints 5-10 lines);
    any other as its type and first line."""
    if isinstance(e, ConfigError):
        return str(e)
    if not type(e).__module__.startswith("hydra"):
        return f"{type(e).__name__}: {printable(first_line(e))}"
    parts = []
    for part in filter(None, (e, e.__cause__)):
        text = str(part).split("\nConfig search path:")[0]  # (where Hydra looked: its own and conf/)
        text = text.replace(":\n\t", ": ").replace("\n\t", ", ")  # "Available options in 'data':", one a line
        lines = [line.strip() for line in text.splitlines()]
        kept = [line for line in lines if line and not line.startswith(HYDRA_DETAIL)]
        # one line: joined by a space after '.', ':' or ',', else by "; "
        parts.append(re.sub(r"(?<=[.:,])\n", " ", "\n".join(kept)).replace("\n", "; "))
    merging = re.fullmatch(r"Error merging override (\S+?)=(.*)", parts[0])
    if merging and len(parts) > 1:
        return str(ConfigError(merging[1], merging[2], parts[1]))
    return printable(": ".join(parts)) or type(e).__name__


def first_line(e: BaseException) -> str:
    """An exception's message cut to one line; its type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def fits(value: Any, hint: Any) -> bool:
    """A plain value is of the annotated type `hint` (a bool is no number); a type not known here passes."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, int | float)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):  # a registry's names (attnlab.registry)
        return isinstance(value, hint) or (isinstance(value, str) and value in hint.__members__)
    if origin in (dict, list, tuple):
        return isinstance(value, origin)
    return not isinstance(hint, type) or isinstance(value, hint) or hint.__module__ != "builtins"
