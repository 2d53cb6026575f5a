"""Probation after 100%: the controller keeps judging the promoted version, the champion loaded.

Real registry, git and signed records; the traffic backend and the metrics source are the
in-memory doubles of this folder's conftest (the integration test drives the real router).
"""

from __future__ import annotations

import json
import time

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.config import Project
from promotion.records import RecordStore
from promotion.records.audit import audit
from promotion.rollout import Context, Phase, StateStore, start, tick
from promotion.rollout.state import EventLog
from tests.unit.rollout.conftest import Clock, RouterDouble, SimulatedService, git_log

HEALTHY = (0.01, 2.0)
PROBATION = "  probation: {duration_s: 60}\n"


def _setup(repo, registry, behaviour, *, probation=PROBATION, clock=None):
    reg, digests = registry
    policy = repo / "policies" / "prod.yaml"
    policy.write_text(policy.read_text().replace("  interval_s: 1\n", "  interval_s: 1\n" + probation))
    _merged(repo, "policy: probation after 100%", ["policies/prod.yaml"])
    reg.set_alias("fraud-detector", "prod", 1)
    set_model(repo / "environments" / "prod.yaml", 2, digests[2])
    Git(repo).commit("propose prod v2", ["environments/prod.yaml"])
    router, clock = RouterDouble(), clock or Clock()
    router.set_routing({1: 100.0}, {1: digests[1]})
    service = SimulatedService(router, behaviour, per_tick=400, clock=clock)
    return _context(repo, reg, router, service, clock), router, service


def _merged(repo, message: str, paths: list[str]) -> None:
    """A governance change lands as a merged pull request (the audit accepts nothing else)."""
    git = Git(repo)
    git("checkout", "-q", "-b", "change")
    git.commit(message, paths)
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "-m", "Merge pull request #1 from acme/change", "change")


def _context(repo, reg, router, service, clock):
    project = Project(repo)
    env = project.environment("prod")
    store = StateStore(repo, "prod")
    return Context(project=project, env=env, policy=project.policy_for(env), registry=reg, traffic=router,
                   metrics=service, store=store, events=EventLog(store.events_path), clock=clock,
                   gates=lambda ctx, st: [{"name": "metrics.f1", "gate": "metrics", "value": 0.8,
                                           "threshold": ">= 0.7", "verdict": "pass", "message": "ok"}])


def _until(ctx, st, phases, limit=400):
    for _ in range(limit):
        if st.phase in phases:
            return st
        st = tick(ctx, st)
    raise AssertionError(f"stuck in {st.phase}")


def _events(ctx) -> list[dict]:
    return [json.loads(line) for line in ctx.store.events_path.read_text().splitlines()]


def test_healthy_version_passes_probation_with_a_signed_record_and_the_champion_loaded(repo, registry):
    ctx, router, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = _until(ctx, start(ctx), {Phase.PROBATION, Phase.ROLLED_BACK})
    assert st.phase is Phase.PROBATION
    # promoted: alias and promote record committed; the old champion still loaded at 0%
    assert ctx.registry.alias("fraud-detector", "prod") == 2
    assert git_log(repo)[0] == "promote prod: fraud-detector v2 (was v1)"
    assert router.live.routes == {"1": 0.0, "2": 100.0}
    since = st.probation["since"]
    st = _until(ctx, st, {Phase.PROMOTED, Phase.ROLLED_BACK})
    assert st.phase is Phase.PROMOTED and ctx.clock() - since >= 60
    records = RecordStore(repo, "prod").records()
    assert [r.action for r in records] == ["promote", "probation_passed"]
    passed = records[-1]
    assert passed.version == 2 and passed.predicate["replaced_version"] == 1
    assert passed.predicate["reason"].startswith("probation passed: v2 served 100% for ")
    ev = passed.predicate["evidence"]
    assert ev["rollout_id"] == st.id and ev["probation"]["promote_record"] == records[0].name
    assert ev["probation"]["seconds"] >= 60 and ev["probation"]["windows"] >= 50
    assert passed.predicate["steps"][-1]["step"] == "probation"
    assert git_log(repo)[0] == "probation passed prod: fraud-detector v2 (60s at 100%, was v1)"
    assert st.record_path == str(passed.path)
    # the audit accepts the record; the environment runs v2 by its records (nothing to roll out)
    report = audit(repo, "prod", registry=ctx.registry)
    assert report.ok, [v.text() for v in report.violations]
    assert [e["action"] for e in report.timeline if e["kind"] == "record"] == ["promote", "probation_passed"]
    assert start(_context(repo, ctx.registry, router, ctx.metrics, ctx.clock)) is None


