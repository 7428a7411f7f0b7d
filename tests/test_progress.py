"""Progress bars on long work (issue 21): `chaos` draws one on a terminal (a real pseudo-terminal here) and prints
none when its output is a pipe; its lines are the same either way."""

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from scenarios import SCENARIO_DIR
from simulation.processes import PROJECT_ROOT

COMMAND = [sys.executable, "run_scenario.py", "chaos", str(SCENARIO_DIR / "approved.yaml"), "--iterations", "1",
           "--seed", "1", "--fhe", "simulate"]


def on_a_terminal(timeout: float = 240) -> str:
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # 30 rows, 120 columns
    proc = subprocess.Popen(COMMAND, cwd=PROJECT_ROOT, stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child side closed: it exited
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    proc.wait(30)
    os.close(main)
    return out.decode(errors="replace")


@pytest.mark.slow
def test_chaos_draws_a_bar_on_a_terminal_and_none_into_a_pipe():
    piped = subprocess.run(COMMAND, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240)
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert "1 passed, 0 failed" in piped.stdout
    assert "chaos:" not in piped.stderr and "\r" not in piped.stderr + piped.stdout  # no bar, no redraws

    shown = on_a_terminal()
    assert "1 passed, 0 failed" in shown and "baseline approved: passed" in shown
    assert "chaos:" in shown and "/2 [" in shown and "\r" in shown, shown[-2000:]  # tqdm's "chaos:  50%|█ | 1/2 ["
