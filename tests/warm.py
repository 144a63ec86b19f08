"""A warm interpreter for the tests' command-line runs: `python scripts/train.py ...` forked from a process
that has already imported torch, Lightning and Hydra, so that a test's run skips the ~3-5 s of imports.

Most of the suite's time went to those imports, paid again by every one of its ~170 processes. The script
still runs as a process of its own, as `python SCRIPT ARGS` would: its own pid, argv, working directory,
environment, stdin/stdout/stderr, signal handling and exit status (a death by signal included). What
differs is only what happened before its first line: the imports were done by the parent.

Two parts:
- the server (`serve`, one per pytest worker, started by conftest.warm_server): imports, then for each
  request forks a child that runs the script with `runpy`, and reports its exit status;
- the relay (tests/warm_run.py): what a test starts in place of `python SCRIPT`. It hands its stdin,
  stdout and stderr to the server, forwards the signals it gets to the child and exits as the child did,
  so `subprocess.run`/`Popen` see the script's own process (its pid aside).

Not for tests about the start-up itself (signals during the imports, what is imported, import times), nor
for ones that SIGKILL the process or its group: the relay dies alone (its child follows it, a moment
later, when the relay's pipe closes). Those start `python` itself (conftest.python(cold=True)). So does
the relay when no server answers, when the request's environment differs from the server's in a variable read
at start-up (`key`), or when the relay leads a process group of its own (a test that looks at the group:
the child is in the server's). One more difference: every child shares the server's hash secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import time

# Read by the interpreter at its start, or by a library when imported: a request may differ from the server in
# none of these variables (the relay then starts python itself).
KEY_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "LC_", "TQDM_", "MPL", "TORCH_")
KEY_NAMES = ("LANG", "TZ")
IDLE_EXIT_S = 900  # with no child and no request for this long, the server exits (its pytest worker is gone)


def key(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(KEY_PREFIXES) or k in KEY_NAMES}


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """One request: a 4-byte length, then JSON {argv, cwd, env}, with the relay's four fds."""
    conn.settimeout(5)  # a relay that stalls mid-request must not hold up the others
    head, fds, _, _ = socket.recv_fds(conn, 4, 4)
    try:
        size = int.from_bytes(head, "big")
        body = b""
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ConnectionError("the relay went away mid-request")
            body += chunk
        request = json.loads(body)
        if len(fds) != 4 or not isinstance(request["argv"], list) or not isinstance(request["env"], dict):
            raise ValueError(f"not a request: {len(fds)} fds, {sorted(request)}")
        conn.settimeout(None)
        return request, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def tell(conn: socket.socket, line: str) -> None:
    with contextlib.suppress(OSError):  # the relay is gone (killed): its child follows it, nobody is left to tell
        conn.sendall(f"{line}\n".encode())


def decline(conn: socket.socket, fds: list[int]) -> None:
    """Not this request: the relay starts python itself."""
    tell(conn, "no")
    conn.close()
    for fd in fds:
        os.close(fd)


def serve(path: str) -> dict | None:
    """Import, then answer requests until idle or orphaned. Returns in a forked child only: the request it runs."""
    import matplotlib.figure  # noqa: F401
    import pytorch_lightning  # noqa: F401
    import torch  # noqa: F401
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401

    import attnlab.evaluate
    import attnlab.report
    import attnlab.train  # noqa: F401

    # A fork copies only the thread that calls it: nothing may run beside this one.
    assert threading.active_count() == 1, threading.enumerate()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the terminal is the children's (the relays forward it)
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    idle_since = time.monotonic()
    while True:
        for _ in sel.select(timeout=0.02 if children else 1.0):
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                request, fds = receive(conn)
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"warm server: a request refused: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                conn.close()
                continue
            if key(request["env"]) != key(dict(os.environ)):
                decline(conn, fds)
                continue
            sys.stdout.flush()
            sys.stderr.flush()  # nothing buffered here may reach a child's output
            try:
                pid = os.fork()
            except OSError as e:
                print(f"warm server: fork failed: {e}", file=sys.stderr, flush=True)
                decline(conn, fds)
                continue
            if pid == 0:
                sel.close()
                listener.close()
                for other in children.values():
                    other.close()
                conn.close()
                start_child(request, fds)
                return request
            for fd in fds:
                os.close(fd)
            tell(conn, f"pid {pid}")
            children[pid] = conn
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            with children.pop(pid) as conn:
                how = (
                    f"signal {os.WTERMSIG(status)}"
                    if os.WIFSIGNALED(status)
                    else f"exit {os.waitstatus_to_exitcode(status)}"
                )
                tell(conn, how)
        if children:
            idle_since = time.monotonic()
        elif os.getppid() != parent or time.monotonic() - idle_since > IDLE_EXIT_S:
            listener.close()
            os.unlink(path)
            return None


def start_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python ARGV` as started by the relay."""
    import multiprocessing.process

    stdin, stdout, stderr, relay_alive = fds
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.set_inheritable(relay_alive, False)

    def follow_the_relay() -> None:  # the relay's end of this pipe closes when it exits, however it dies
        os.read(relay_alive, 1)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=follow_the_relay, daemon=True).start()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as python sets it
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    multiprocessing.process.ORIGINAL_DIR = os.getcwd()  # set when multiprocessing was imported: here, now
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as `python SCRIPT` has it


def main() -> None:
    request = serve(sys.argv[1])
    if request is not None:  # the child: the script, then the interpreter's own exit (atexit, flush, status)
        runpy.run_path(os.path.abspath(request["argv"][0]), run_name="__main__")  # (__file__ absolute, as python's)


if __name__ == "__main__":
    main()
