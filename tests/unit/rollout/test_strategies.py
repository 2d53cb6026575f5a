"""Shadow phase, blue-green and the exponential ramp, tick by tick, with real registry,
git and records; the router double records every routing (and its shadow) it is given."""

from __future__ import annotations

import re

import pytest

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.config import Project
from promotion.records import RecordStore, verify_record
from promotion.rollout import Context, Phase, StateStore, start, tick
from promotion.rollout.report import summary_markdown
from promotion.rollout.schedule import steps_for
from promotion.rollout.state import EventLog
from tests.unit.rollout.conftest import Clock, RouterDouble, SimulatedService, git_log

HEALTHY = (0.01, 2.0)
STEPS = """  strategy: steps
  steps:
    - {weight: 5, min_requests: 100, max_s: 60}
    - {weight: 25, min_requests: 100, max_s: 60}
    - {weight: 100, min_requests: 100, max_s: 60}
"""


def _world(repo, registry, behaviour, rollout: str, *, shadow_behaviour=None, per_tick=400):
    """Champion v1 at 100%, environment file proposing v2, the policy's rollout replaced."""
    reg, digests = registry
    reg.set_alias("fraud-detector", "prod", 1)
    policy = repo / "policies" / "prod.yaml"
    text = policy.read_text()
    start_, end = text.index("rollout:\n"), text.index("\nslo:")
    policy.write_text(text[:start_] + "rollout:\n" + rollout + "  interval_s: 1\n  inconclusive: rollback\n" + text[end:])
    set_model(repo / "environments" / "prod.yaml", 2, digests[2])
    Git(repo).commit("propose prod v2", ["environments/prod.yaml", "policies/prod.yaml"])
    project = Project(repo)
    env = project.environment("prod")
    router, clock = RouterDouble(), Clock()
    router.set_routing({1: 100.0}, {1: digests[1]})
    service = SimulatedService(router, behaviour, per_tick=per_tick, clock=clock, shadow_behaviour=shadow_behaviour)
    store = StateStore(repo, "prod")
    ctx = Context(project=project, env=env, policy=project.policy_for(env), registry=reg, traffic=router,
                  metrics=service, store=store, events=EventLog(store.events_path), clock=clock,
                  gates=lambda ctx, st: [{"name": "metrics.f1", "gate": "metrics", "value": 0.8,
                                          "threshold": ">= 0.7", "verdict": "pass", "message": "ok"}])
    return ctx, router, clock


def _until(ctx, st, phases, limit=300):
    for _ in range(limit):
        if st.phase in phases:
            return st
        st = tick(ctx, st)
    raise AssertionError(f"stuck in {st.phase}")


def _record(repo, st):
    return verify_record(st.record_path, repo)


# -- shadow phase ------------------------------------------------------------------------

SHADOWED = STEPS + "  shadow: {percent: 50, hold_s: 3, min_requests: 200, min_agreement: 0.95}\n"


def test_shadow_phase_mirrors_to_the_canary_then_enters_the_first_step(repo, registry):
    ctx, router, clock = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, SHADOWED, shadow_behaviour={2: (0.99, 0.0)})
    st = tick(ctx, start(ctx))
    assert st.phase is Phase.SHADOW
    # every response still comes from the champion; the canary only sees mirrored requests
    assert router.history[-1] == {1: 100.0}
    assert router.shadows[-1] == {"version": 2, "percent": 50, "digest": registry[1][2]}
    began = clock()
    shadow_ticks = 0
    while st.phase is Phase.SHADOW:
        st = tick(ctx, st)
        shadow_ticks += 1
        assert shadow_ticks < 50
    assert st.phase is Phase.PROGRESSING and st.step == 0
    assert clock() - began >= 3  # held for the policy's hold_s
    assert router.history[-1] == {1: 95.0, 2: 5.0} and router.shadows[-1] is None
    shadow = st.steps[0]
    assert shadow["step"] == "shadow" and shadow["verdict"] == "pass"
    assert shadow["shadow_requests"] >= 200 and shadow["shadow_agreement"] >= 0.95 and shadow["shadow_errors"] == 0

    st = _until(ctx, st, {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ROLLING_BACK})
    assert st.phase is Phase.PROMOTED
    record = _record(repo, st)
    assert [s["weight"] for s in record.predicate["steps"]] == [0.0, 5.0, 25.0, 100.0]
    assert record.predicate["steps"][0]["step"] == "shadow"


