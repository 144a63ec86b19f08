"""The exception types scripts turn into one line and an exit code."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work. The message names the key, the value and what is allowed.

    `scripts/*.py` print it as one line and exit with code 1, before anything is trained or written.
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: {allowed}")


class Interrupted(BaseException):
    """Stopped by a signal (SIGTERM, SIGINT). Like KeyboardInterrupt, a request to stop rather than an
    error, so it is a BaseException: Hydra's job runner lets it through, and a sweep stops with it
    instead of counting one failed job and starting the next."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT
        where = f" at step {step}" if step is not None else ""
        saved = f"; checkpoint: {checkpoint}" if checkpoint else ""
        super().__init__(f"stopped by signal {signum}{where}{saved}")
