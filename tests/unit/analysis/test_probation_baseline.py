"""Labels judged in probation: the promoted version's new labels against the champion's frozen baseline."""

from __future__ import annotations

import numpy as np

from promotion.analysis.bounded import ComparisonState
from promotion.analysis.label_signal import LabelSettings, LabelSignal
from promotion.analysis.labels import ClassifierCounts, LabelTest, compare_labels

TEST = LabelTest("recall", absolute=0.1)
ALPHA = 0.05


def _run(paired: bool, canary_recall_after: float, seed: int = 0, n_after: int = 40) -> bool:
    """Both at recall 0.9 while the canary runs; then only the canary gets labels."""
    rng = np.random.default_rng(seed)
    st, tp_c, fn_c, tp_b, fn_b = ComparisonState.new(), 0, 0, 0, 0
    for _ in range(20):
        hits = rng.binomial(20, 0.9)
        tp_c, fn_c = tp_c + hits, fn_c + 20 - hits
        hits = rng.binomial(60, 0.9)
        tp_b, fn_b = tp_b + hits, fn_b + 60 - hits
        st = compare_labels(st, ClassifierCounts(tp_c, 0, fn_c, 0), ClassifierCounts(tp_b, 0, fn_b, 0), TEST, ALPHA).state
    for _ in range(n_after):
        hits = rng.binomial(50, canary_recall_after)
        tp_c, fn_c = tp_c + hits, fn_c + 50 - hits
        r = compare_labels(st, ClassifierCounts(tp_c, 0, fn_c, 0), ClassifierCounts(tp_b, 0, fn_b, 0), TEST, ALPHA,
                           paired=paired)
        st = r.state
        if r.rejected:
            return True
    return False


def test_paired_comparison_waits_for_champion_labels_so_probation_freezes_the_baseline():
    # the canary's recall falls to 0.5 after promotion: paired, nothing is learnt (no champion labels)
    assert not _run(paired=True, canary_recall_after=0.5)
    assert _run(paired=False, canary_recall_after=0.5)


def test_frozen_baseline_rarely_rolls_back_a_version_as_good_as_the_champion():
    rejected = sum(_run(paired=False, canary_recall_after=0.9, seed=s, n_after=20) for s in range(200))
    assert rejected / 200 <= ALPHA + 0.03, rejected  # at most alpha, within simulation error


def test_label_signal_freeze_is_persisted_and_judges_new_canary_labels():
    from promotion.metrics.base import VersionCounters
    from promotion.metrics.quality import Quality

    def counters(tp, fn):
        return VersionCounters(requests=tp + fn, quality=Quality(outcomes={"": {"tp": tp, "fn": fn, "fp": 0.0, "tn": 0.0}}))

    sig = LabelSignal(LabelSettings("recall", absolute=0.1, min_labels=30), alpha=0.01)
    for _ in range(10):
        assert sig.update(counters(9.0, 1.0), counters(45.0, 5.0)) == []
    sig.freeze_champion()
    sig = LabelSignal(sig.settings, 0.01, state=sig.to_dict())
    assert sig.frozen
    alarms = []
    for _ in range(40):
        alarms = sig.update(counters(10.0, 40.0), VersionCounters())
        if alarms:
            break
    assert alarms and alarms[0].startswith("label recall regressed"), alarms


def test_kpi_signal_freeze_is_persisted_and_judges_the_promoted_versions_new_conversions():
    """After promotion the old champion converts nothing new: frozen, the KPI test goes on
    judging the promoted version against the champion's rate during the canary."""
    from promotion.analysis.kpi_signal import KpiSettings, KpiSignal

    k = KpiSettings("conversion", "conv{version}", "req{version}", tolerance=0.05)
    rng = np.random.default_rng(7)

    def run(frozen: bool) -> list[str]:
        sig = KpiSignal([k], {k.signal: 0.01})
        num = {"canary": 0.0, "champion": 0.0}
        den = {"canary": 0.0, "champion": 0.0}

        def tick(share: dict[str, tuple[int, float]]) -> list[str]:
            for role, (n, p) in share.items():
                num[role] += rng.binomial(n, p)
                den[role] += n
            return sig.update({k.name: {r: (num[r], den[r]) for r in num}})

        tick({"canary": (0, 0.1), "champion": (0, 0.1)})        # the baseline reading
        for _ in range(20):                                     # the canary: both convert at 10%
            assert tick({"canary": (50, 0.10), "champion": (150, 0.10)}) == []
        if frozen:
            sig.freeze_champion()
            sig = KpiSignal([k], {k.signal: 0.01}, state=sig.to_dict())
            assert sig.frozen
        for _ in range(60):                                     # probation: only the new version serves, at 5%
            alarms = tick({"canary": (200, 0.05), "champion": (0, 0.10)})
            if alarms:
                return alarms
        return []

    assert run(frozen=False) == []                              # paired: nothing is learnt after promotion
    alarms = run(frozen=True)
    assert alarms and alarms[0].startswith("kpi conversion regressed: canary 0.0")
