"""The years-employed explainability loop: messages (the reference demo's, exactly) and two search strategies.

Both strategies take `run(offset) -> approved`, which runs the encrypted model with the applicant's
years-employed bin moved `offset` bins up (0 = the applicant's own bin), and `bins_above`, how many
bins lie above the applicant's own. They return the same Explanation; `bisect` relies on the model
being monotone in years employed and needs at most ceil(log2(bins)) runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

APPROVED = "Credit card is likely to be approved ✅"
DENIED = "Credit card is likely to be denied ❌"
EXPLAIN_WHEN_APPROVED = ("Explaining the prediction can only be done if the credit card is likely "
                         "to be denied.")
STRATEGIES = ("linear", "bisect")


def is_approved(probabilities) -> bool:
    """The one decision rule (the reference demo's argmax): approved only when p(approved) is strictly
    greater than p(denied); a tie is denied. Every role, model, check and test decides with this."""
    p_denied, p_approved = (float(p) for p in probabilities)
    return p_approved > p_denied


def decision_message(approved: bool) -> str:
    return APPROVED if approved else DENIED


@dataclass(frozen=True)
class Explanation:
    """outcome: approved_at_own_bin | bin_found | no_bin_helps | at_last_bin."""

    outcome: str
    message: str
    bin: str | None
    runs: int
    offsets_tried: tuple[int, ...] = field(default=())



def explanation_for(first_approving: int | None, own: int, bins: Sequence[str], runs: int,
                    tried: Sequence[int], adds_employment: bool = False) -> Explanation:
    """Turn the first approving bin index (or None) into the demo's message; `adds_employment`: the candidates
    were "employed, with at least that bin" for an applicant who is not employed, and the message says so."""
    if first_approving == own:
        return Explanation("approved_at_own_bin", APPROVED, bins[own], runs, tuple(tried))
    if adds_employment and first_approving is not None:
        text = (f"{DENIED} However, being employed, with at least {bins[first_approving]} years of employment, "
                "would increase your chance of having your credit card approved.")
        return Explanation("bin_found", text, bins[first_approving], runs, tuple(tried))
    if adds_employment and own < len(bins) - 1:
        text = (f"{DENIED} Unfortunately, being employed, even with up to {bins[-1]} years of employment, does not "
                "seem to be enough to get an approval based on the given inputs. Other inputs like the income or "
                "the account's age might have bigger impact in this particular case.")
        return Explanation("no_bin_helps", text, None, runs, tuple(tried))
    if first_approving is not None:
        text = (f"{DENIED} However, having at least {bins[first_approving]} years of employment would "
                "increase your chance of having your credit card approved.")
        return Explanation("bin_found", text, bins[first_approving], runs, tuple(tried))
    if own == len(bins) - 1:
        text = (f"{DENIED} Unfortunately, you already have the maximum amount of years of employment "
                f"({bins[own]} years). Other inputs like the income or the account's age might have "
                "a bigger impact in this particular case.")
        return Explanation("at_last_bin", text, None, runs, tuple(tried))
    text = (f"{DENIED} Unfortunately, increasing the number of years of employment up to {bins[-1]} "
            "years does not seem to be enough to get an approval based on the given inputs. Other "
            "inputs like the income or the account's age might have bigger impact in this particular "
            "case.")
    return Explanation("no_bin_helps", text, None, runs, tuple(tried))


def explain_linear(bins: Sequence[str], own: int, run: Callable[[int], bool],
                   adds_employment: bool = False) -> Explanation:
    """The demo's loop: run the own bin, then each higher bin, until the first approval; in the last bin
    already, no encrypted run at all (the demo answers at once)."""
    if own == len(bins) - 1:
        return explanation_for(None, own, bins, 0, [])
    tried = []
    for index in range(own, len(bins)):
        tried.append(index - own)
        if run(index - own):
            return explanation_for(index, own, bins, len(tried), tried, adds_employment)
    return explanation_for(None, own, bins, len(tried), tried, adds_employment)


def explain_bisect(bins: Sequence[str], own: int, run: Callable[[int], bool],
                   own_approved: bool = False, adds_employment: bool = False) -> Explanation:
    """Binary search for the first approving bin above the own bin (known denied when own_approved is False).

    Monotonicity makes "approved at offset k" imply "approved at every offset above k", so the first
    approving bin is found in ceil(log2(len(bins) - own)) runs at most.
    """
    if own_approved:
        return explanation_for(own, own, bins, 0, [])
    lo, hi, tried = own + 1, len(bins), []  # answer in [lo, hi]; hi == len(bins) means "none"
    while lo < hi:
        mid = (lo + hi) // 2
        tried.append(mid - own)
        if run(mid - own):
            hi = mid
        else:
            lo = mid + 1
    return explanation_for(lo if lo < len(bins) else None, own, bins, len(tried), tried, adds_employment)


def max_bisect_runs(n_bins: int) -> int:
    return math.ceil(math.log2(n_bins))
