"""One false-rollback budget for every signal: the policy's ``alpha``, split by Bonferroni.

The canary is rolled back when *any* of its tests rejects, so the probability that a
healthy canary is rolled back is at most the sum of the tests' levels (union bound),
whatever the dependence between them. :func:`alpha_shares` splits the policy's
``alpha`` evenly over the tests that are on: the four of today (errors and latency
against the champion, the error and latency SLOs; :mod:`promotion.analysis.judge` gives
each ``alpha/4`` when nothing else is on) plus one share per extra signal the policy
enables (each label metric, score shift, shadow disagreement, each KPI). A signal judged
per segment spends its one share across its segments with e-BH or Bonferroni
(:mod:`promotion.analysis.segments`), so segments add no budget. The sample-ratio check
keeps its own ``srm_alpha``, as today.

Usage::

    shares = alpha_shares(0.05, ("labels:recall", "score_shift", "kpi:ctr"))
    shares["labels:recall"]     # 0.05 / 7
"""

from __future__ import annotations

from collections.abc import Sequence

BASE_TESTS = ("errors", "latency", "slo_errors", "slo_latency")


def alpha_shares(alpha: float, signals: Sequence[str] = ()) -> dict[str, float]:
    """Each test's level; their sum is ``alpha``."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    names = list(BASE_TESTS) + [str(s) for s in signals]
    if len(set(names)) != len(names):
        raise ValueError(f"signals must be distinct and not one of {', '.join(BASE_TESTS)}")
    each = alpha / len(names)
    return {n: each for n in names}
