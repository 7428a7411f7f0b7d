"""Start the four roles as OS processes, wait for READY, send control commands with deadlines, stop them all."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from protocol.authorization import authorize
from protocol.curve import Curve, create_keys, own_keys_dir
from protocol.errors import ErrorCode, ProtocolError, RemoteError
from protocol.liveness import DEFAULT_LIVENESS_S, RouterWatch
from protocol.messages import Command, Error, Packet, Ready, Result, Shutdown, decode, encode
from protocol.run_dir import Presence
from protocol.transport import RateLimitedLog, TrafficLog, make_socket, receive, role_of, send_nowait
from scenarios.network import Network

from simulation.links import Shaper, check_liveness

ROLES = ("evaluator", "user", "bank", "agency")
MODULES = {"evaluator": "evaluator", "user": "parties.user", "bank": "parties.bank", "agency": "parties.agency"}
PROJECT_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("fhe_credit_sim.runner")


class RoleFailure(ProtocolError):
    """A role died, hung or answered with an error; names the role and what it was doing."""

    def __init__(self, role: str, reason: str, code: ErrorCode):
        super().__init__(reason, code)
        self.role = role


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def endpoints_for(transport: str, run_dir: Path) -> dict[str, str]:
    names = ("control", "evaluator", "bank", "agency")
    if transport == "tcp":
        return {n: f"tcp://127.0.0.1:{free_tcp_port()}" for n in names}
    return {n: f"ipc://{run_dir}/{n}.ipc" for n in names}


@dataclass
class RoleProcess:
    """A role of the run: a child process, or (attached) a process started elsewhere, popen None."""

    role: str
    popen: subprocess.Popen | None
    log_path: Path | None
    identity: bytes | None = None
    pid: int | None = None

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None:
            return "(started elsewhere: see its own log)"
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _descendants(pids: list[int]) -> list:
    """Every process the roles started (a user's key-generation child, the evaluator's Dask workers), as they are
    now: what a role could not end itself (one stopped, or started while its role was being killed) is ended by
    the runner after the roles."""
    import psutil
    found = []
    for pid in pids:
        try:
            found += psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            pass
    return found


def _kill_survivors(procs: list, grace: float = 2.0) -> list[str]:
    """SIGKILL (a stopped process too) what is still there `grace` seconds after its role ended; named in the log."""
    import psutil
    _, alive = psutil.wait_procs(procs, timeout=grace) if procs else ([], [])
    named = []
    for proc in alive:
        try:
            named.append(f"{proc.pid} ({' '.join(proc.cmdline())[-80:]})")
            proc.kill()
        except psutil.Error:
            pass
    if named:
        log.warning("runner: killed %d process(es) the roles left behind: %s", len(named), "; ".join(named))
    return named


def _is_stopped(pid: int) -> bool:
    """Whether a local process is stopped (SIGSTOP, or traced): its state in /proc is T or t."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] in (b"T", b"t")
    except (OSError, ValueError):
        return False


