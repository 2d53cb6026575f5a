"""The controller's tick, through every transition, with real registry, git and records."""

from __future__ import annotations

import json

import pytest

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.config import Project
from promotion.errors import RolloutError
from promotion.records import RecordStore, verify_record
from promotion.rollout import Context, Phase, StateStore, start, tick
from promotion.rollout.controller import run
from promotion.rollout.state import EventLog
from tests.unit.rollout.conftest import Clock, RouterDouble, SimulatedService, files_in_head, git_log

HEALTHY = (0.01, 2.0)


def _setup(repo, registry, behaviour, *, gates=None, per_tick=400):
    reg, digests = registry
    reg.set_alias("fraud-detector", "prod", 1)
    set_model(repo / "environments" / "prod.yaml", 2, digests[2])
    Git(repo).commit("propose prod v2", ["environments/prod.yaml"])
    project = Project(repo)
    env = project.environment("prod")
    policy = project.policy_for(env)
    router, clock = RouterDouble(), Clock()
    router.set_routing({1: 100.0}, {1: digests[1]})
    service = SimulatedService(router, behaviour, per_tick=per_tick, clock=clock)
    store = StateStore(repo, "prod")
    ctx = Context(project=project, env=env, policy=policy, registry=reg, traffic=router, metrics=service,
                  store=store, events=EventLog(store.events_path), clock=clock,
                  gates=gates or (lambda ctx, st: [{"name": "metrics.f1", "gate": "metrics", "value": 0.8,
                                                    "threshold": ">= 0.7", "verdict": "pass", "message": "ok"}]))
    return ctx, router, service, clock


def _tick_until(ctx, st, phases, limit=200):
    for _ in range(limit):
        if st.phase in phases:
            return st
        st = tick(ctx, st)
    raise AssertionError(f"stuck in {st.phase}")


def test_healthy_canary_walks_5_25_100_then_promotes(repo, registry):
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = start(ctx)
    assert st.phase is Phase.PENDING and (st.champion, st.canary) == (1, 2)
    seen = []
    while not st.phase.completed:
        st = tick(ctx, st)
        seen.append((st.phase, router.weights().get(2, 0.0)))
        assert len(seen) < 300
    # traffic moved only through the policy's steps, in order
    canary_weights = [w for _, w in seen]
    assert sorted(set(canary_weights)) == [5.0, 25.0, 100.0]
    assert canary_weights == sorted(canary_weights)
    assert st.phase is Phase.PROMOTED
    assert router.weights() == {2: 100.0}
    reg = ctx.registry
    assert reg.alias("fraud-detector", "prod") == 2 and reg.previous("fraud-detector", "prod") == 1
    record = verify_record(repo / st.record_path if not st.record_path.startswith("/") else st.record_path, repo)
    assert record.action == "promote" and record.version == 2
    assert [s["weight"] for s in record.predicate["steps"]] == [5.0, 25.0, 100.0]
    assert record.predicate["rollback_target"] == 1
    assert git_log(repo)[0] == "promote prod: fraud-detector v2 (was v1)"
    assert any(f.startswith("environments/records/prod/") for f in files_in_head(repo))


def test_error_regression_rolls_back_traffic_first_then_reverts_and_records(repo, registry):
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: (0.30, 2.0)})
    st = start(ctx)
    st = _tick_until(ctx, st, {Phase.ROLLING_BACK})
    # the very tick that decided already put every request back on the champion
    assert router.weights() == {1: 100.0}
    assert st.switch_seconds is not None and st.switch_seconds < 1.0
    assert "error" in st.reason.lower()
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLED_BACK
    env = Project(repo).environment("prod")
    assert env.model.version == 1 and env.model.digest == registry[1][1]
    head = files_in_head(repo)
    assert "environments/prod.yaml" in head and any(f.startswith("environments/records/prod/") for f in head)
    assert git_log(repo)[0].startswith("rollback prod: fraud-detector v2 -> v1")
    record = RecordStore(repo, "prod").latest()
    assert record.action == "rollback" and record.version == 1
    assert record.predicate["evidence"]["rejected"]["version"] == 2
    assert ctx.registry.alias("fraud-detector", "prod") == 1


