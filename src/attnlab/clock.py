"""How long this process has lived, so that "done in" counts the imports and checks too.

Lightning-free on purpose: the sweeper plugin uses it, and Hydra imports every plugin before it
composes a config, so anything here that imported Lightning would hold back every error message by
the seconds Lightning takes to import."""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_age() -> float | None:
    """Seconds since this process started (from /proc on Linux); None where that is unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks after boot
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def process_seconds(began: float) -> float:
    """Seconds since this process started (imports included), or since `began` where unknown."""
    age = process_age()
    return age if age is not None else time.perf_counter() - began
