"""Load: many applicant sessions in flight at once against one real evaluator process."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import zmq

from credit_model.deployment import Deployment
from credit_model.explainability import is_approved
from credit_model.schema import PARTIES
from protocol.curve import Curve
from protocol.messages import EvalKey, GetOutput, Input, Output, Run, decode, encode
from protocol.transport import make_socket

from simulation.processes import ProcessSet
from simulation.progress import Progress


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def applicant_records(deployment: Deployment, count: int, seed: int) -> list[dict]:
    """`count` applicants of the deployment's data set (real rows for kaggle and demo, generated otherwise)."""
    from credit_model.training.generator import generate_applicants
    from credit_model.training.real_data import load_demo, load_kaggle

    schema, data = deployment.schema, deployment.manifest.get("data")
    if data == "kaggle":
        df = load_kaggle("test").sample(count, random_state=seed)
    elif data == "demo":
        df = load_demo().sample(count, random_state=seed, replace=count > 56)
    else:
        df = generate_applicants(count, seed)

    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and value != value else value

    return [{p: {f.name: plain(row[f.name]) for f in schema.features[p]} for p in PARTIES}
            for _, row in df.iterrows()]


def concurrent_sessions(deployment: Deployment, sessions: int, log: Callable[[str], None] = print,
                        seed: int = 3, timeout: float = 600.0, network=None) -> dict:
    """Each thread is one applicant with its own keys, acting for user, bank and agency over its own
    CURVE sockets; all upload keys and inputs and ask for runs at the same time. Every decision is
    checked against the clear model, so a crossed session (decrypted under another key) shows. With a shaped
    `network`, each party's sockets cross its own link to the evaluator (user-, bank-, agency-evaluator)."""
    from credit_model.training.clear_model import ClearModel
    from credit_model.training.fhe_model import ml_client

    clear = ClearModel(deployment)
    records = applicant_records(deployment, sessions, seed)
    expected = [clear.approved(r) for r in records]
    results: list[dict | None] = [None] * sessions
    with tempfile.TemporaryDirectory(prefix="fcs-load-") as tmp:
        procs = ProcessSet(Path(tmp), "ipc", "execute", str(deployment.directory), network=network)
        ctx = zmq.Context()
        try:
            procs.start(300, ("evaluator",))
            keys_dir = procs.keys_dir
            endpoint = {party: procs.role_endpoints(party)["evaluator"] for party in PARTIES}

            def applicant(i: int) -> None:
                socks = {}
                started = time.perf_counter()
                try:
                    for party in PARTIES:
                        sock = make_socket(ctx, zmq.DEALER, f"{party}:{i}")
                        Curve.load(party, keys_dir).client("evaluator")(sock)
                        sock.connect(endpoint[party])
                        socks[party] = sock

                    def ask(party, message):
                        socks[party].send_multipart(encode(message, 1))
                        if not socks[party].poll(int(timeout * 1000)):
                            raise TimeoutError(f"applicant {i}: no answer to {message.TYPE.value}")
                        return decode(socks[party].recv_multipart()).message

                    client = ml_client(deployment)
                    client.generate_private_and_evaluation_keys(force=True)
                    key_id, session = f"load{i}", f"load{i}-1"
                    ask("user", EvalKey(key_id, client.get_serialized_evaluation_keys()))
                    for party in PARTIES:
                        x = deployment.preprocessor(party).transform_records([records[i][party]])
                        ask(party, Input(session, key_id, party, "base", client.quantize_encrypt_serialize_party(party, x)))
                    ask("user", Run(session, "r1", {}))
                    out = ask("user", GetOutput(session, "r1", int(timeout * 1000)))
                    if not isinstance(out, Output):
                        raise RuntimeError(f"applicant {i}: {out}")
                    approved = is_approved(client.decrypt_probabilities(out.ciphertext)[0])
                    results[i] = {"approved": approved, "expected": expected[i], "run_s": out.run_seconds,
                                  "session_s": round(time.perf_counter() - started, 3)}
                except Exception as exc:  # noqa: BLE001 - counted as a failed session
                    results[i] = {"error": f"{type(exc).__name__}: {exc}"}
                finally:
                    for sock in socks.values():
                        sock.close(linger=0)
                    bar.update(status=f"{sum(1 for r in results if r and 'error' in r)} failed")

            bar = Progress(sessions, "sessions", log, unit="session")
            t0 = time.perf_counter()
            threads = [threading.Thread(target=applicant, args=(i,)) for i in range(sessions)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout)
            wall = time.perf_counter() - t0
            bar.close()
            status = procs.command("evaluator", "status", {}, 30)
            memory = {"evaluator": peak_rss_mb(procs.procs["evaluator"].popen.pid),
                      "driver (user, bank and agency for every applicant)": peak_rss_mb(os.getpid())}
        finally:
            procs.stop()
            ctx.term()
    correct = sum(1 for r in results if r and "error" not in r and r["approved"] == r["expected"])
    summary = {"sessions": sessions, "wall_s": round(wall, 2), "correct": correct,
               "failed": [r for r in results if not r or "error" in r],
               "approved": sum(1 for r in results if r and r.get("approved")),
               "peak_rss_mb": memory, "evaluator_status": status,
               "network": network.as_dict() if network is not None else None,
               "latencies_s": {"session (keygen to decision)": [r["session_s"] for r in results if r and "session_s" in r],
                               "FHE run at the evaluator": [r["run_s"] for r in results if r and "run_s" in r]}}
    log(f"{sessions} concurrent sessions: {correct}/{sessions} correct in {wall:.1f} s; peak memory {memory}")
    return summary