def test_latency_regression_rolls_back(repo, registry):
    ctx, router, _, _ = _setup(repo, registry, {1: (0.0, 1.0), 2: (0.0, 8.0)})
    st = _tick_until(ctx, start(ctx), {Phase.ROLLING_BACK, Phase.PROMOTED})
    assert st.phase is Phase.ROLLING_BACK and "latency" in st.reason.lower()
    assert router.weights() == {1: 100.0}


def test_no_traffic_is_inconclusive_and_rolls_back_at_the_deadline(repo, registry):
    ctx, router, service, clock = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY}, per_tick=0)
    st = tick(ctx, start(ctx))
    assert st.phase is Phase.PROGRESSING and router.weights()[2] == 5.0
    for _ in range(5):
        st = tick(ctx, st)
        assert st.phase is Phase.PROGRESSING and st.step == 0  # never advances on no data
    clock.advance(ctx.policy.steps[0].max_s)
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLING_BACK and "undecided" in st.reason
    assert router.weights() == {1: 100.0}


def test_metrics_outage_never_advances_and_rolls_back_past_deadline(repo, registry):
    ctx, router, service, clock = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = tick(ctx, start(ctx))
    service.online = False
    st = tick(ctx, st)
    assert st.phase is Phase.PROGRESSING and st.step == 0
    clock.advance(ctx.policy.steps[0].max_s + 1)
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLING_BACK and "cannot measure" in st.reason


def test_gates_blocking_at_rollout_reject_without_moving_traffic(repo, registry):
    blocked = lambda ctx, st: [{"name": "approvals", "gate": "approvals", "value": 0, "threshold": ">= 2",
                                "verdict": "block", "message": "0 of 2 approvals"}]
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY}, gates=blocked)
    st = tick(ctx, start(ctx))
    assert st.phase is Phase.ROLLING_BACK and router.history == [{1: 100.0}]
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLED_BACK
    assert RecordStore(repo, "prod").latest().action == "reject"
    assert Project(repo).environment("prod").model.version == 1


def test_resume_after_every_tick_converges(repo, registry):
    """A fresh controller that loads the saved state after any tick finishes the job."""
    ctx, router, service, clock = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = start(ctx)
    n = 0
    while not st.phase.completed:
        st = tick(ctx, st)
        n += 1
        # a new process: state only from disk
        resumed = start(Context(**{**ctx.__dict__}))
        if resumed is not None:
            same = ("id", "phase", "step", "weight", "champion", "canary", "steps", "record_path")
            assert {k: resumed.to_dict()[k] for k in same} == {k: st.to_dict()[k] for k in same}
            if resumed.phase is Phase.PROGRESSING:
                # traffic re-asserted to the saved step; the step keeps its clock (traffic
                # never left it), the analysis window starts afresh from the resume
                assert router.weights().get(2) == resumed.weight
                assert resumed.step_started_at == st.step_started_at
                assert resumed.last_snapshot["taken_at"] == clock()
            st = resumed
        assert n < 200
    assert st.phase is Phase.PROMOTED and n > 3


def test_resume_restarts_a_step_whose_weights_never_reached_the_service(repo, registry):
    """Killed after saving step 1's intent but before routing it: the step starts over."""
    ctx, router, service, clock = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = tick(ctx, start(ctx))
    assert st.phase is Phase.PROGRESSING and router.weights() == {1: 95.0, 2: 5.0}
    clock.advance(30)
    router.set_routing({1: 100.0}, {1: registry[1][1]})  # what the service serves after such a crash
    resumed = start(Context(**{**ctx.__dict__}))
    assert router.weights() == {1: 95.0, 2: 5.0}
    assert resumed.step_started_at == clock() > st.step_started_at
    assert resumed.step_baseline == resumed.last_snapshot


def test_operator_stop_aborts_and_changes_nothing_more(repo, registry):
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = tick(ctx, start(ctx))
    ctx.store.request_stop("on-call rollback")
    before = list(router.history)
    st = tick(ctx, st)
    assert st.phase is Phase.ABORTED and router.history == before


def test_only_one_rollout_per_environment(repo, registry):
    ctx, _, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    ctx.store.acquire()
    try:
        with pytest.raises(RolloutError, match="already running"):
            run(Context(**{**ctx.__dict__, "store": StateStore(repo, "prod")}))
    finally:
        ctx.store.release()


