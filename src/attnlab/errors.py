"""The one exception type for bad user input."""


class ConfigError(ValueError):
    """A config value that cannot work. The message names the key, the value and what is allowed.

    `scripts/*.py` print it as one line and exit with code 1, before anything is trained or written.
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: {allowed}")


class Interrupted(Exception):
    """Training stopped by a signal (SIGTERM, SIGINT) after saving a checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT
        super().__init__(f"stopped by signal {signum} at step {step}; checkpoint: {checkpoint}")
