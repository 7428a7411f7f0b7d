"""Hosts for the network-namespace tests: one namespace per name, each joined by a veth link to a hub's bridge."""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Iterator


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@contextlib.contextmanager
def bridged_hosts(prefix: str, network: str, names: tuple[str, ...]) -> Iterator[dict]:
    """Namespaces `<tag>-<name>` with addresses `<network>.<k>.<i>/24` (k from this pid, so that parallel test
    processes do not collide) on a bridge in `<tag>-hub`; all deleted on exit. Yields the namespaces, addresses,
    hub, and each host's outer (hub side) and inner link names."""
    tag = f"{prefix}{os.getpid() % 10000}"
    hub, subnet = f"{tag}-hub", f"{network}.{os.getpid() % 200}"
    made, links, inner_devs, address = [hub], {}, {}, {}
    try:
        sh("ip", "netns", "add", hub)
        sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        for i, name in enumerate(names, start=1):
            ns, inner, outer = f"{tag}-{name}", f"{tag}i{i}", f"{tag}o{i}"
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "link", "set", outer, "netns", hub)
            sh("ip", "-n", ns, "addr", "add", f"{subnet}.{i}/24", "dev", inner)
            sh("ip", "-n", ns, "link", "set", inner, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", hub, "link", "set", outer, "master", "br0")
            sh("ip", "-n", hub, "link", "set", outer, "up")
            address[name], links[name], inner_devs[name] = f"{subnet}.{i}", outer, inner
        yield {"ns": {n: f"{tag}-{n}" for n in names}, "address": address, "hub": hub, "links": links,
               "inner": inner_devs}
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