def _promote_record(repo, version, digest):
    from promotion.records import record_related_paths, write_record

    path = write_record(repo, "prod", action="promote", model="fraud-detector", version=version, digest=digest,
                        from_env="staging", to_env="prod", checks=[], approvers=[], steps=[], rollback_target=None,
                        data_snapshot=None, code_commit=None, policy_digest=None, source_commit=None)
    Git(repo).commit(f"record prod v{version}", [str(p.relative_to(repo)) for p in record_related_paths(repo, "prod")])
    return path


def test_nothing_to_do_when_alias_and_record_already_hold_the_version(repo, registry):
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    ctx.registry.set_alias("fraud-detector", "prod", 2)
    _promote_record(repo, 2, registry[1][2])
    assert start(ctx) is None


def test_an_alias_moved_outside_a_rollout_is_refused_not_taken_as_done(repo, registry):
    """Someone pointed the alias at the desired version without a rollout: "nothing to roll
    out" would leave an unjudged version unrecorded for good."""
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    _promote_record(repo, 1, registry[1][1])
    ctx.registry.set_alias("fraud-detector", "prod", 2)
    with pytest.raises(RolloutError, match="no verified record puts v2"):
        start(ctx)
    assert router.history == [{1: 100.0}] and ctx.store.load() is None


class LaggingProvider:
    """What a Prometheus server gives the controller: each snapshot holds the counts of an
    earlier scrape (``lag`` scrapes old), stamped with that scrape's time; ``now()`` is
    the server's clock. ``frozen`` stops scraping: every answer is the last scrape."""

    def __init__(self, service: SimulatedService, clock: Clock, lag: int = 2) -> None:
        self.service, self.clock, self.lag = service, clock, lag
        self.scrapes = []
        self.frozen = False

    def is_online(self) -> bool:
        return True

    def now(self) -> float:
        return self.clock()

    def snapshot(self):
        if not self.frozen or not self.scrapes:
            self.scrapes.append(self.service.snapshot())
        else:
            self.clock.advance(1.0)
        return self.scrapes[max(0, len(self.scrapes) - 1 - self.lag)]


def test_lagging_metrics_never_mix_the_previous_weight_into_a_step(repo, registry):
    """Counts scraped before a weight change hold traffic at the old split: a window that
    began from them sees a sample-ratio mismatch that is not there. The controller waits
    for a snapshot scraped after the change, and the healthy canary is promoted."""
    ctx, router, service, clock = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY}, per_tick=2000)
    provider = ctx.metrics = LaggingProvider(service, clock, lag=2)
    provider.snapshot(), provider.snapshot()  # the champion alone, scraped before the rollout
    st = start(ctx)
    st = _tick_until(ctx, st, {Phase.PROMOTED, Phase.ROLLING_BACK})
    assert st.phase is Phase.PROMOTED, st.reason
    events = [json.loads(line) for line in ctx.store.events_path.read_text().splitlines()]
    names = [e["event"] for e in events]
    assert names.count("window_pending") == 3 and names.count("window_started") == 3  # one per step
    for step in st.steps:  # each step counted only traffic at its own weight
        share = step["canary_requests"] / (step["canary_requests"] + step["champion_requests"])
        assert abs(share - step["weight"] / 100) < 0.03, step


def test_metrics_that_stop_after_a_weight_change_are_undecided_not_a_verdict(repo, registry):
    ctx, router, service, clock = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    provider = ctx.metrics = LaggingProvider(service, clock, lag=0)
    provider.frozen = True  # Prometheus stopped scraping the service before the canary started
    provider.scrapes.append(service.snapshot())
    clock.advance(15)
    st = tick(ctx, start(ctx))
    assert st.phase is Phase.PROGRESSING and router.weights() == {1: 95.0, 2: 5.0}
    for _ in range(5):
        st = tick(ctx, st)
        assert st.phase is Phase.PROGRESSING and st.step == 0 and st.window_after is not None
    clock.advance(ctx.policy.steps[0].max_s)
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLING_BACK and "no metrics from after the routing change" in st.reason
    assert router.weights() == {1: 100.0}
