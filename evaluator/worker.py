"""`python -m evaluator.worker`: one evaluator worker process; runs jobs the evaluator hands it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import click
import zmq
import zmq.auth

from credit_model.deployment import load_deployment
from protocol.errors import ProtocolError
from protocol.messages import Ready, Shutdown, Work, WorkDone, decode, encode
from protocol.run_dir import die_with_parent
from protocol.transport import make_socket, routing_identity

from .runners import Job, KeyCache, run_job


@click.command()
@click.option("--endpoint", required=True, help="The evaluator's worker endpoint.")
@click.option("--deployment", default=None)
@click.option("--fhe", type=click.Choice(["execute", "simulate"]), default="execute")
@click.option("--worker-key", default=None, help="CURVE: the secret key file the evaluator made for its workers.")
@click.option("--server-key", default=None, help="CURVE: the evaluator's public key file.")
def main(endpoint, deployment, fhe, worker_key, server_key):
    """Serve FHE jobs for the evaluator until it says SHUTDOWN or a signal arrives."""
    die_with_parent()  # SIGTERM when its evaluator dies
    server = load_deployment(deployment).circuit_server(fhe == "simulate")  # its own private build directory
    keys = KeyCache()
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    ctx = zmq.Context()
    sock = make_socket(ctx, zmq.DEALER, routing_identity("worker"))
    if worker_key:
        sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(worker_key)
        sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
    sock.connect(endpoint)
    sock.send_multipart(encode(Ready("worker", os.getpid(), {}), 0))
    parent = os.getppid()
    try:
        while not stop and os.getppid() == parent:  # a worker never outlives its evaluator
            if not sock.poll(200, zmq.POLLIN):
                continue
            try:
                message = decode(sock.recv_multipart()).message
            except ProtocolError:
                continue
            if isinstance(message, Shutdown):
                break
            if not isinstance(message, Work):
                continue
            job = Job(message.session_id, message.run_id, Path(message.key_path) if message.key_path else None,
                      tuple(Path(p) for p in message.inputs), Path(message.output))
            try:
                seconds, ok, reason = run_job(server, keys.get(job.key_path), job), True, ""
            except Exception as exc:  # noqa: BLE001 - reported back, the worker keeps serving
                seconds, ok, reason = 0.0, False, f"{type(exc).__name__}: {exc}"
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # Concrete's runtime makes it fatal on a first run
            sock.send_multipart(encode(WorkDone(job.session_id, job.run_id, seconds, ok, reason), 0))
    finally:
        sock.close(linger=0)
        ctx.term()
        server.close()


if __name__ == "__main__":
    main()
