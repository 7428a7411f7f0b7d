"""A hostile process on the evaluator's host: `python -m tests.dask_intruder HOST:PORT DIR [PORT ...]` tries to join
the evaluator's local Dask cluster with its own `distributed` client and worker, and asks every given loopback port
(the cluster's listening ones) for Dask's HTTP pages, and prints one JSON line saying what it got. It holds nothing of the evaluator's (no file of its work directory): only the scheduler's address, which it
read from the evaluator's log, and certificates of a CA of its own (in DIR), as a bank or agency process on the
same machine could make them.

Tried, each with a deadline: a client over tcp:// and over tls:// with its own certificates (connected means it
could run code on the workers, which hold evaluation keys, and read every task); a worker over each (registered
means the scheduler would hand it the evaluator's tasks, ciphertexts and keys included)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

PORT_DEADLINE_S = 6.0
WORKER_WATCH_S = 12.0


def try_client(address: str, security) -> str:
    from distributed import Client
    try:
        client = Client(address, security=security, timeout=PORT_DEADLINE_S, set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - any refusal is what the evaluator must give
        return f"refused: {type(exc).__name__}: {str(exc)[:160]}"
    try:
        workers = client.scheduler_info().get("workers", {})
        got = client.run(lambda: "ran code on a worker")
        return f"connected: {len(workers)} worker(s), {list(got.values())[:1]}"
    finally:
        client.close(timeout=2)


def try_worker(address: str, tls_args: list[str], log: Path) -> str:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                 "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--death-timeout",
                                 str(int(WORKER_WATCH_S)), *tls_args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + WORKER_WATCH_S
    while time.monotonic() < deadline and proc.poll() is None:
        if "Registered to" in log.read_text(errors="replace"):
            break
        time.sleep(0.2)
    registered = "Registered to" in log.read_text(errors="replace")
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    return "registered" if registered else "not registered"


# Dask's HTTP pages that would tell a bystander about the evaluator's runs: the scheduler's info pages (workers, task
# keys naming sessions and runs, logs, exceptions, call stacks), its JSON and Prometheus metrics; a worker's metrics.
HTTP_PATHS = ("/info/main/workers.html", "/info/main/logs.html", "/info/main/exceptions.html", "/json/identity.json",
              "/json/counts.json", "/metrics", "/statics/")


def try_http(ports: list[int]) -> list[str]:
    """Every (port, path) that answered a page with content: nothing is expected (a /health "ok" is not asked)."""
    import ssl
    import urllib.error
    import urllib.request
    answered = []
    for port in ports:
        for scheme in ("http", "https"):
            for path in HTTP_PATHS:
                try:
                    with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}{path}", timeout=2,
                                                context=ssl._create_unverified_context() if scheme == "https"
                                                else None) as reply:
                        body = reply.read(4096)
                    if body:
                        answered.append(f"{scheme}://127.0.0.1:{port}{path} {reply.status} {body[:60]!r}")
                except (urllib.error.URLError, OSError, ValueError):
                    continue
    return answered


def main(hostport: str, directory: str, ports: list[int]) -> None:
    from distributed.security import Security

    from evaluator.cluster import make_certs
    own = Path(directory)
    make_certs(own, names=("intruder",))
    mine = own / "intruder"
    sec = Security(tls_ca_file=str(mine / "ca.pem"), tls_client_cert=str(mine / "cert.pem"),
                   tls_client_key=str(mine / "key.pem"), tls_worker_cert=str(mine / "cert.pem"),
                   tls_worker_key=str(mine / "key.pem"), require_encryption=True)
    tls_args = ["--tls-ca-file", str(mine / "ca.pem"), "--tls-cert", str(mine / "cert.pem"), "--tls-key",
                str(mine / "key.pem")]
    result = {
        "client_tcp": try_client(f"tcp://{hostport}", None),
        "client_tls_own_ca": try_client(f"tls://{hostport}", sec),
        "worker_tcp": try_worker(f"tcp://{hostport}", [], own / "worker-tcp.log"),
        "worker_tls_own_ca": try_worker(f"tls://{hostport}", tls_args, own / "worker-tls.log"),
        "http_pages": try_http(ports),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(port) for port in sys.argv[3:]])
