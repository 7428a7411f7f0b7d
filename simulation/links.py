"""A run's shaped links: the shaping forwarder process (simulation/shaper.py) and the endpoints each role connects to
through it; links a network leaves unshaped stay direct."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

from scenarios.network import LINKS, Network

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FRAME_BYTES = 1 << 20  # the largest frame a role sends (a blob chunk, SPEC §3)


def ends(link: str) -> tuple[str, str]:
    """(client, server) of a link: the client connects (its DEALER), the server binds (its ROUTER)."""
    client, server = link.split("-")
    return client, server


def check_liveness(network: Network, liveness: float) -> None:
    """libzmq counts a peer alive when a whole frame of it arrives: a link so slow that one 1 MiB frame takes more
    than half the liveness window would have its connection closed in the middle of an upload."""
    for name in LINKS:
        link = network.link(name)
        for way, mbit in (("up_mbit", link.up_mbit), ("down_mbit", link.down_mbit)):
            if mbit and FRAME_BYTES * 8 / (mbit * 1e6) > liveness / 2:
                seconds = FRAME_BYTES * 8 / (mbit * 1e6)
                raise ValueError(f"network {network.label()}: {name}.{way} {mbit:g} Mbit/s takes {seconds:.1f} s per "
                                 f"1 MiB frame, more than half the liveness window ({liveness:g} s): heartbeats would "
                                 f"close the link mid-upload; give --liveness {2 * seconds + 1:.0f} or more")


class Shaper:
    """The forwarder process of one run: started with the links to shape and the roles' real endpoints."""

    def __init__(self, network: Network, endpoints: dict[str, str], seed: int | None = None):
        self.network, self.endpoints, self.seed = network, endpoints, seed
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    def specs(self) -> list[dict]:
        out = []
        for index, name in enumerate(LINKS):
            link = self.network.link(name)
            if not link.shaped:
                continue
            _, server = ends(name)
            out.append({"name": name, "upstream": self.endpoints[server], "up": link.direction(True),
                        "down": link.direction(False), "seed": None if self.seed is None else self.seed + index})
        return out

    def start(self, timeout: float = 30.0) -> dict[str, int]:
        specs = self.specs()
        if not specs:
            return {}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                         os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen([sys.executable, "-m", "simulation.shaper"], cwd=PROJECT_ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write(json.dumps(specs) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the shaping forwarder did not start within {timeout:.0f} s ({line.strip()!r})")
        self.ports = json.loads(line[len("READY "):])
        return self.ports

    def peer_endpoints(self, role: str) -> dict[str, str]:
        """What `role` connects to: the forwarder's port for each of its shaped links, else the peer itself."""
        out = {}
        for name, port in self.ports.items():
            client, server = ends(name)
            if client == role:
                out[server] = f"tcp://127.0.0.1:{port}"
        return out

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()
