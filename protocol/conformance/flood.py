"""Floods that then hang up: an authenticated peer sends faster than a role reads, then disconnects abruptly.

Unpatched libzmq (every release to date) aborts the receiving process when that happens: `Assertion failed:
!_io_error (src/stream_engine_base.cpp)`, from a heartbeat timer or a PING left in the input buffer of a
connection whose input was stopped when its peer hung up (libzmq 4364, 4767). `.ci/pyzmq/build.py` patches it.
Each flooder here is a process of its own with a role's valid CURVE key (or the given key pair) and its own ZMTP
heartbeats at 1 ms (so that its PINGs sit among its messages); it never reads, then ends with `os._exit` (unread
replies: the kernel resets the connection). Used by the conformance suite, the tests and `bench --hostile`.

`python -m protocol.conformance.flood flood ENDPOINT KEYS_DIR AS_ROLE SERVER_KEY_Z85 SECONDS` floods a ROUTER;
`python -m protocol.conformance.flood serve ENDPOINT KEYS_DIR AS_ROLE SECONDS DELAY` is a hostile ROUTER that
floods whoever first sends it a message (the user's DEALER to its bank, say), DELAY s after that message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import zmq

from ..curve import Curve
from ..messages import Ping, encode
from ..transport import routing_identity

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _flood(endpoint: str, keys_dir: str, as_role: str, server_key: str, seconds: float) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 60_000)
    sock.setsockopt(zmq.IDENTITY, routing_identity(as_role).encode())
    if keys_dir != "-":
        curve = Curve.load(as_role, keys_dir)
        sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = curve.secret, curve.public, server_key.encode()
    sock.connect(endpoint)
    frames, sent, end = encode(Ping(), 1), 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            time.sleep(0.0002)
    print(sent, flush=True)
    os._exit(0)  # no close, no linger: the replies it never read make the kernel reset the connection


def _serve(endpoint: str, keys_dir: str, as_role: str, seconds: float, delay: float) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 60_000)
    Curve.load(as_role, keys_dir).server(sock)
    sock.bind(endpoint)
    print("ready", flush=True)
    if not sock.poll(120_000):
        os._exit(2)
    victim = sock.recv_multipart()[0]
    time.sleep(delay)  # its request has timed out by then: the victim no longer reads this socket
    frames, sent, end = [victim] + encode(Ping(), 1), 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            time.sleep(0.0002)
    print(sent, flush=True)
    os._exit(0)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))


def flood_then_disconnect(endpoint: str, keys_dir: Path | str | None, as_role: str, server_key: bytes | None,
                          connections: int = 4, seconds: float = 2.0) -> int:
    """`connections` flooder processes against a ROUTER at once (CURVE as `as_role` from keys_dir, or none);
    returns the messages they sent in all."""
    key = server_key.decode() if server_key else "-"
    procs = [subprocess.Popen([sys.executable, "-m", "protocol.conformance.flood", "flood", endpoint,
                               str(keys_dir) if keys_dir else "-", as_role, key, str(seconds)],
                              stdout=subprocess.PIPE, text=True, env=_env())
             for _ in range(connections)]
    sent = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        sent += int(out.strip() or 0)
    return sent


def hostile_server(endpoint: str, keys_dir: Path | str, as_role: str, seconds: float = 2.0,
                   delay: float = 0.0) -> subprocess.Popen:
    """A ROUTER posing as `as_role` (with its key) that, `delay` s after the first peer speaks to it, floods that
    peer for `seconds`, then hangs up."""
    proc = subprocess.Popen([sys.executable, "-m", "protocol.conformance.flood", "serve", endpoint, str(keys_dir), as_role,
                             str(seconds), str(delay)], stdout=subprocess.PIPE, text=True, env=_env())
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the hostile server did not start")
    return proc


if __name__ == "__main__":
    if sys.argv[1:2] == ["flood"]:
        _flood(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]))
    elif sys.argv[1:2] == ["serve"]:
        _serve(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6]))
    else:
        raise SystemExit(__doc__)
