"""A run's private directory, shared by the runner and the roles it starts: who is still in it, and who removes it.

The runner makes the directory (0700) and everything secret in it (CurveZMQ keys, evaluation keys, ciphertexts,
logs, ipc endpoints). Everyone in the run holds a shared lock on `<dir>/.alive` while it runs. When the run ends
normally the runner stops the roles and removes the directory. When the runner itself dies (even by SIGKILL),
each role learns it at once (`die_with_parent`: the kernel sends it SIGTERM; the parent's pid is also checked in
every wait), removes what is its own, lets go of its lock, and the last one out — the one that then gets the lock
exclusively — removes the directory. A killed run leaves nothing behind (SPEC §9).
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

log = logging.getLogger("fhe_credit_sim")
LOCK_NAME = ".alive"
PR_SET_PDEATHSIG = 1


def make_run_dir(prefix: str = "fcs-") -> Path:
    """A fresh private directory (0700) under the temporary directory."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def die_with_parent(sig: int = signal.SIGTERM) -> int:
    """Ask the kernel to send `sig` to this process when the process that started it dies (Linux; elsewhere the
    parent's pid, returned, is polled instead). Called first thing in a role."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent or parent == 1:  # it died before the request took effect (re-parented to init)
        os.kill(os.getpid(), sig)
    return parent


class Presence:
    """This process's shared lock on a run directory: held while it runs, let go when it leaves."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)
        self.fd: int | None = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def leave(self, own: list[Path | str] = (), last_out: bool = False, remove_all: bool = False) -> bool:
        """Remove `own` paths (only those inside the run directory) and let go of the lock; then, with `last_out`,
        remove the whole directory if nobody else is left in the run, or with `remove_all` in any case (the
        runner, once its roles are stopped). True when the directory is gone."""
        for path in own:
            remove_inside(self.run_dir, Path(path))
        if self.fd is None:
            return not self.run_dir.exists()
        fd, self.fd = self.fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
            last = remove_all
            if last_out and not last:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    last = True
                except BlockingIOError:
                    last = False
            if last:
                shutil.rmtree(self.run_dir, ignore_errors=True)
        finally:
            os.close(fd)
        return not self.run_dir.exists()


def remove_inside(run_dir: Path, path: Path) -> None:
    """Remove a file or directory, but only if it lies inside `run_dir` (never anything else on the machine)."""
    try:
        resolved, root = path.resolve(), run_dir.resolve()
    except OSError:
        return
    if resolved == root or root not in resolved.parents:
        return
    if resolved.is_dir() and not resolved.is_symlink():
        shutil.rmtree(resolved, ignore_errors=True)
    else:
        try:
            resolved.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", resolved, exc)
