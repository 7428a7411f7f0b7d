"""Key generation in a child process: Concrete holds the GIL for all of it (2-3 s), so the user runs it in
`python -m credit_model.runtime.keygen DEPLOYMENT_DIR` and stays responsive (signals, heartbeats) meanwhile.

A `KeyGenerator` starts the child ahead of time: it imports and loads the circuit, then waits for one
line on its stdin (or exits at end of file, when its parent is gone). After "go", it writes to its stdout,
a pipe only its parent holds: one JSON line {"evaluation_key": N, "secret_keys": {"id": N, ...},
"seconds": S}, then the evaluation key's N bytes, then each secret key's bytes in id order.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

MAX_HEADER = 4096


class KeygenError(RuntimeError):
    """Key generation failed, timed out or was abandoned (the role is stopping)."""


def _die_with_parent() -> None:
    """The kernel kills this child when the role that started it dies (Linux): no keys are made for nobody."""
    import ctypes
    import signal
    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(deployment_dir: str, eager: bool) -> None:
    _die_with_parent()
    from credit_model.runtime.fhe_runtime import CircuitSpec, KeyOwner

    spec = CircuitSpec.load(deployment_dir)
    if not eager and sys.stdin.readline().strip() != "go":
        return  # the parent is gone, or changed its mind
    owner = KeyOwner(spec)
    evaluation_key = owner.evaluation_key()
    secret = owner.all_secret_keys()
    header = {"evaluation_key": len(evaluation_key), "secret_keys": {str(k): len(v) for k, v in secret.items()},
              "seconds": round(owner.seconds, 3)}
    out = sys.stdout.buffer
    out.write(json.dumps(header).encode() + b"\n")
    out.write(evaluation_key)
    for key_id in sorted(secret):
        out.write(secret[key_id])
    out.flush()


class KeyGenerator:
    """One key-generation child kept ready (imports paid); `generate` uses it and starts the next.

    The first child generates at once (`eager`): a role that is about to be asked for keys gets them
    sooner. The ones after it wait for "go", so that they never compete with an FHE run for the cores.
    """

    def __init__(self, deployment_dir: Path | str, max_key_bytes: int = 1 << 30, eager: bool = True):
        self.deployment_dir, self.max_key_bytes = str(deployment_dir), max_key_bytes
        self.proc: subprocess.Popen | None = None
        self._spawn(eager)

    def _spawn(self, eager: bool = False) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "credit_model.runtime.keygen", self.deployment_dir]
                                     + (["--eager"] if eager else []),
                                     stdout=subprocess.PIPE, stdin=subprocess.PIPE, close_fds=True)
        try:  # a larger pipe moves the 44 MB evaluation key in fewer wake-ups (Linux)
            fcntl.fcntl(self.proc.stdout.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except OSError:
            pass

    def generate(self, should_stop: Callable[[], bool] = lambda: False,
                 timeout: float = 120.0) -> tuple[bytes, dict[int, bytes], float]:
        """A fresh key set: (evaluation key, secret keys by id, keygen seconds). Gives up, killing the child,
        when `should_stop()` or when `timeout` passes."""
        proc, self.proc = self.proc, None
        try:
            if "--eager" not in proc.args:
                proc.stdin.write(b"go\n")
            proc.stdin.close()
            return self._read(proc, should_stop, timeout)
        except BrokenPipeError:
            raise KeygenError(f"the key generator exited early (code {proc.poll()})") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
            self._spawn()

    def _read(self, proc, should_stop, timeout) -> tuple[bytes, dict[int, bytes], float]:
        deadline, chunks, received = time.monotonic() + timeout, [], 0
        fd = proc.stdout.fileno()
        while True:
            if should_stop():
                raise KeygenError("key generation abandoned: the role is stopping")
            if time.monotonic() > deadline:
                raise KeygenError(f"key generation did not finish within {timeout:.0f} s")
            if not select.select([fd], [], [], 0.05)[0]:
                continue
            data = os.read(fd, 1 << 20)
            if not data:
                break
            chunks.append(data)
            received += len(data)
            if received > self.max_key_bytes + MAX_HEADER + (1 << 20):
                raise KeygenError(f"the key generator wrote more than {self.max_key_bytes} bytes")
        if proc.wait(10) != 0:
            raise KeygenError(f"the key generator exited with code {proc.returncode}")
        return parse(b"".join(chunks))

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.proc = None


def parse(data: bytes) -> tuple[bytes, dict[int, bytes], float]:
    """The child's output: header line, evaluation key, secret keys in id order."""
    line, _, rest = data.partition(b"\n")
    try:
        header = json.loads(line[:MAX_HEADER])
        ids = sorted(int(k) for k in header["secret_keys"])
        sizes = [int(header["evaluation_key"])] + [int(header["secret_keys"][str(k)]) for k in ids]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeygenError(f"the key generator wrote an unreadable header ({exc})") from None
    if sum(sizes) != len(rest) or min(sizes) < 0:
        raise KeygenError(f"the key generator wrote {len(rest)} bytes of keys, its header says {sum(sizes)}")
    evaluation_key, offset, secret = rest[:sizes[0]], sizes[0], {}
    for key_id, size in zip(ids, sizes[1:]):
        secret[key_id] = rest[offset:offset + size]
        offset += size
    return evaluation_key, secret, float(header.get("seconds", 0.0))


def main(argv: list[str]) -> None:
    try:
        _child(argv[0], "--eager" in argv[1:])
    except BrokenPipeError:
        # The parent is gone (killed, or it gave up on these keys): nobody reads them. Leave quietly, without
        # the traceback or the flush-at-exit error Python would print.
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
