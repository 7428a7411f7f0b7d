"""Build and install pyzmq 25.1.2 with its bundled libzmq patched against the `!_io_error` abort (libzmq 4364, 4767).

libzmq (every release up to its master of 2026) aborts the whole process when a peer floods a socket faster than
it is read and then hangs up: the engine marks an I/O error while its input is stopped, and the next heartbeat
timer or a PING still in its input buffer calls `out_event`, whose first line is `zmq_assert (!_io_error)`. Our own
heartbeats off is not enough (a peer's PINGs do it too), and an unbounded receive queue (RCVHWM 0) trades the
abort for unbounded memory (SPEC §9, BENCHMARKS "Hostile peers"). The patch makes `out_event` return when the
engine has already failed (`restart_output` already does), and `restart_input` return on an engine whose input
never stopped (libzmq 3937); the connection then ends through the engine's own error path.

pyzmq 25.1.2 is the last release whose sdist carries libzmq's sources (later ones download them at build time).
CURVE uses Debian's libsodium when its headers are present (tweetnacl, its fallback, is about 9x slower on a
37 MB evaluation key). Usage: `python .ci/pyzmq/build.py VENV_PYTHON` — reuses a wheel cached by patch digest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "25.1.2"
SDIST_SHA256 = "93f1aa311e8bb912e34f004cf186407a4e90eec4f0ecc0efd26056bf7eda0226"
MARKER = "heartbeat-io-error/1"  # zmq.sugar.version.fcs_libzmq_patch in the patched build (protocol/zmq_check.py)
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("FCS_WHEEL_CACHE", Path.home() / ".cache" / "fhe-credit-sim"))

ENGINE_EDITS = (
    ("void zmq::stream_engine_base_t::out_event ()\n{\n    zmq_assert (!_io_error);\n",
     "void zmq::stream_engine_base_t::out_event ()\n{\n"
     "    //  fhe-credit-sim: an engine that saw an I/O error while its input was stopped (a peer that flooded,\n"
     "    //  then hung up) can still be asked to write by a heartbeat timer or a PING left in its input buffer;\n"
     "    //  nothing can be written any more and restart_input ends the connection (upstream: an abort).\n"
     "    if (unlikely (_io_error))\n        return;\n"),
    ("bool zmq::stream_engine_base_t::restart_input ()\n{\n    zmq_assert (_input_stopped);\n",
     "bool zmq::stream_engine_base_t::restart_input ()\n{\n"
     "    //  fhe-credit-sim: a reconnected engine whose input never stopped (libzmq issue 3937).\n"
     "    if (unlikely (!_input_stopped))\n        return true;\n"),
)
SODIUM_EDITS = (
    ("            sources += glob(pjoin(bundledir, 'zeromq', 'src', 'tweetnacl.c'))\n",
     "            pass  # fhe-credit-sim: CURVE from the system's libsodium\n"),
    ("        libzmq.define_macros.append(('ZMQ_USE_TWEETNACL', 1))\n",
     "        libzmq.define_macros.append(('ZMQ_USE_LIBSODIUM', 1))\n        libzmq.libraries.append('sodium')\n"),
)


def replace_once(path: Path, edits) -> None:
    text = path.read_text()
    for old, new in edits:
        if text.count(old) != 1:
            raise SystemExit(f"{path}: expected exactly one occurrence of {old.splitlines()[0]!r}")
        text = text.replace(old, new)
    path.write_text(text)


def digest(sodium: bool) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(b"sodium" if sodium else b"tweetnacl")
    return h.hexdigest()[:12]


def installed_marker(python: str) -> str | None:
    out = subprocess.run([python, "-c", "import zmq.sugar.version as v; print(getattr(v, 'fcs_libzmq_patch', ''))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or None if out.returncode == 0 else None


def build(python: str, sodium: bool, out_dir: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="fcs-pyzmq-") as tmp:
        tmp = Path(tmp)
        subprocess.run([python, "-m", "pip", "download", f"pyzmq=={VERSION}", "--no-binary", ":all:", "--no-deps",
                        "-q", "-d", str(tmp)], check=True)  # pip reads its metadata in an isolated build env
        sdist = tmp / f"pyzmq-{VERSION}.tar.gz"
        got = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if got != SDIST_SHA256:
            raise SystemExit(f"{sdist.name}: sha256 {got}, expected {SDIST_SHA256}")
        with tarfile.open(sdist) as archive:
            try:
                archive.extractall(tmp, filter="data")
            except TypeError:  # Python before 3.10.12 / 3.11.4: no extraction filters (the sdist's hash is pinned)
                archive.extractall(tmp)
        src = tmp / f"pyzmq-{VERSION}"
        replace_once(src / "bundled" / "zeromq" / "src" / "stream_engine_base.cpp", ENGINE_EDITS)
        if sodium:
            replace_once(src / "setup.py", SODIUM_EDITS)
        version = src / "zmq" / "sugar" / "version.py"
        version.write_text(version.read_text() + f'\n# fhe-credit-sim: libzmq patched (.ci/pyzmq/build.py)\n'
                                                  f'fcs_libzmq_patch = "{MARKER}"\n')
        env = dict(os.environ, ZMQ_PREFIX="bundled")
        subprocess.run([python, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp / "wheel")],
                       check=True, env=env)
        wheel = next((tmp / "wheel").glob("pyzmq-*.whl"))
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, out_dir / wheel.name))


def main() -> None:
    python = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    if installed_marker(python) == MARKER:
        return
    sodium = Path("/usr/include/sodium.h").is_file()
    if not sodium:
        print("pyzmq: no libsodium headers (Debian: libsodium-dev); CURVE will use libzmq's slower tweetnacl",
              file=sys.stderr)
    out_dir = CACHE / f"pyzmq-{VERSION}-{digest(sodium)}"
    wheels = sorted(out_dir.glob("pyzmq-*.whl")) if out_dir.is_dir() else []
    if not wheels:
        print(f"building pyzmq {VERSION} with libzmq patched (.ci/pyzmq/build.py; about a minute)", file=sys.stderr)
        wheels = [build(python, sodium, out_dir)]
    subprocess.run([python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(wheels[-1])],
                   check=True)
    if installed_marker(python) != MARKER:
        raise SystemExit("pyzmq: the patched build did not install")


if __name__ == "__main__":
    main()
