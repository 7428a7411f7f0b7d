"""The evaluator's Dask cluster: which scheduler, with which TLS, or a local cluster of N worker processes."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

TLS_FILES = ("ca.pem", "cert.pem", "key.pem")
START_ATTEMPTS = 3
ALL_WORKERS_WITHIN = 20.0  # seconds the evaluator waits for every local worker before it serves with those up


class ClusterRefused(ValueError):
    """A cluster setting the evaluator will not start with (one line saying why)."""


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def check_scheduler(address: str, tls_dir: str | None) -> None:
    """A scheduler off this host must be reached over tls:// with --cluster-tls: whoever reaches a Dask
    scheduler's port without TLS can run code on its workers, which hold evaluation keys."""
    parts = urlsplit(address if "://" in address else "tcp://" + address)
    if parts.scheme not in ("tcp", "tls"):
        raise ClusterRefused(f"--scheduler {address}: expected tls://HOST:PORT (or tcp:// on loopback)")
    if parts.scheme == "tls" and not tls_dir:
        raise ClusterRefused(f"--scheduler {address}: a tls:// scheduler needs --cluster-tls DIR")
    if parts.scheme == "tcp" and not is_loopback(parts.hostname or ""):
        raise ClusterRefused(f"refusing --scheduler {address}: a scheduler off loopback without TLS lets anyone who "
                             "reaches its port run code where evaluation keys live; use tls:// and --cluster-tls DIR")


def security(tls_dir: str | None):
    """Mutual TLS for every link of the cluster (ca.pem signs every party's cert.pem), or None."""
    if not tls_dir:
        return None
    from distributed.security import Security
    directory = Path(tls_dir)
    missing = [name for name in TLS_FILES if not (directory / name).is_file()]
    if missing:
        raise ClusterRefused(f"--cluster-tls {tls_dir}: missing {', '.join(missing)} "
                             "(make them with `run_scenario.py cluster-certs DIR`)")
    ca, cert, key = (str(directory / name) for name in TLS_FILES)
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, tls_scheduler_cert=cert,
                    tls_scheduler_key=key, tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)


