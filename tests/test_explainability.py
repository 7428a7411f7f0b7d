"""The explainability loop: the demo's messages, and linear and bisect agreeing on every monotone model."""

import itertools

import pytest

from credit_model.explainability import (
    APPROVED, DENIED, explain_bisect, explain_linear, max_bisect_runs,
)
from credit_model.schema import YEARS_EMPLOYED_BINS as BINS


def monotone_models():
    """Every non-decreasing approve/deny pattern over the 6 bins: approved from bin k on (k = 0..6)."""
    for k in range(len(BINS) + 1):
        yield k, [i >= k for i in range(len(BINS))]


@pytest.mark.parametrize("own", range(len(BINS)))
@pytest.mark.parametrize("first, pattern", list(monotone_models()))
def test_linear_and_bisect_agree_and_bisect_is_logarithmic(own, first, pattern):
    calls = {"linear": [], "bisect": []}

    def runner(name):
        def run(offset):
            calls[name].append(offset)
            return pattern[own + offset]
        return run

    linear = explain_linear(BINS, own, runner("linear"))
    bisect = explain_bisect(BINS, own, runner("bisect"), own_approved=pattern[own])
    assert linear.message == bisect.message and linear.outcome == bisect.outcome and linear.bin == bisect.bin
    assert bisect.runs == len(calls["bisect"]) <= max_bisect_runs(len(BINS)) == 3
    assert linear.runs == len(calls["linear"]) <= len(BINS) - own


def test_messages_are_the_demos():
    approve_from = lambda k: (lambda own: (lambda off: own + off >= k))  # noqa: E731
    assert explain_linear(BINS, 2, approve_from(2)(2)).message == APPROVED
    found = explain_linear(BINS, 0, approve_from(3)(0))
    assert found.message == (f"{DENIED} However, having at least 8-11 years of employment would increase "
                             "your chance of having your credit card approved.")
    assert found.runs == 4 and found.offsets_tried == (0, 1, 2, 3)
    none = explain_linear(BINS, 1, approve_from(9)(1))
    assert none.outcome == "no_bin_helps" and "up to 18+ years does not seem to be enough" in none.message
    last = explain_linear(BINS, 5, approve_from(9)(5))
    assert last.outcome == "at_last_bin"
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
