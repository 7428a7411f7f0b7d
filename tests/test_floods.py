"""No authenticated peer can abort a role by flooding it and hanging up (issue 23): every role, real processes, CURVE
on. (Before libzmq was patched by .ci/pyzmq/build.py, each of these killed the role: BENCHMARKS.md, "Hostile
peers".)"""

import pytest

from bench.floods import runner_role, serving_role, user_role
from protocol.transport import LIBZMQ_PATCH


def test_the_environment_carries_the_patched_libzmq():
    assert LIBZMQ_PATCH == "heartbeat-io-error/1", "pyzmq was not built by .ci/pyzmq/build.py: run .ci/setup.sh"


@pytest.mark.parametrize("role", ["evaluator", "bank", "agency"])
def test_a_serving_role_survives_floods_that_hang_up(role):
    result = serving_role(role, repeats=2, seconds=1.5, log=lambda line: None)
    assert result["messages_sent"] > 10_000, result  # the floods really flooded
    assert result["survived"] == result["floods"] == 2, result
    assert result["answered_after"] == 2, result  # and a legitimate peer is still answered


@pytest.mark.fhe
def test_the_user_survives_a_hostile_bank_that_floods_it_and_hangs_up():
    result = user_role(repeats=1, seconds=1.5, log=lambda line: None)
    assert result["messages_sent"] > 10_000, result
    assert result["survived"] == result["answered_after"] == 1, result


def test_the_runner_survives_a_flood_on_its_control_socket_and_still_runs_the_scenario():
    result = runner_role(repeats=1, seconds=1.5, log=lambda line: None)
    assert result["messages_sent"] > 10_000, result
    assert result["survived"] == 1 and result["answered_after"] == 1, result
    assert result["output_lines_max"] < 200, result  # its refusals of the flood are rate-limited, not one line each
