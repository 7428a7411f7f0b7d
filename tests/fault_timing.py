"""Firing a fault at the moment a role receives a given message (its --capture-dir, polled every 2 ms), and finding
every process a test started that is left behind: shared by the mid-run fault tests and the network tests."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path


class Capture:
    """A role's --capture-dir: one file per frame received, `NNNNN-<sender>.<i>`; frame 1 is the message type."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def messages(self) -> list[tuple[str, str]]:
        """(sender, type) of every message received so far, in order (a frame still being written is skipped)."""
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".1"):
                kind = (self.dir / name).read_bytes().decode("ascii", "replace")
                if kind:
                    out.append((name[6:-2], kind))
        return out

    def count(self, sender: str, kind: str) -> int:
        return self.messages().count((sender, kind))

    def header(self, sender: str, kind: str, nth: int = 1) -> dict:
        """The JSON header (frame 2) of the nth message of this type from this sender."""
        names = [n for n in sorted(os.listdir(self.dir)) if n.endswith(f"-{sender}.1")
                 and (self.dir / n).read_bytes() == kind.encode()]
        return json.loads((self.dir / (names[nth - 1][:-2] + ".2")).read_bytes())

    def wait_for(self, sender: str, kind: str, timeout: float, cancel: threading.Event) -> float:
        """Poll (every 2 ms) until `sender`'s `kind` has arrived; returns the monotonic time it was seen."""
        deadline, checked = time.monotonic() + timeout, set()
        while time.monotonic() < deadline and not cancel.is_set():
            for name in sorted(os.listdir(self.dir)):
                if name in checked or not name.endswith(f"-{sender}.1"):
                    continue
                data = (self.dir / name).read_bytes()
                if not data:
                    continue  # created, not yet written
                checked.add(name)
                if data == kind.encode():
                    return time.monotonic()
            time.sleep(0.002)
        raise TimeoutError(f"{kind} from {sender} never reached {self.dir}")


class FaultOnMessage(threading.Thread):
    """Waits in its own thread for `sender`'s `kind` to reach the captured role, then calls act() at once."""

    def __init__(self, capture: Capture, sender: str, kind: str, act, timeout: float = 180.0):
        super().__init__(daemon=True)
        self.capture, self.sender, self.kind, self.act, self.timeout = capture, sender, kind, act, timeout
        self.cancel = threading.Event()
        self.fired_at: float | None = None
        self.fired_wall: float | None = None
        self.outcome = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.capture.wait_for(self.sender, self.kind, self.timeout, self.cancel)
            self.outcome = self.act()
            self.fired_at, self.fired_wall = time.monotonic(), time.time()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self) -> None:
        self.cancel.set()
        self.join(10)


def _stat(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]; None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


class ProcessTree:
    """Every process descended from this test (sampled every 50 ms while a run goes; `exclude`: pids, and their
    descendants, that are not the run's, e.g. a fixture's), so that one left behind — a role, an evaluator
    worker, a keygen child, orphaned or not — is found by pid (and start time) afterwards."""

    def __init__(self, exclude: tuple[int, ...] = ()):
        self.exclude = set(exclude)
        self.seen: dict[int, tuple[bytes, str]] = {}  # pid -> (start time, command line)
        # what this process already had before the run is not the run's (e.g. multiprocessing's resource tracker,
        # started by an earlier test in the same pytest worker and alive as long as that worker)
        self._scan()
        self.exclude |= set(self.seen)
        self.seen.clear()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _scan(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat(int(entry))
                if fields is not None:
                    children.setdefault(int(fields[1]), []).append(int(entry))
        todo = [os.getpid()]
        while todo:
            for pid in children.get(todo.pop(), []):
                if pid in self.exclude:
                    continue
                todo.append(pid)
                fields = _stat(pid)
                if pid not in self.seen and fields is not None:
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    except OSError:
                        cmd = "?"
                    self.seen[pid] = (fields[19], cmd)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self._scan()

    def alive(self) -> dict[int, str]:
        out = {}
        for pid, (start, cmd) in self.seen.items():
            fields = _stat(pid)
            if fields is not None and fields[19] == start and fields[0] != b"Z":
                out[pid] = cmd
        return out

    def leftovers(self, grace: float = 5.0) -> dict[int, str]:
        """Processes still alive `grace` s after the run ended (each is then killed, so nothing outlives a test)."""
        self._scan()
        self._stop.set()
        self._thread.join(5)
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.alive()
        for pid in left:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left
