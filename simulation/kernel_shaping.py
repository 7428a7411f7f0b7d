"""The kernel's shaping for runs whose roles are in network namespaces (as root): per role, an HTB class per peer
on its device's egress (the link's bandwidth that way, u32-filtered by the peer's address), and `netem` delay where
the kernel has sch_netem. A kernel without it (as the one this was written on) gets the bandwidth only: latency is
then the shaping forwarder's (simulation/shaper.py) to give."""

from __future__ import annotations

import subprocess

from scenarios.network import LINKS, Network

from simulation.links import ends

UNSHAPED = "10gbit"


def kernel_has_netem(namespace: str) -> bool:
    """Whether `tc ... netem` can be added here (tried on the namespace's loopback, then removed)."""
    added = subprocess.run(["tc", "-n", namespace, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                           capture_output=True).returncode == 0
    if added:
        subprocess.run(["tc", "-n", namespace, "qdisc", "del", "dev", "lo", "root"], capture_output=True)
    return added


def commands(network: Network, hosts: dict[str, dict], netem: bool) -> tuple[list[list[str]], list[str]]:
    """tc commands shaping every link of `network` between roles in namespaces, and what the kernel cannot do.
    hosts: role -> {"ns": namespace, "dev": its device, "address": its IPv4 address}."""
    out: list[list[str]] = []
    missing: list[str] = []
    classes: dict[str, int] = {}
    for role, host in hosts.items():
        tc = ["tc", "-n", host["ns"]]
        out.append(tc + ["qdisc", "replace", "dev", host["dev"], "root", "handle", "1:", "htb", "default", "99"])
        out.append(tc + ["class", "add", "dev", host["dev"], "parent", "1:", "classid", "1:99", "htb", "rate",
                         UNSHAPED])
    for name in LINKS:
        link = network.link(name)
        if not link.shaped:
            continue
        client, server = ends(name)
        for sender, receiver, mbit in ((client, server, link.up_mbit), (server, client, link.down_mbit)):
            if sender not in hosts or receiver not in hosts:
                continue
            host, tc = hosts[sender], ["tc", "-n", hosts[sender]["ns"]]
            number = classes[sender] = classes.get(sender, 9) + 1
            rate = f"{mbit * 1000:.0f}kbit" if mbit else UNSHAPED
            burst = max(16_000, int((mbit or 10_000) * 1e6 / 8 * 0.005))  # 5 ms of the rate, as the forwarder's
            out.append(tc + ["class", "add", "dev", host["dev"], "parent", "1:", "classid", f"1:{number}", "htb",
                             "rate", rate, "ceil", rate, "burst", str(burst), "cburst", str(burst)])
            if link.latency_ms or link.jitter_ms:
                if netem:
                    out.append(tc + ["qdisc", "add", "dev", host["dev"], "parent", f"1:{number}", "handle",
                                     f"{number}:", "netem", "delay", f"{link.latency_ms:g}ms", f"{link.jitter_ms:g}ms"])
                else:
                    missing.append(f"{sender} -> {receiver}: {link.latency_ms:g} ms of latency (no sch_netem)")
            out.append(tc + ["filter", "add", "dev", host["dev"], "parent", "1:", "protocol", "ip", "prio", "1",
                             "u32", "match", "ip", "dst", f"{hosts[receiver]['address']}/32", "flowid",
                             f"1:{number}"])
    return out, missing


def apply(network: Network, hosts: dict[str, dict]) -> list[str]:
    """Shape the namespaces' devices; returns what the kernel could not do (latency without sch_netem)."""
    netem = kernel_has_netem(next(iter(hosts.values()))["ns"])
    todo, missing = commands(network, hosts, netem)
    for command in todo:
        subprocess.run(command, check=True, capture_output=True)
    return missing


def remove(hosts: dict[str, dict]) -> None:
    for host in hosts.values():
        subprocess.run(["tc", "-n", host["ns"], "qdisc", "del", "dev", host["dev"], "root"], capture_output=True)
