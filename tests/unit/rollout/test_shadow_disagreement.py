"""Shadow mode judged against the disagreement rate the gates measured between the two
versions (``rollout.shadow.disagreement``), with min_agreement as the fallback."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from promotion.analysis.score_shift import judge_disagreement, prediction_disagreement
from promotion.cli import main
from promotion.gates._scoring import Scores
from promotion.gates.base import GateResult
from promotion.records import RecordStore
from promotion.rollout import Phase, start, tick
from promotion.rollout.report import summary_markdown
from tests.unit.rollout.test_strategies import HEALTHY, STEPS, _until, _world

PASS = [{"name": "metrics.f1", "gate": "metrics", "value": 0.8, "threshold": ">= 0.7", "verdict": "pass", "message": "ok"}]


def _shadowed(min_agreement: float | None, tolerance: float | None = 0.02) -> str:
    judged = f", disagreement: {{tolerance: {tolerance}}}" if tolerance is not None else ""
    floor = f", min_agreement: {min_agreement}" if min_agreement is not None else ""
    return STEPS + f"  shadow: {{percent: 50, hold_s: 3, min_requests: 200{floor}{judged}}}\n"


def _gates_measuring(rate: float | None, canary: int = 2, champion: int = 1):
    """The gates as the rollout re-runs them: the drift gate's details carry the rate."""
    def run(ctx, st):
        details = {} if rate is None else {"prediction_disagreement": {"rate": rate, "rows": 5000,
                                                                       "challenger": canary, "champion": champion}}
        ctx.gate_report = SimpleNamespace(results=[GateResult("drift", (), details)])
        return PASS
    return run


def test_disagreement_above_the_gates_rate_rolls_back_although_min_agreement_passes(repo, registry):
    # 10% disagreement; the gates measured 2% between the versions: the shadow does not behave
    # as it did on the gates' rows. min_agreement 0.85 alone would let it through.
    ctx, router, _ = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, _shadowed(0.85), shadow_behaviour={2: (0.90, 0.0)})
    ctx.gates = _gates_measuring(0.02)
    st = _until(ctx, start(ctx), {Phase.ROLLING_BACK, Phase.PROGRESSING})
    assert st.phase is Phase.ROLLING_BACK
    assert all(routes.get(2, 0.0) == 0.0 for routes in router.history)
    m = re.search(r"shadow v2 disagreed with v1 on ([\d.]+)% of (\d+) mirrored requests; the gates measured "
                  r"2\.00% between them \(tolerance 2\.00%; e=[\d.e+]+ >= ([\d.]+)\)", st.reason)
    assert m, st.reason
    assert 6 < float(m.group(1)) < 14
    # the test's share of alpha: 0.05 split over the 4 base tests and this one
    assert float(m.group(3)) == pytest.approx(100.0)
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLED_BACK
    record = RecordStore(repo, "prod").latest()
    judged = record.predicate["evidence"]["shadow"]["disagreement"]
    assert record.action == "rollback" and judged["rejected"] and judged["expected_rate"] == 0.02
    assert judged["e_value"] >= judged["threshold"] == pytest.approx(100.0)
    md = summary_markdown(st)
    assert "| disagreement (observed / expected + tolerance) |" in md and "/ 2.00% + 2.00% |" in md


def test_disagreement_the_gates_predicted_passes_where_min_agreement_would_not(repo, registry):
    # a retrained model the gates saw disagree with the champion on 12% of rows: 10% in shadow
    # is fine, although the default min_agreement (95%) alone would roll it back
    ctx, _, _ = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, _shadowed(None), shadow_behaviour={2: (0.90, 0.0)})
    ctx.gates = _gates_measuring(0.12)
    st = _until(ctx, start(ctx), {Phase.ROLLING_BACK, Phase.PROGRESSING})
    assert st.phase is Phase.PROGRESSING, st.reason
    shadow = st.steps[0]
    assert shadow["verdict"] == "pass" and shadow["shadow_agreement"] < 0.95
    assert shadow["shadow_disagreement"]["expected_rate"] == 0.12 and not shadow["shadow_disagreement"]["rejected"]


