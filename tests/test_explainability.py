"""The explainability loop: the demo's messages, and linear and bisect agreeing on every monotone model."""

import itertools

import pytest

from credit_model.explainability import (
    APPROVED, DENIED, explain_bisect, explain_linear, max_bisect_runs,
)
BINS = ("0-2", "2-5", "5-8", "8-11", "11-18", "18+")  # the demo's bins, written out (not read from the code)


def monotone_models():
    """Every non-decreasing approve/deny pattern over the 6 bins: approved from bin k on (k = 0..6)."""
    for k in range(len(BINS) + 1):
        yield k, [i >= k for i in range(len(BINS))]


def denied_cases():
    """(own bin, first approving bin, pattern) for every monotone model and every own bin where the applicant
    is denied: the only case the user role explains (an approved applicant gets NOT_DENIED)."""
    return [(own, first, pattern) for first, pattern in monotone_models() for own in range(len(BINS))
            if not pattern[own]]


@pytest.mark.parametrize("own, first, pattern", denied_cases())
def test_linear_and_bisect_agree_and_bisect_is_logarithmic(own, first, pattern):
    calls = {"linear": [], "bisect": []}

    def runner(name):
        def run(offset):
            calls[name].append(offset)
            return pattern[own + offset]
        return run

    linear = explain_linear(BINS, own, runner("linear"))
    bisect = explain_bisect(BINS, own, runner("bisect"))
    assert linear.message == bisect.message and linear.outcome == bisect.outcome and linear.bin == bisect.bin
    assert bisect.runs == len(calls["bisect"]) <= max_bisect_runs(len(BINS)) == 3
    assert linear.runs == len(calls["linear"]) <= len(BINS) - own
    expected_bin = BINS[first] if first < len(BINS) else None  # from the pattern, not from the code
    assert linear.bin == expected_bin
    assert linear.outcome == ("at_last_bin" if own == len(BINS) - 1 else "bin_found" if expected_bin else "no_bin_helps")
    if own == len(BINS) - 1:
        assert calls["linear"] == [] and calls["bisect"] == []  # the demo makes no encrypted run in the last bin


def test_denied_cases_cover_every_own_bin():
    assert len(denied_cases()) == 21 and {own for own, _, _ in denied_cases()} == set(range(len(BINS)))


def test_messages_are_the_demos():
    approve_from = lambda k: (lambda own: (lambda off: own + off >= k))  # noqa: E731
    assert explain_linear(BINS, 2, approve_from(2)(2)).message == APPROVED
    found = explain_linear(BINS, 0, approve_from(3)(0))
    assert found.message == (f"{DENIED} However, having at least 8-11 years of employment would increase "
                             "your chance of having your credit card approved.")
    assert found.runs == 4 and found.offsets_tried == (0, 1, 2, 3)
    none = explain_linear(BINS, 1, approve_from(9)(1))
    assert none.outcome == "no_bin_helps" and "up to 18+ years does not seem to be enough" in none.message
    last = explain_linear(BINS, 5, lambda offset: pytest.fail("no run expected in the last bin"))
    assert last.outcome == "at_last_bin" and last.runs == 0
    assert "you already have the maximum amount of years of employment (18+ years)" in last.message


def test_bisect_never_runs_for_the_last_bin():
    result = explain_bisect(BINS, 5, lambda offset: pytest.fail("no run expected"))
    assert result.outcome == "at_last_bin" and result.runs == 0


def test_non_monotone_models_make_the_strategies_disagree():
    """Why bisect needs the monotone constraint: without it, it can miss the first approving bin."""
    patterns = [p for p in itertools.product([False, True], repeat=6) if not p[0] and list(p) != sorted(p)]
    disagreements = [p for p in patterns
                     if explain_linear(BINS, 0, lambda off, p=p: p[off]).message
                     != explain_bisect(BINS, 0, lambda off, p=p: p[off]).message]
    assert (False, True, False, False, False, False) in disagreements


def test_an_applicant_who_is_not_employed_is_told_the_candidates_were_employed_ones():
    """Where the data holds no non-employed applicant above the first bin, the agency's candidates for one who is
    not employed are "employed, with at least X years", and the message says so (written out, not read)."""
    found = explain_linear(BINS, 0, lambda offset: offset >= 2, adds_employment=True)
    assert (found.outcome, found.bin) == ("bin_found", "5-8")
    assert found.message == (f"{DENIED} However, being employed, with at least 5-8 years of employment, would "
                             "increase your chance of having your credit card approved.")
    assert explain_bisect(BINS, 0, lambda offset: offset >= 2, adds_employment=True).message == found.message
    none = explain_linear(BINS, 0, lambda offset: False, adds_employment=True)
    assert none.outcome == "no_bin_helps" and "being employed, even with up to 18+ years" in none.message
    plain = explain_linear(BINS, 0, lambda offset: offset >= 2)
    assert "However, having at least 5-8 years of employment" in plain.message
