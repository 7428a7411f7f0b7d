"""Progress bars on long work (load, chaos, bench), drawn by tqdm on stderr when it is a terminal, quiet otherwise."""

from __future__ import annotations

import sys
from typing import Callable

from tqdm import tqdm


class Progress:
    """A bar of `total` steps; `log` lines are printed above it (the bar steps aside while they are written)."""

    def __init__(self, total: int, desc: str, log: Callable[[str], None] = print, unit: str = "step",
                 file=None):
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True,
                        file=file or sys.stderr)  # disable=None: off when the file is not a terminal
        self._log = log

    @property
    def shown(self) -> bool:
        return not self.bar.disable

    def log(self, line: str) -> None:
        if not self.shown:
            self._log(line)
            return
        with self.bar.external_write_mode():
            self._log(line)

    def update(self, n: int = 1, status: str | None = None) -> None:
        if status is not None:
            self.bar.set_postfix_str(status, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
