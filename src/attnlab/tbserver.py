"""A TensorBoard server on 127.0.0.1 and its HTTP data API, for scripts/screenshots.py and the tests."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 120


def get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET `url`, or POST `body` as JSON (the HParams plugin's queries)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)


@contextlib.contextmanager
def tensorboard(logdir: Path) -> Iterator[str]:
    """TensorBoard in this process on a free port, logdir loaded once; yields its URL once it serves a run's
    scalars. It lives as long as the process: TensorBoard has no stop."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(
        argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0", "--reload_interval", "0"]
    )
    base = board.launch().rstrip("/")
    deadline, state = time.monotonic() + START_TIMEOUT_S, "no answer"
    while time.monotonic() < deadline:
        try:
            runs, plugins = get_json(f"{base}/data/runs"), get_json(f"{base}/data/plugins_listing")
            if runs and plugins.get("scalars", {}).get("enabled", False):
                break
            state = f"{len(runs)} run(s)"
        except (OSError, ValueError) as exc:  # URLError is an OSError
            state = f"no answer ({exc})"
        time.sleep(0.2)
    else:
        raise RuntimeError(f"TensorBoard at {base} not ready after {START_TIMEOUT_S} s: {state}")
    yield base
