"""The relay of tests/warm.py: `python -S tests/warm_run.py SOCKET SCRIPT ARGS...` behaves as `python SCRIPT
ARGS...`, run by the warm server at SOCKET (or, where none answers, by python itself). Standard library
only, and started without site (-S): it must cost next to nothing."""

import contextlib
import json
import os
import signal
import socket
import sys

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def python_itself(argv: list[str], pending: list[int]) -> None:
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    if pending:  # a signal came meanwhile: the end of a python still starting
        os.kill(os.getpid(), pending[0])
    os.execv(sys.executable, [sys.executable, *argv])


def main() -> None:
    path, argv = sys.argv[1], sys.argv[2:]
    child, pending = [], []  # a signal before the child's pid is known waits for it

    def forward(signum: int, frame: object) -> None:
        if not child:
            pending.append(signum)
        else:
            with contextlib.suppress(ProcessLookupError):  # it has just ended: its status is on its way
                os.kill(child[0], signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    if os.getpgrp() == os.getpid():  # a group of its own (start_new_session): the test means this group's processes
        python_itself(argv, pending)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.connect(path)
    except OSError:
        python_itself(argv, pending)
    alive_read, _alive_write = os.pipe()  # kept open until this process ends: the child follows it
    body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(server, [len(body).to_bytes(4, "big")], [0, 1, 2, alive_read])
    server.sendall(body)
    os.close(alive_read)
    replies = server.makefile("r")
    answer = replies.readline().split()
    if answer[:1] != ["pid"]:  # declined (tests/warm.py: an environment that differs from the server's, ...)
        python_itself(argv, pending)
    child.append(int(answer[1]))
    for signum in pending:
        forward(signum, None)
    status = replies.readline().split()  # (reads resume after a forwarded signal: PEP 475)
    if len(status) != 2:  # the server died: this relay cannot tell how the script ended (and its child follows it)
        sys.exit(f"tests/warm_run.py: the warm server at {path} went away while {argv[0]} ran")
    how, value = status
    if how == "signal":
        signal.signal(int(value), signal.SIG_DFL)
        os.kill(os.getpid(), int(value))
    sys.exit(int(value))


if __name__ == "__main__":
    main()