def test_shadow_disagreement_rolls_back_before_the_canary_serves_anyone(repo, registry):
    ctx, router, _ = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, SHADOWED, shadow_behaviour={2: (0.80, 0.0)})
    st = _until(ctx, start(ctx), {Phase.ROLLING_BACK, Phase.PROGRESSING})
    assert st.phase is Phase.ROLLING_BACK
    assert all(routes.get(2, 0.0) == 0.0 for routes in router.history)
    assert router.history[-1] == {1: 100.0} and router.shadows[-1] is None  # mirroring stopped too
    agreed = float(re.search(r"on ([\d.]+)% of (\d+) mirrored", st.reason).group(1))
    assert "shadow v2 agreed with v1" in st.reason and "needs 95%" in st.reason
    assert 70 < agreed < 90
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLED_BACK
    record = RecordStore(repo, "prod").latest()
    assert record.action == "rollback" and record.version == 1
    assert record.predicate["evidence"]["shadow"]["agreement"] < 0.95
    assert record.predicate["steps"][-1]["verdict"] == "fail"
    assert Project(repo).environment("prod").model.version == 1
    assert git_log(repo)[0].startswith("rollback prod: fraud-detector v2 -> v1: shadow v2 agreed")


def test_a_shadow_that_fails_mirrored_requests_is_rolled_back(repo, registry):
    ctx, router, _ = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, SHADOWED, shadow_behaviour={2: (1.0, 0.2)})
    st = _until(ctx, start(ctx), {Phase.ROLLING_BACK, Phase.PROGRESSING})
    assert st.phase is Phase.ROLLING_BACK
    assert re.search(r"shadow v2 failed \d+ of \d+ mirrored requests", st.reason)
    assert router.history[-1] == {1: 100.0}


def test_no_mirrored_traffic_is_no_data_until_the_deadline(repo, registry):
    rollout = STEPS + "  shadow: {hold_s: 0, min_requests: 0}\n"
    ctx, router, clock = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, rollout, per_tick=0)
    st = tick(ctx, start(ctx))
    for _ in range(5):
        st = tick(ctx, st)
        assert st.phase is Phase.SHADOW  # neither passes nor fails on nothing
    clock.advance(400)
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLING_BACK and "shadow phase undecided" in st.reason
    assert router.history[-1] == {1: 100.0}


# -- blue-green --------------------------------------------------------------------------

BLUE_GREEN = "  strategy: blue_green\n  shadow: {hold_s: 2, min_requests: 100}\n"


def test_blue_green_validates_in_shadow_then_flips_0_to_100(repo, registry):
    ctx, router, _ = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, BLUE_GREEN)
    st = _until(ctx, start(ctx), {Phase.PROMOTED, Phase.ROLLING_BACK, Phase.ROLLED_BACK})
    assert st.phase is Phase.PROMOTED
    # setup, shadow, flip: the canary never serves a partial share
    assert router.history == [{1: 100.0}, {1: 100.0}, {1: 0.0, 2: 100.0}]
    assert [s and s["version"] for s in router.shadows] == [None, 2, None]
    assert [s["weight"] for s in _record(repo, st).predicate["steps"]] == [0.0, 100.0]
    assert ctx.registry.alias("fraud-detector", "prod") == 2
    md = summary_markdown(st)
    assert re.findall(r"^### (.*)$", md, flags=re.M)[:2] == ["Shadow phase: pass", "Step 1: 100%: pass"]
    assert "```mermaid" in md


def test_blue_green_flips_back_at_once_when_the_new_version_fails(repo, registry):
    # the shadow agrees (it only compares labels), but serving, the new version errs
    ctx, router, _ = _world(repo, registry, {1: HEALTHY, 2: (0.30, 2.0)}, BLUE_GREEN)
    st = _until(ctx, start(ctx), {Phase.ROLLING_BACK, Phase.PROMOTED})
    assert st.phase is Phase.ROLLING_BACK
    # the tick that decided flipped every request back in one routing change
    assert router.history[-2:] == [{1: 0.0, 2: 100.0}, {1: 100.0}]
    assert st.switch_seconds is not None and st.switch_seconds < 1.0
    assert "error-rate SLO breached" in st.reason
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLED_BACK and Project(repo).environment("prod").model.version == 1
    assert [s["verdict"] for s in RecordStore(repo, "prod").latest().predicate["steps"]] == ["pass", "fail"]


# -- exponential ramp --------------------------------------------------------------------


@pytest.mark.parametrize("settings, weights", [
    ("{initial: 5, rate: 3, min_requests: 100, max_s: 60}", [5.0, 15.0, 45.0, 100.0]),
    ("{initial: 10, rate: 2, max: 50, min_requests: 100, max_s: 60}", [10.0, 20.0, 40.0, 50.0, 100.0]),
    ("{initial: 1, rate: 10, min_requests: 100, max_s: 60}", [1.0, 10.0, 100.0]),
])
def test_exponential_ramp_walks_initial_times_rate_to_the_power_k(repo, registry, settings, weights):
    ctx, router, _ = _world(repo, registry, {1: HEALTHY, 2: HEALTHY}, f"  strategy: exponential\n  exponential: {settings}\n")
    assert [s.weight for s in steps_for(ctx.policy)] == weights
    st = _until(ctx, start(ctx), {Phase.PROMOTED, Phase.ROLLING_BACK})
    assert st.phase is Phase.PROMOTED
    assert [r.get(2, 0.0) for r in router.history[1:]] == weights
    assert [s["weight"] for s in _record(repo, st).predicate["steps"]] == weights
    assert all(s["canary_requests"] >= 100 for s in st.steps)
