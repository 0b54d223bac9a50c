"""Child commands that an interrupt cannot orphan.

A runbook's command step and a drill's command check run a user's command in
a session of its own, so a timeout or an interrupt can stop the whole process
group it started. The group can only be stopped once ``Popen`` has returned
its pid: a Ctrl-C (which the CLI turns into an exception) landing after the
fork but before that return would leave the command running with no one to
stop it. :func:`start_group` holds SIGINT and SIGTERM back while the command
starts; one that arrived meanwhile kills the new group and is then delivered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any]

HELD = (signal.SIGINT, signal.SIGTERM)


def start_group(argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """``Popen(argv, start_new_session=True, **popen)``, interrupt-safe.

    Only the main thread runs signal handlers, so only there is anything
    held; elsewhere the interrupt lands in the main thread, which stops the
    run by its own means (a runbook group sets the run's stop flag).
    """
    if threading.current_thread() is not threading.main_thread():
        return subprocess.Popen(argv, start_new_session=True, **popen)
    arrived: list[int] = []
    previous: dict[int, Handler] = {}
    proc: subprocess.Popen[bytes] | None = None
    try:
        # Every handler is put back even if one put back first fires meanwhile.
        with contextlib.ExitStack() as held:
            for signum in HELD:
                handler = signal.getsignal(signum)
                if callable(handler):  # SIG_DFL and SIG_IGN raise nothing: no need to hold
                    previous[signum] = handler
                    held.callback(signal.signal, signum, handler)
                    signal.signal(signum, lambda received, _frame: arrived.append(received))
            proc = subprocess.Popen(argv, start_new_session=True, **popen)
        for came in dict.fromkeys(arrived):  # each kind once, in the order they came
            previous[came](came, None)
    except BaseException:
        if proc is not None:
            _kill(proc)
        raise
    return proc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