def test_breach_during_probation_rolls_back_with_a_record_naming_the_probation(repo, registry):
    ctx, router, service = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = _until(ctx, start(ctx), {Phase.PROBATION, Phase.ROLLED_BACK})
    assert st.phase is Phase.PROBATION
    service.behaviour[2] = (0.5, 2.0)  # fine during the canary, failing once promoted
    st = _until(ctx, st, {Phase.ROLLING_BACK, Phase.PROMOTED})
    assert st.phase is Phase.ROLLING_BACK
    assert router.weights() == {1: 100.0}  # traffic first, in the tick that decided
    st = _until(ctx, st, {Phase.ROLLED_BACK})
    assert ctx.registry.alias("fraud-detector", "prod") == 1
    assert Project(repo).environment("prod").model.version == 1
    records = RecordStore(repo, "prod").records()
    assert [r.action for r in records] == ["promote", "rollback"]
    rb = records[-1]
    assert rb.version == 1 and rb.predicate["replaced_version"] == 2
    assert rb.predicate["reason"].startswith("probation of v2 failed after "), rb.predicate["reason"]
    assert "error-rate SLO breached" in rb.predicate["reason"]
    probation = rb.predicate["evidence"]["probation"]
    assert probation["promote_record"] == records[0].name and probation["duration_s"] == 60
    assert git_log(repo)[0].startswith("rollback prod: fraud-detector v2 -> v1: probation of v2 failed")
    report = audit(repo, "prod", registry=ctx.registry)
    assert report.ok, [v.text() for v in report.violations]


def test_interrupted_probation_resumes_and_a_saved_start_cannot_shorten_it(repo, registry):
    clock = Clock(time.time())  # the probation's start is checked against the promote record's time
    ctx, router, service = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY},
                                  probation="  probation: {duration_s: 300}\n", clock=clock)
    st = _until(ctx, start(ctx), {Phase.PROBATION, Phase.ROLLED_BACK})
    assert st.phase is Phase.PROBATION
    st = tick(ctx, st)
    # the job ends; the saved state is edited to claim the probation began long ago
    saved = json.loads(ctx.store.path.read_text())
    saved["probation"]["since"] = 0.0
    ctx.store.path.write_text(json.dumps(saved))
    ctx2 = _context(repo, ctx.registry, router, service, clock)
    resumed = start(ctx2)
    assert resumed.phase is Phase.PROBATION and resumed.id == st.id
    assert router.live.routes == {"1": 0.0, "2": 100.0}
    resumed = tick(ctx2, resumed)
    assert resumed.phase is Phase.PROBATION  # not passed on the state's word
    assert resumed.probation["since"] >= time.time() - 60
    assert "resumed" in [e["event"] for e in _events(ctx2)]
    done = _until(ctx2, resumed, {Phase.PROMOTED, Phase.ROLLED_BACK})
    assert done.phase is Phase.PROMOTED
    assert [r.action for r in RecordStore(repo, "prod").records()] == ["promote", "probation_passed"]


def test_operator_abort_during_probation_rolls_back(repo, registry):
    from promotion.rollout.judgement import decide

    ctx, router, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = _until(ctx, start(ctx), {Phase.PROBATION, Phase.ROLLED_BACK})
    decide(ctx.registry, ctx.env, "abort", reason="support tickets about v2", saved=st)
    ctx.judgement_read_at = None
    st = _until(ctx, st, {Phase.ROLLED_BACK, Phase.PROMOTED})
    assert st.phase is Phase.ROLLED_BACK and router.weights() == {1: 100.0}
    rb = RecordStore(repo, "prod").latest()
    assert rb.action == "rollback" and "support tickets about v2" in rb.predicate["reason"]


def test_initial_deployment_has_no_probation(repo, registry):
    reg, digests = registry
    policy = repo / "policies" / "prod.yaml"
    policy.write_text(policy.read_text().replace("  interval_s: 1\n", "  interval_s: 1\n" + PROBATION))
    set_model(repo / "environments" / "prod.yaml", 1, digests[1])
    Git(repo).commit("first", ["policies/prod.yaml", "environments/prod.yaml"])
    router, clock = RouterDouble(), Clock()
    ctx = _context(repo, reg, router, SimulatedService(router, {1: HEALTHY}, clock=clock), clock)
    st = _until(ctx, start(ctx), {Phase.PROMOTED, Phase.PROBATION, Phase.ROLLED_BACK}, limit=20)
    assert st.phase is Phase.PROMOTED
    assert "probation_skipped" in [e["event"] for e in _events(ctx)]


def test_probation_lost_with_its_state_is_reported_not_taken_as_passed(repo, registry):
    """A job on another machine ended mid-probation: nothing here can resume it."""
    import pytest

    from promotion.errors import RolloutError

    ctx, router, service = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = _until(ctx, start(ctx), {Phase.PROBATION, Phase.ROLLED_BACK})
    assert st.phase is Phase.PROBATION
    ctx.store.path.unlink()  # the runner's state is gone with it
    with pytest.raises(RolloutError, match=r"fraud-detector v2 was promoted in prod \(000001-promote-v2.json\) but "
                                           r"its probation \(60.0s\) never finished"):
        start(_context(repo, ctx.registry, router, service, ctx.clock))
    assert RecordStore(repo, "prod").latest().action == "promote"
