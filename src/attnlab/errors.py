"""The one exception type for bad user input."""


class ConfigError(ValueError):
    """A config value that cannot work. The message names the key, the value and what is allowed.

    `scripts/*.py` print it as one line and exit with code 1, before anything is trained or written.
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: {allowed}")
