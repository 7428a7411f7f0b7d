"""Ten applicant sessions in flight at once against one evaluator: every decision right, nothing crossed."""

import pytest

from bench.load import concurrent_sessions


@pytest.mark.fhe
@pytest.mark.slow
def test_ten_concurrent_sessions_get_their_own_correct_decisions(deployment):
    summary = concurrent_sessions(deployment, 10, log=lambda _: None)
    assert summary["failed"] == []
    assert summary["correct"] == 10
    assert 0 < summary["approved"] < 10  # both decisions occur, so a crossed session would show
    assert summary["evaluator_status"]["sessions"] == 10 and summary["evaluator_status"]["keys"] == 10
