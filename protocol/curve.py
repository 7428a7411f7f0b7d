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
    """Make a key pair per role in `directory` (`<role>.key` public, `<role>.key_secret` secret, 0600)."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for role in roles:
        public, secret = zmq.auth.create_certificates(directory, role)
        os.chmod(public, 0o600)
        os.chmod(secret, 0o600)
    return directory


@dataclass
class Curve:
    """One role's CURVE identity and the directory of public keys it trusts."""

    role: str
    keys_dir: Path
    public: bytes
    secret: bytes
    auth: ThreadAuthenticator | None = None

    @classmethod
    def load(cls, role: str, keys_dir: Path | str) -> "Curve":
        keys_dir = Path(keys_dir)
        secret_file = keys_dir / f"{role}.key_secret"
        if not secret_file.is_file():
            raise CurveError(f"no CURVE secret key for {role} at {secret_file}; create keys with "
                             "`run_scenario.py keys DIR` or pass --insecure")
        check_private(keys_dir)
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