class ProcessSet:
    """The four role processes of one run, and the runner's control ROUTER they connect to."""

    def __init__(self, run_dir: Path, transport: str, fhe: str, deployment: str | None,
                 extra_args: dict[str, list[str]] | None = None, secure: bool = True,
                 attach: str | None = None, keys_dir: Path | None = None, liveness: float = DEFAULT_LIVENESS_S,
                 network: Network | None = None):
        """With `attach`, start nothing: roles started elsewhere connect to that control endpoint
        (CURVE keys then come from `keys_dir`, which must hold runner.key_secret). With a shaped `network`, the
        roles connect to each other through the shaping forwarder (simulation/shaper.py), one port per link."""
        if network is not None and network.shaped:
            if attach:
                raise ValueError("a network cannot be emulated for roles started elsewhere (--attach): shape their "
                                 "hosts' links (tests/test_netns.py does it with tc)")
            check_liveness(network, liveness)
        self.run_dir = Path(run_dir)
        self.attach = attach
        self.endpoints = {"control": attach} if attach else endpoints_for(transport, self.run_dir)
        self.fhe, self.deployment = fhe, deployment
        self.extra_args = extra_args or {}
        self.liveness = liveness  # a role silent this long (no heartbeat, no connection) is lost
        self.network = network if network is not None and network.shaped else None
        self.shaper = Shaper(self.network, self.endpoints) if self.network else None
        self.ctx = zmq.Context()
        self.control = make_socket(self.ctx, zmq.ROUTER, max_frame=Result.MAX_BYTES, liveness=liveness)
        self.watch = RouterWatch(self.control)
        self._stopped_since: dict[str, float] = {}
        self.ended_by: dict[str, str] = {}
        self.killed_leftovers: list[str] = []  # what stop() had to SIGKILL after the roles (pid and command line)
        self.keys_dir: Path | None = None
        self.curve = None
        self.key_roles: dict[str, str] = {}
        if secure:  # fresh CURVE key pairs for this run (files 0600), or the given ones
            self.keys_dir = Path(keys_dir) if keys_dir else create_keys(self.run_dir / "keys")
            self.curve = Curve.load("runner", self.keys_dir)
            self.curve.start_authenticator(self.ctx)
            self.curve.server(self.control)
            self.key_roles = self.curve.roles_by_key()
        self.control.bind(self.endpoints["control"])
        # The runner's own hold on the run directory: a role that outlives it removes what is its own (run_dir.py)
        self.presence = None if attach else Presence(self.run_dir)
        self.procs: dict[str, RoleProcess] = {}
        self.traffic = TrafficLog("runner")
        self.log_refusal = RateLimitedLog(log)  # a flooding peer must not flood the runner's output too
        self._seq = 0

    def role_endpoints(self, role: str) -> dict[str, str]:
        """The endpoints a role is given: its own to bind, its peers' to connect to (through the forwarder's port
        for each shaped link of which it is the client)."""
        return {**self.endpoints, **(self.shaper.peer_endpoints(role) if self.shaper else {})}

    def command_line(self, role: str) -> list[str]:
        ends = self.role_endpoints(role)
        args = [sys.executable, "-m", MODULES[role], "--control", self.endpoints["control"],
                "--evaluator", ends["evaluator"], "--bank", ends["bank"],
                "--agency", ends["agency"], "--workdir", str(self.run_dir / role),
                "--fhe", self.fhe]
        if self.deployment:
            args += ["--deployment", str(self.deployment)]
        args += ["--keys-dir", str(own_keys_dir(role, self.keys_dir))] if self.keys_dir else ["--insecure"]
        args += ["--liveness", f"{self.liveness:g}"]
        args += ["--exit-with-parent"]  # a runner that dies (even by SIGKILL) leaves no role behind
        args += ["--run-dir", str(self.run_dir)]  # ... and no file: the roles remove what is theirs
        return args + self.extra_args.get(role, [])

    def start(self, timeout: float, roles: tuple[str, ...] = ROLES) -> dict[str, int]:
        """Start the roles and wait until each has said READY; returns role -> pid."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
        if self.shaper is not None and self.shaper.proc is None:
            self.shaper.start(timeout)
        for role in roles if not self.attach else ():
            log_path = self.run_dir / f"{role}.log"
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # a restarted role appends
            with os.fdopen(fd, "ab") as log_file:  # every file a role makes is its own only (umask 077)
                popen = subprocess.Popen(self.command_line(role), cwd=PROJECT_ROOT, env=env, umask=0o077,
                                         stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.procs[role] = RoleProcess(role, popen, log_path)
        if self.attach:
            self.procs = {role: RoleProcess(role, None, None) for role in roles}
        deadline = time.monotonic() + timeout
        while any(p.identity is None for p in self.procs.values()):
            self._check_alive("starting")
            if time.monotonic() > deadline:
                late = [r for r, p in self.procs.items() if p.identity is None]
                raise RoleFailure(late[0], f"{', '.join(late)} did not announce READY within {timeout:.0f} s "
                                  f"(start-up takes about 1 s on an idle 2-core machine: BENCHMARKS.md)",
                                  ErrorCode.TIMEOUT)
            if self.control.poll(100, zmq.POLLIN):
                got = self._receive()
                if got is None:
                    continue
                identity, sender, packet = got
                proc = self.procs.get(sender)
                if isinstance(packet.message, Ready) and proc is not None and proc.identity is None:
                    proc.identity, proc.pid = identity, packet.message.pid
        return self.pids()

    def _receive(self) -> tuple[bytes, str, Packet] | None:
        """One message on the control socket, from the role its CURVE key proves (READY names only the
        sender itself: protocol/authorization.py), or None for anything refused."""
        got = receive(self.control, router=True)
        sender = role_of(got.identity) if self.curve is None else self.key_roles.get(got.user_id or "", "unknown")
        try:
            if got.too_large or not got.frames:
                raise ProtocolError(got.too_large or "empty message", ErrorCode.TOO_LARGE)
            packet = decode(got.frames)
            authorize("runner", sender, packet.message)
        except ProtocolError as exc:
            self.log_refusal(logging.WARNING, f"runner: refused a control message from {sender}: {exc}")
            return None
        proc = self.procs.get(sender)
        if proc is not None and (proc.identity in (None, got.identity)):
            self.watch.seen(sender, got.source_fd)  # the connection its heartbeats now travel on
        return got.identity, sender, packet

    def kill(self, role: str) -> None:
        """SIGKILL a role (fault injection); it stays dead unless restarted."""
        proc = self.procs[role]
        proc.popen.kill()
        proc.popen.wait(10)

    def restart(self, role: str, timeout: float) -> int:
        """Start a role again with the same arguments (and work directory); wait for its READY."""
        if self.procs[role].exit_code() is None:
            self.kill(role)
        del self.procs[role]
        self.watch.forget(role)
        self._stopped_since.pop(role, None)
        self.start(timeout, (role,))
        return self.procs[role].popen.pid

    def cut_off(self, role: str, seconds: float) -> None:
        """Freeze a role (SIGSTOP) for `seconds`, then let it go on (SIGCONT): a role cut off the network."""
        pid = self.procs[role].popen.pid
        os.kill(pid, signal.SIGSTOP)
        timer = threading.Timer(seconds, lambda: _signal_quietly(pid, signal.SIGCONT))
        timer.daemon = True
        timer.start()

    def pids(self) -> dict[str, int]:
        return {role: p.pid or p.popen.pid for role, p in self.procs.items()}

    def _check_alive(self, doing: str) -> None:
        """Raise RoleFailure naming a role that exited, is stopped (a local process, for `liveness` s), or
        whose connection to the runner closed (it ended, or answered no heartbeat for `liveness` s)."""
        now = time.monotonic()
        for role, proc in self.procs.items():
            code = proc.exit_code()
            if code is not None:
                raise RoleFailure(role, f"the {role} process exited with code {code} while {doing}; "
                                  f"last log lines:\n{proc.log_tail()}", ErrorCode.INTERNAL)
            if proc.popen is not None and _is_stopped(proc.popen.pid):
                since = self._stopped_since.setdefault(role, now)
                if now - since >= self.liveness:
                    raise RoleFailure(role, f"the {role} was lost while {doing}: its process is stopped and has "
                                      f"answered nothing for {self.liveness:g} s", ErrorCode.PEER_LOST)
            else:
                self._stopped_since.pop(role, None)
        for role in self.watch.lost():
            if role in self.procs:
                raise RoleFailure(role, f"the {role} was lost while {doing}: its connection to the runner closed "
                                  f"(its process ended, or it answered no heartbeat for {self.liveness:g} s)",
                                  ErrorCode.PEER_LOST)

    def confirm_loss(self, reporter: str, reason: str, doing: str) -> None:
        """A role reported a peer lost (PEER_LOST): give the runner's own liveness checks one window to name
        the lost role (a stopped or dead process, a closed connection); else blame the link, naming both."""
        deadline = time.monotonic() + self.liveness + 1.0
        while time.monotonic() < deadline:
            self._check_alive(doing)
            time.sleep(0.1)
        raise RoleFailure(reporter, f"the {reporter} lost a peer while {doing} ({reason}); every role still "
                          f"answers the runner, so the link between them failed", ErrorCode.PEER_LOST)

    def command(self, role: str, action: str, params: dict, timeout: float) -> dict:
        """Send a COMMAND to a role and wait for its RESULT; raise RoleFailure naming the role."""
        proc = self.procs[role]
        self._seq += 1
        seq = self._seq
        frames = encode(Command(action, params), seq)
        size = sum(len(f) for f in frames)
        if size > Command.MAX_BYTES:  # the role would drop the link for good: refused here, nothing is sent
            raise ProtocolError(f"the {action} command for the {role} is {size:,} bytes, over the {Command.MAX_BYTES:,} "
                                "a role accepts (SPEC §4): not sent", ErrorCode.TOO_LARGE)
        self.traffic.add(role, frames)
        self._check_alive(f"about to run {action}")
        if not send_nowait(self.control, [proc.identity] + frames):
            raise RoleFailure(role, f"the {role} cannot be reached for {action!r} (disconnected, or not reading)",
                              ErrorCode.TIMEOUT)
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive(f"running {action}")
            if time.monotonic() > deadline:
                raise RoleFailure(role, f"the {role} did not finish {action!r} within {timeout:.0f} s",
                                  ErrorCode.TIMEOUT)
            if not self.control.poll(100, zmq.POLLIN):
                continue
            got = self._receive()
            if got is None:
                continue
            identity, sender, packet = got
            if identity != proc.identity or sender != role or packet.seq != seq:
                continue
            if isinstance(packet.message, Error):
                raise RemoteError(packet.message.reason, ErrorCode.parse(packet.message.code), role)
            if isinstance(packet.message, Result):
                return packet.message.result

    def _await_attached(self, roles: list[str], grace: float) -> None:
        """A role started elsewhere can be neither watched nor signalled: SHUTDOWN is sent again twice a second
        (one message lost on a bad link must not leave the role running) until its control connection closes."""
        pending, deadline, resend = set(roles), time.monotonic() + grace, time.monotonic() + 0.5
        while pending and time.monotonic() < deadline:
            for role in self.watch.lost():
                if role in pending:
                    pending.discard(role)
                    self.ended_by[role] = "SHUTDOWN (attached: its connection closed)"
            if pending and time.monotonic() >= resend:
                for role in pending:
                    send_nowait(self.control, [self.procs[role].identity] + encode(Shutdown(), 0))
                resend = time.monotonic() + 0.5
            time.sleep(0.05)
        for role in pending:
            self.ended_by[role] = f"SHUTDOWN sent, still connected after {grace:.0f} s (attached)"

    def stop(self, grace: float = 2.0, at_once: bool = False) -> dict[str, int | None]:
        """SHUTDOWN every role, then SIGTERM, then SIGKILL; close the control socket. With `at_once` (the run was
        stopped by a signal) the roles it started get SIGTERM straight away. Returns exit codes, and records in
        `ended_by` how each role ended: "SHUTDOWN" (it exited by itself when told), "SIGTERM" or "SIGKILL" (the
        runner had to), "before stop" (it had already exited: a fault, a crash), or "<SIGNAL> (not from the
        runner)" when something else killed it meanwhile."""
        if self.control.closed:
            return {role: p.exit_code() for role, p in self.procs.items()}
        self.ended_by = {role: "before stop" for role, p in self.procs.items()
                         if p.popen is not None and p.exit_code() is not None}
        descendants = _descendants([p.popen.pid for p in self.procs.values() if p.popen is not None])
        for role, proc in self.procs.items():
            if role in self.ended_by:
                continue
            if proc.popen is not None and at_once:
                proc.popen.terminate()
                self.ended_by[role] = "SIGTERM"
            elif proc.popen is not None and _is_stopped(proc.popen.pid):
                proc.popen.kill()  # a stopped process would answer nothing: no grace for it
                self.ended_by[role] = "SIGKILL"
            elif proc.popen is not None and proc.identity is None:
                proc.popen.terminate()  # not READY yet, so not reachable by SHUTDOWN: SIGTERM at once
                self.ended_by[role] = "SIGTERM"
            elif proc.identity is not None and proc.exit_code() is None:
                send_nowait(self.control, [proc.identity] + encode(Shutdown(), 0))
        deadline = time.monotonic() + grace
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            for role, proc in self.procs.items():
                if proc.popen is not None and proc.popen.poll() is None and sig is not None:
                    proc.popen.send_signal(sig)
                    self.ended_by[role] = signal.Signals(sig).name
            while time.monotonic() < deadline and any(p.popen is not None and p.popen.poll() is None
                                                      for p in self.procs.values()):
                time.sleep(0.05)
            deadline = time.monotonic() + 5
        attached = [role for role, p in self.procs.items() if p.popen is None and p.identity is not None]
        for role in [r for r in attached if r not in self.watch.fds]:  # its connection was already lost
            attached.remove(role)
            self.ended_by[role] = "before stop (attached: its connection was lost)"
        if attached:
            self._await_attached(attached, max(grace, 5.0))
        self.killed_leftovers = _kill_survivors(descendants)
        for role, proc in self.procs.items():
            code = proc.exit_code()
            sent = self.ended_by.get(role)
            if code is not None and code < 0 and sent not in (signal.Signals(-code).name, "before stop"):
                self.ended_by[role] = f"{signal.Signals(-code).name} (not from the runner)"
            self.ended_by.setdefault(role, "SHUTDOWN")
        if self.shaper is not None:
            self.shaper.stop()
        self.watch.close()
        self.control.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        self.ctx.term()
        if self.presence is not None:
            self.presence.leave()
        return {role: p.exit_code() for role, p in self.procs.items()}
