"""A TensorBoard server on 127.0.0.1 and its HTTP data API, for scripts/screenshots.py and the tests."""

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET `url`, or POST `body` as JSON (the HParams plugin's queries)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)


@contextlib.contextmanager
def tensorboard(logdir: Path) -> Iterator[str]:
    """TensorBoard in this process on a free port; yields its URL. It reads the logdir whole before it serves
    (the Python loader: the faster Rust one serves runs as it finds them). It lives as long as the process:
    TensorBoard has no stop."""
    from tensorboard import program

    board = program.TensorBoard()
    read_once = ["--load_fast", "false", "--reload_interval", "0", "--reload_task", "blocking"]
    board.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0", *read_once])
    yield board.launch().rstrip("/")