def test_a_min_agreement_the_policy_names_stays_a_floor(repo, registry):
    ctx, _, _ = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, _shadowed(0.95), shadow_behaviour={2: (0.90, 0.0)})
    ctx.gates = _gates_measuring(0.12)
    st = _until(ctx, start(ctx), {Phase.ROLLING_BACK, Phase.PROGRESSING})
    assert st.phase is Phase.ROLLING_BACK and "needs 95%" in st.reason and "decides" not in st.reason


def test_without_a_measured_rate_it_says_so_and_min_agreement_decides(repo, registry):
    ctx, _, _ = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, _shadowed(None), shadow_behaviour={2: (0.80, 0.0)})
    ctx.gates = _gates_measuring(None)
    st = _until(ctx, start(ctx), {Phase.ROLLING_BACK, Phase.PROGRESSING})
    assert st.phase is Phase.ROLLING_BACK
    assert "shadow v2 agreed with v1 on" in st.reason and "needs 95%" in st.reason
    assert "the gates measured no disagreement rate between the two versions, so min_agreement decides" in st.reason


def test_a_rate_measured_for_other_versions_is_not_used(repo, registry):
    ctx, _, _ = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, _shadowed(None), shadow_behaviour={2: (0.90, 0.0)})
    ctx.gates = _gates_measuring(0.12, canary=3)
    st = _until(ctx, start(ctx), {Phase.ROLLING_BACK, Phase.PROGRESSING})
    assert st.phase is Phase.ROLLING_BACK and "so min_agreement decides" in st.reason


@pytest.mark.parametrize("given, problem", [
    ("{tolerance: 1.5}", "rollout.shadow.disagreement.tolerance"),
    ("{slack: 0.1}", "rollout.shadow.disagreement"),
])
def test_bad_disagreement_settings_are_one_line_errors(repo, given, problem, capsys):
    path = repo / "policies" / "prod.yaml"
    text = path.read_text()
    start_, end = text.index("rollout:\n"), text.index("\nslo:")
    path.write_text(text[:start_] + "rollout:\n" + STEPS + f"  shadow: {{hold_s: 3, disagreement: {given}}}\n" + text[end:])
    assert main(["--root", str(repo), "validate"]) == 2
    err = capsys.readouterr()
    assert "policies/prod.yaml:" in err.err + err.out and problem in err.err + err.out
    assert "Traceback" not in err.err + err.out


def test_the_disagreement_test_under_the_expected_rate_rarely_rejects_and_catches_a_doubling():
    rng = np.random.default_rng(11)
    alpha, runs = 0.05, 2000

    def rejected(rate):
        hits = 0
        for _ in range(runs):
            k = np.cumsum(rng.random(4000) < rate)  # a look after every 100 mirrored requests
            hits += any(judge_disagreement(k[n - 1], n, 0.05, 0.0, alpha)["rejected"] for n in range(100, 4001, 100))
        return hits / runs

    # A/A: at the predicted rate the false-rollback rate stays under alpha (simulation error ~0.005)
    assert rejected(0.05) <= alpha + 0.01
    assert rejected(0.10) > 0.9
    assert judge_disagreement(3, 100, None, 0.02, alpha)["cannot_decide"]
    assert judge_disagreement(3, 100, 0.99, 0.02, alpha)["cannot_decide"]


def test_prediction_disagreement_compares_decisions_as_the_router_does():
    proba_a = Scores(np.array([0.2, 0.55, 0.7, 0.9]), "probability")
    proba_b = Scores(np.array([0.3, 0.45, 0.8, 0.6]), "probability")
    assert prediction_disagreement(proba_a, proba_b) == {"rate": 0.25, "rows": 4}  # 0.55 vs 0.45 at 0.5
    # each model's own decision_threshold
    assert prediction_disagreement(proba_a, proba_b, (0.75, 0.25)) == {"rate": 0.75, "rows": 4}
    labels = Scores(np.array(["a", "b", "b"], dtype=object), "label")
    assert prediction_disagreement(labels, Scores(np.array(["a", "a", "b"], dtype=object), "label"))["rate"] == \
        pytest.approx(1 / 3, abs=1e-6)
    assert prediction_disagreement(proba_a, Scores(np.array([1.0, 2.0, 3.0, 4.0]), "numeric")) is None
