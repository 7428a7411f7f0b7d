"""Ctrl-C and SIGTERM end a run as a clean failure: the signal becomes RunStopped in the runner's main thread, the
roles are stopped, the run directory removed and the reports that were asked for written."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from protocol.errors import ErrorCode, ProtocolError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(ProtocolError):
    """The runner was told to stop (SIGTERM, or SIGINT / Ctrl-C) in the middle of a run."""

    def __init__(self, signum: int):
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}{' (Ctrl-C)' if signum == signal.SIGINT else ''}", ErrorCode.TIMEOUT)
        self.role = "runner"
        self.signum = signum


_stopped: list[int] = []  # the signals that arrived (the first one stops the run; later ones wait for clean-up)
_deferred = threading.local()


def _handler(signum, _frame):
    _stopped.append(signum)
    if len(_stopped) == 1 and not getattr(_deferred, "on", False):
        raise RunStopped(signum)


@contextmanager
def stop_on_signals():
    """While the block runs (in the main thread), SIGTERM and SIGINT raise RunStopped at whatever the runner is
    waiting on; they are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _stopped.clear()
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stopped_by() -> int | None:
    """The signal that stopped the run, if one did."""
    return _stopped[0] if _stopped else None


@contextmanager
def deferred_signals():
    """Inside this block (stopping the roles, removing the run directory) a signal is only recorded (see
    `stopped_by`): the clean-up is never cut short."""
    _deferred.on = True
    try:
        yield
    finally:
        _deferred.on = False