def make_certs(directory: Path, names: tuple[str, ...] = ("evaluator", "scheduler", "worker"), days: int = 30) -> None:
    """A private CA and one certificate per name, for the operator's hosts (openssl): DIR/ca.key stays with
    the operator; DIR/<name>/ holds ca.pem, cert.pem, key.pem (0600) for that host's --cluster-tls / --tls-* files."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days), "-subj", "/CN=fcs-cluster-ca",
            "-keyout", str(ca_key), "-out", str(ca_pem))
    for name in names:
        sub = directory / name
        sub.mkdir(mode=0o700, exist_ok=True)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=fcs-{name}", "-keyout", str(sub / "key.pem"),
                "-out", str(sub / "req.csr"))
        openssl("x509", "-req", "-in", str(sub / "req.csr"), "-CA", str(ca_pem), "-CAkey", str(ca_key),
                "-CAcreateserial", "-days", str(days), "-out", str(sub / "cert.pem"))
        (sub / "req.csr").unlink()
        (sub / "ca.pem").write_bytes(ca_pem.read_bytes())
        for path in sub.iterdir():
            os.chmod(path, 0o600)
    for path in directory.iterdir():
        if path.is_file():
            os.chmod(path, 0o600)


LOCAL_TLS_DIR = "cluster-tls"


def make_local_certs(directory: Path, days: int = 7) -> Path:
    """The local cluster's own mutual-TLS identity, made afresh at every start: one self-signed EC (P-256)
    certificate that is also the only CA the scheduler, its workers and the evaluator trust, in a 0700 directory
    of the evaluator's private work directory (files 0600). Nothing else on the host holds a certificate it signed,
    so no other process can connect to the scheduler as a client or register with it as a worker."""
    if directory.is_dir() and not directory.is_symlink():  # the previous start's: never reused
        shutil.rmtree(directory)
    elif directory.is_symlink() or directory.exists():
        directory.unlink()
    directory.mkdir(mode=0o700, parents=True)
    os.chmod(directory, 0o700)
    key, cert = directory / "key.pem", directory / "cert.pem"
    try:
        done = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                               "-nodes", "-days", str(days), "-subj", "/CN=fcs-local-cluster", "-keyout", str(key),
                               "-out", str(cert)], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"the local cluster's certificate could not be made (openssl: {exc}); give --cluster-tls "
                           "DIR made with `run_scenario.py cluster-certs`") from None
    if done.returncode != 0:
        raise RuntimeError(f"openssl could not make the local cluster's certificate: "
                           f"{done.stderr.decode(errors='replace')[-300:]}")
    (directory / "ca.pem").write_bytes(cert.read_bytes())
    for path in directory.iterdir():
        os.chmod(path, 0o600)
    return directory


@dataclass
class Cluster:
    """A connected client, the cluster it started (local) or None (remote), and how to name the scheduler."""
    client: object
    local: object | None
    address: str
    security: object | None

    def close(self) -> None:
        close_quietly(self.client, self.local)


def close_quietly(*things) -> None:
    """Close Dask clients and clusters (5 s each) that may already be gone."""
    for thing in things:
        if thing is not None:
            try:
                thing.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing what may already be gone
                pass


def kill_leftover_workers(grace: float = 2.0) -> list[int]:
    """After the local cluster is closed: a worker process of ours still there (one stopped while it was starting,
    before the circuit plugin tied it to this process, which Dask's nanny does not kill) is SIGKILLed and reaped.
    Multiprocessing's tracker then ends by itself once its last holder is gone."""
    import psutil
    workers = [c for c in psutil.Process().children() if "spawn_main" in " ".join(_cmdline(c))]
    _, alive = psutil.wait_procs(workers, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    if alive:
        logging.getLogger("fhe_credit_sim.evaluator").warning(
            "evaluator: %d Dask worker process(es) still there after the cluster closed were killed: %s", len(alive),
            [p.pid for p in alive])
    return [p.pid for p in alive]


def _cmdline(proc) -> list[str]:
    try:
        return proc.cmdline()
    except Exception:  # noqa: BLE001 - gone, or a zombie
        return []


def start_local(workers: int, worker_threads: int, tls_dir: str | None, workdir: Path):
    """N worker processes (one Dask thread each; Concrete on `worker_threads` cores, default 1) and a scheduler,
    all on loopback and always under mutual TLS: with the operator's certificates when given (--cluster-tls),
    otherwise with a certificate made for this start in the evaluator's work directory (make_local_certs)."""
    from distributed import LocalCluster
    env = {"OMP_NUM_THREADS": str(worker_threads or 1)}
    log = logging.getLogger("fhe_credit_sim.evaluator")
    if not tls_dir:
        started = time.perf_counter()
        tls_dir = str(make_local_certs(workdir / LOCAL_TLS_DIR))
        log.info("evaluator: the local Dask cluster's TLS certificate made in %s (%.2f s)", tls_dir,
                 time.perf_counter() - started)
    sec = security(tls_dir)
    local_dir = workdir / "dask"
    local_dir.mkdir(mode=0o700, exist_ok=True)
    import dask
    # Runs go where the evaluator sends them (a worker holding their key): the scheduler does not steal them.
    # A worker that stops answering (SIGSTOP, a hung host) is dropped after 10 s and its run retried elsewhere.
    # A worker that dies during a run fails that run at once (allowed-failures 0) instead of Dask sending it on to
    # the next worker by itself: the evaluator retries it (MAX_ATTEMPTS), so a run that crashes the process it runs
    # in costs at most that many worker processes, each restarted by its nanny.
    # Dask's HTTP servers (plain HTTP even with TLS) answer only /health: no info pages (workers, task keys naming
    # sessions and runs, logs, exceptions), no JSON, no metrics for whoever on the host reaches their ports.
    with dask.config.set({"distributed.scheduler.work-stealing": False, "distributed.scheduler.worker-ttl": "10s",
                          "distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.http.routes": ["distributed.http.health"],
                          "distributed.worker.http.routes": ["distributed.http.health"]}):
        for attempt in range(1, START_ATTEMPTS + 1):
            cluster = None
            try:
                cluster = LocalCluster(n_workers=0, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       protocol="tls://", security=sec, dashboard_address=None,
                                       local_directory=str(local_dir), env=env, silence_logs=logging.WARNING)
                cluster.scale(workers)  # started in the background: a worker that never comes up blocks nothing
                wait_for_local_workers(cluster, workers, log)
                return cluster, sec
            except Exception as exc:  # noqa: BLE001 - no worker came up (died, or stopped, while starting): again
                close_quietly(cluster)
                kill_leftover_workers()
                if attempt == START_ATTEMPTS:
                    raise RuntimeError(f"the local Dask cluster did not start ({START_ATTEMPTS} attempts): "
                                       f"{type(exc).__name__}: {exc}") from None
                log.warning(
                    "evaluator: the local Dask cluster did not start (%s: %s); starting it again",
                    type(exc).__name__, str(exc)[:200])


def wait_for_local_workers(cluster, wanted: int, log) -> int:
    """Wait until the local cluster's scheduler knows `wanted` workers, at most ALL_WORKERS_WITHIN seconds; then
    go on with those that are up (the others join when they do, or never: one stopped or hung while it started),
    or raise if none is."""
    started = time.monotonic()
    while True:
        up = len(cluster.scheduler.workers)  # the scheduler runs in this process
        waited = time.monotonic() - started
        if up >= wanted:
            return up
        if waited > ALL_WORKERS_WITHIN:
            if not up:
                raise RuntimeError(f"no local Dask worker came up within {ALL_WORKERS_WITHIN:.0f} s")
            log.warning("evaluator: %d of %d local Dask worker(s) up after %.0f s; serving with them (the others join "
                        "when they are up)", up, wanted, waited)
            return up
        time.sleep(0.05)


def quiet_dask_logs() -> None:
    """Dask's INFO lines (every connection, every plugin) would drown the evaluator's own log."""
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker",
                 "distributed.core", "distributed.http.proxy", "distributed.deploy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def connect(address: str, sec, timeout: float = 10.0):
    from distributed import Client
    return Client(address, security=sec, timeout=timeout, set_as_default=False)
