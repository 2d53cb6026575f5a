"""Canary analysis: turns measured windows into a verdict, and nothing else.

The controller measures with a :mod:`promotion.metrics` provider, hands each
:class:`~promotion.metrics.base.Window` to :class:`CanaryAnalysis`, and acts on the
:class:`Verdict`::

    from promotion.analysis import AnalysisSettings, CanaryAnalysis, Outcome

    analysis = CanaryAnalysis(AnalysisSettings.from_policy(policy))
    verdict = analysis.observe(window, champion=6, canary=7, canary_weight=5)
    verdict.outcome        # Outcome.PASS | Outcome.FAIL | Outcome.INCONCLUSIVE
    verdict.reasons        # one-line strings
    verdict.evidence       # e-values, thresholds, SLO readings, counts
    analysis.to_dict()     # JSON state; CanaryAnalysis.from_dict() resumes

Every decision is anytime-valid (:mod:`promotion.analysis.sequential`): the policy's
``alpha`` bounds the rate of false rollbacks however often the canary is looked at.
"""

from promotion.analysis.judge import AnalysisSettings, CanaryAnalysis, Outcome, Verdict

__all__ = ["AnalysisSettings", "CanaryAnalysis", "Outcome", "Verdict"]
