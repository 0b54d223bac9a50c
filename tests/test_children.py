"""A command started in its own group is never orphaned by an interrupt that
arrives while it starts."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from reprieve.children import start_group


class Stop(BaseException):
    pass


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Stop(signum)


@pytest.fixture
def raising_handlers() -> Iterator[None]:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in before:
        signal.signal(signum, _raise)
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_the_command_starts_kills_it_then_raises(
    raising_handlers: None, monkeypatch: pytest.MonkeyPatch, signum: signal.Signals
) -> None:
    started: list[int] = []
    real_popen = subprocess.Popen

    def popen_then_interrupt(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)
        started.append(proc.pid)
        os.kill(os.getpid(), signum)  # the Ctrl-C lands before Popen returns
        return proc

    monkeypatch.setattr(subprocess, "Popen", popen_then_interrupt)
    with pytest.raises(Stop) as raised:
        start_group(["sleep", "60"])
    assert raised.value.args == (signum,)
    [pid] = started
    assert _gone(pid)
    assert signal.getsignal(signal.SIGINT) is _raise
    assert signal.getsignal(signal.SIGTERM) is _raise


def test_without_an_interrupt_the_command_runs_in_its_own_group(raising_handlers: None) -> None:
    proc = start_group(["sleep", "60"], stdout=subprocess.DEVNULL)
    try:
        assert proc.poll() is None
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        assert signal.getsignal(signal.SIGINT) is _raise
        assert signal.getsignal(signal.SIGTERM) is _raise
    finally:
        _stop(proc)


def test_handlers_that_do_not_raise_get_each_signal_once_and_the_command_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: list[int] = []
    before = {
        s: signal.signal(s, lambda signum, _frame: received.append(signum))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    real_popen = subprocess.Popen

    def popen_then_signals(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), signum)
        return proc

    monkeypatch.setattr(subprocess, "Popen", popen_then_signals)
    try:
        proc = start_group(["sleep", "60"])
        try:
            assert received == [signal.SIGTERM, signal.SIGINT]
            assert proc.poll() is None
        finally:
            _stop(proc)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_outside_the_main_thread_the_command_starts_without_holding(
    raising_handlers: None,
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    worker = threading.Thread(target=lambda: started.append(start_group(["sleep", "60"])))
    worker.start()
    worker.join()
    [proc] = started
    try:
        assert os.getpgid(proc.pid) == proc.pid
        assert proc.poll() is None
    finally:
        _stop(proc)


def test_a_command_that_cannot_start_raises_and_puts_the_handlers_back(
    raising_handlers: None, tmp_path: Any
) -> None:
    with pytest.raises(FileNotFoundError):
        start_group([str(tmp_path / "no-such-command")])
    assert signal.getsignal(signal.SIGINT) is _raise
