"""A TensorBoard server on 127.0.0.1 for as long as a block runs, and its HTTP data API: what
scripts/screenshots.py photographs and tests/test_dashboard.py queries.

    with tensorboard(Path("outputs/multiruns/<sweep>")) as base:
        get_json(f"{base}/data/runs")
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET `url`, or POST `body` as JSON (the HParams plugin's queries), and decode the answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)


def wait_for_tensorboard(base: str, proc: subprocess.Popen) -> None:
    """Block until TensorBoard lists a run and has its scalars plugin enabled.

    TensorBoard loads event files lazily in a background thread, so the HTTP
    server answers before any run or plugin is known.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    state = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"TensorBoard exited early with code {proc.returncode}")
        try:
            runs = get_json(f"{base}/data/runs")
            plugins = get_json(f"{base}/data/plugins_listing")
            scalars_on = plugins.get("scalars", {}).get("enabled", False)
            if runs and scalars_on:
                return
            state = f"{len(runs)} run(s), scalars plugin enabled={scalars_on}"
        except (OSError, ValueError) as exc:  # URLError is an OSError
            state = f"no answer ({exc})"
        time.sleep(1)
    raise RuntimeError(f"TensorBoard at {base} not ready after {START_TIMEOUT_S} s: {state}")


@contextlib.contextmanager
def tensorboard(logdir: Path, port: int = 0) -> Iterator[str]:
    """Run TensorBoard on 127.0.0.1:port (0: a free one) until the block exits; yield its base URL."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_tensorboard(base, proc)
            except RuntimeError as exc:
                log.seek(0)
                tail = "\n".join(log.read().strip().splitlines()[-10:])
                raise RuntimeError(f"{exc}\n{tail}") from None
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
