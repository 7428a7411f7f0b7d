"""CurveZMQ for every socket: per-role key pairs on disk (0600), a ZAP authenticator admitting only known roles."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("fhe_credit_sim.curve")
ROLES = ("runner", "evaluator", "user", "bank", "agency")


class CurveError(RuntimeError):
    """Missing or unreadable CURVE keys."""


def check_private(keys_dir: Path) -> None:
    """Refuse a keys directory that others can write to (they could plant a key it then trusts), secret
    key files that others can read, and public key files that others can change."""
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)
    if mode(keys_dir) & 0o022:
        raise CurveError(f"{keys_dir} is writable by other users (mode {mode(keys_dir):o}): anyone could add "
                         f"a key it trusts; run `chmod 700 {keys_dir}`")
    for path in keys_dir.iterdir():
        if path.name.endswith(".key_secret") and mode(path) & 0o077:
            raise CurveError(f"{path} is readable by other users (mode {mode(path):o}); run `chmod 600 {path}`")
        if path.name.endswith(".key") and mode(path) & 0o022:
            raise CurveError(f"{path} is writable by other users (mode {mode(path):o}); run `chmod 600 {path}`")


def create_keys(directory: Path, roles=ROLES) -> Path:
    """Make a key pair per role: `directory/<role>/` holds that role's `<role>.key_secret` and the public
    `<name>.key` of every role (files 0600, directories 0700). Each role, and each host, is given only its own
    directory: no role ever holds another's secret key."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    pairs = {}
    for role in roles:
        own = directory / role
        own.mkdir(mode=0o700, exist_ok=True)
        os.chmod(own, 0o700)
        public, secret = zmq.auth.create_certificates(own, role)
        for path in (public, secret):
            os.chmod(path, 0o600)
        pairs[role] = Path(public).read_bytes()
    for role in roles:
        for other, public in pairs.items():
            if other != role:
                path = directory / role / f"{other}.key"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(public)
    return directory


def own_keys_dir(role: str, keys_dir: Path | str) -> Path:
    """Where `role`'s keys are: `keys_dir` itself when it holds `<role>.key_secret`, else `keys_dir/<role>/` (the
    layout `create_keys` writes, as handed to `run --attach` and `conformance`)."""
    keys_dir = Path(keys_dir)
    if not (keys_dir / f"{role}.key_secret").is_file() and (keys_dir / role / f"{role}.key_secret").is_file():
        return keys_dir / role
    return keys_dir


@dataclass
class Curve:
    """One role's CURVE identity and the directory of public keys it trusts."""

    role: str
    keys_dir: Path
    public: bytes
    secret: bytes
    auth: ThreadAuthenticator | None = None

    @classmethod
    def load(cls, role: str, keys_dir: Path | str, own_only: bool = False) -> "Curve":
        """The role's key pair from its keys directory (see `own_keys_dir`). With `own_only` (a role process), a
        directory that also holds another role's secret key is refused: each role is given only its own."""
        keys_dir = own_keys_dir(role, keys_dir)
        secret_file = keys_dir / f"{role}.key_secret"
        if not secret_file.is_file():
            raise CurveError(f"no CURVE secret key for {role} at {secret_file}; create keys with "
                             "`run_scenario.py keys DIR` or pass --insecure")
        check_private(keys_dir)
        others = sorted(p.name for p in keys_dir.glob("*.key_secret") if p.name != secret_file.name)
        if own_only and others:
            raise CurveError(f"{keys_dir} holds the secret keys of others ({', '.join(others)}): give the {role} a "
                             f"directory with only {secret_file.name} and the public *.key files "
                             "(`run_scenario.py keys DIR` writes one directory per role)")
        public, secret = zmq.auth.load_certificate(secret_file)
        if secret is None:
            raise CurveError(f"{secret_file} holds no secret key")
        return cls(role, keys_dir, public, secret)

    def peer_key(self, peer: str) -> bytes:
        path = self.keys_dir / f"{peer}.key"
        if not path.is_file():
            raise CurveError(f"no CURVE public key for {peer} at {path}")
        return zmq.auth.load_certificate(path)[0]

    def start_authenticator(self, ctx: zmq.Context) -> None:
        """Admit only clients whose public key is one of `<role>.key` in keys_dir (ZAP, all domains)."""
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(self.keys_dir))

    def server(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def client(self, peer: str):
        """A socket set-up function for a client of `peer`."""
        server_key = self.peer_key(peer)

        def setup(sock: zmq.Socket) -> None:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_serverkey = server_key
        return setup

    def roles_by_key(self) -> dict[str, str]:
        """Z85 public key (the ZAP User-Id) -> role, for every trusted `<role>.key` in keys_dir."""
        roles = {}
        for path in self.keys_dir.glob("*.key"):
            public, _ = zmq.auth.load_certificate(path)
            roles[public.decode()] = path.stem
        return roles

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
