"""An oversized frame never ends a link for good (issue 23.2): the runner refuses to send a COMMAND a role would
drop its link for, and a peer link that libzmq ended (a frame over MAXMSGSIZE) is rebuilt for the next request."""

import threading

import pytest
import zmq

from protocol.errors import ErrorCode, PeerLost, ProtocolError
from protocol.messages import Ping, Pong, decode, encode
from protocol.transport import MAX_FRAME_BYTES, PeerClient, TrafficLog, make_socket, routing_identity


def test_the_runner_refuses_a_command_over_the_limit_and_the_role_keeps_its_link(start_roles, alice):
    procs = start_roles(("evaluator", "user", "bank", "agency"))
    huge = dict(alice["user"], Occupation_type="x" * (2 << 20))  # a 2 MB value from a form field
    with pytest.raises(ProtocolError) as refused:
        procs.command("user", "prepare", {"session_id": "a-1", "key_id": "alice", "features": huge}, 30)
    assert refused.value.code is ErrorCode.TOO_LARGE and "not sent" in refused.value.reason
    result = procs.command("user", "prepare", {"session_id": "a-1", "key_id": "alice", "features": alice["user"]}, 30)
    assert result["bytes"] > 0  # the same role, on the same control link, still works
    assert procs.procs["user"].popen.poll() is None


def test_a_peer_link_ended_by_an_oversized_reply_is_rebuilt_for_the_next_request():
    ctx = zmq.Context()
    server = make_socket(ctx, zmq.ROUTER)
    server.bind("tcp://127.0.0.1:0")
    endpoint = server.getsockopt_string(zmq.LAST_ENDPOINT)
    replies = [[b"x" * (MAX_FRAME_BYTES + 1024)], None]  # first an oversized frame, then a proper PONG
    seen = []

    def serve():
        for reply in replies:
            if not server.poll(20_000):
                return
            identity, *frames = server.recv_multipart()
            seen.append(identity)
            packet = decode(frames)
            server.send_multipart([identity] + (reply or encode(Pong("bank"), packet.seq)))
    thread = threading.Thread(target=serve)
    thread.start()
    client = PeerClient(ctx, "bank", endpoint, routing_identity("user"), TrafficLog("user"), liveness=2.0)
    try:
        with pytest.raises(PeerLost):  # libzmq refused the frame and ended the connection (no reconnect, ever)
            client.request(Ping(), 10)
        assert isinstance(client.request(Ping(), 10).message, Pong)
    finally:
        thread.join(30)
        client.close()
        server.close(linger=0)
        ctx.term()
    assert len(seen) == 2 and seen[0] != seen[1]  # the second request came on a new connection


def test_a_message_of_many_tiny_frames_is_refused_and_its_memory_given_back(start_roles):
    """23.8: libzmq holds a multipart message until its last frame (no bound can stop that, SPEC §2); once it is
    refused, the memory it took goes back to the system instead of staying with the evaluator for good."""
    from bench.hostile import many_frames
    procs = start_roles(("evaluator",), transport="tcp")
    figures = many_frames(procs, 400_000, 1)
    assert figures["refused_with"] == "TOO_LARGE", figures
    assert figures["rss_growth_mb"] > 30, figures  # it really held the frames
    assert figures["rss_3s_after_mb"] < figures["rss_before_mb"] + 15, figures
    assert figures["other_pings_answered"].split("/")[0] == figures["other_pings_answered"].split("/")[1], figures
