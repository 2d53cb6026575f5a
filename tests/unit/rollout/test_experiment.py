"""The ``experiment`` strategy through the controller's tick, with real registry, git and
records: it holds the split, promotes only on a shown KPI lift, and otherwise ends at
``max_duration_s`` without promoting (champion serves, alias and file unchanged)."""

from __future__ import annotations

import json

import numpy as np

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.config import Project
from promotion.records import verify_record
from promotion.rollout import Context, Phase, StateStore, start, tick
from promotion.rollout.state import EventLog
from tests.unit.rollout.conftest import Clock, RouterDouble, SimulatedService, git_log

HEALTHY = (0.01, 2.0)
POLICY = """apiVersion: promotion/v1
environment: prod
gates:
  lineage: {}
rollout:
  strategy: experiment
  experiment: {weights: {canary: 20}, kpi: conversion, min_effect: 0.05, max_duration_s: 60}
  interval_s: 1
slo: {error_rate_max: 0.05, latency_p95_ms_max: 100, min_requests: 50}
analysis:
  alpha: 0.05
  kpis:
    - {name: conversion, numerator: 'sum(conv{version="{version}"})', denominator: 'sum(req{version="{version}"})',
       direction: higher, tolerance: 0.5}
"""


class Shop(SimulatedService):
    """The simulated service, plus a conversion counter per version read as Prometheus would."""

    def __init__(self, *a, rates: dict[int, float], **kw) -> None:
        super().__init__(*a, **kw)
        self.rates, self.conversions, self.seen = rates, {}, {}
        self.kpi_rng = np.random.default_rng(11)

    def kpi_counts(self, kpis, versions):
        out = {}
        for role, v in versions.items():
            n = float(self.totals.get(v, {}).get("requests", 0))
            new = n - self.seen.get(v, 0.0)
            self.conversions[v] = self.conversions.get(v, 0.0) + float(self.kpi_rng.binomial(int(new), self.rates[v]))
            self.seen[v] = n
            out[role] = (self.conversions[v], n)
        return {k.name: dict(out) for k in kpis}


def setup(repo, registry, metrics_cls, **kw):
    reg, digests = registry
    (repo / "policies" / "prod.yaml").write_text(POLICY)
    Git(repo).commit("experiment policy", ["policies/prod.yaml"])
    reg.set_alias("fraud-detector", "prod", 1)
    set_model(repo / "environments" / "prod.yaml", 2, digests[2])
    Git(repo).commit("propose prod v2", ["environments/prod.yaml"])
    project = Project(repo)
    env = project.environment("prod")
    router, clock = RouterDouble(), Clock()
    router.set_routing({1: 100.0}, {1: digests[1]})
    service = metrics_cls(router, {1: HEALTHY, 2: HEALTHY}, clock=clock, **kw)
    store = StateStore(repo, "prod")
    ctx = Context(project=project, env=env, policy=project.policy_for(env), registry=reg, traffic=router,
                  metrics=service, store=store, events=EventLog(store.events_path), clock=clock,
                  gates=lambda ctx, st: [])
    return ctx, router


def run_to_end(ctx, router):
    st, weights = start(ctx), []
    for _ in range(300):
        if st.phase.completed:
            return st, weights
        st = tick(ctx, st)
        weights.append(router.weights().get(2, 0.0))
    raise AssertionError(f"stuck in {st.phase}")


def test_no_improvement_ends_without_promoting_at_max_duration(repo, registry):
    ctx, router = setup(repo, registry, Shop, rates={1: 0.2, 2: 0.2})
    st, weights = run_to_end(ctx, router)
    assert st.phase is Phase.ROLLED_BACK and set(weights) <= {0.0, 20.0} and 20.0 in weights
    assert router.weights() == {1: 100.0}
    assert ctx.registry.alias("fraud-detector", "prod") == 1
    assert Project(repo).environment("prod").model.version == 1
    record = verify_record(st.record_path, repo)
    assert record.action == "rollback" and record.version == 1 and record.predicate["replaced_version"] == 2
    assert record.predicate["reason"].startswith("experiment ended without showing the improvement: conversion lift")
    ex = record.predicate["evidence"]["experiment"]
    assert ex["outcome"] == "end" and ex["elapsed_s"] >= 60 and ex["lift"]["lower"] <= 0.05
    assert git_log(repo)[0].startswith("rollback prod: fraud-detector v2 -> v1: experiment ended")
    # the job summary and the log line show the experiment
    from promotion.rollout.report import event_line, summary_markdown

    assert "| experiment lift (lower bound) |" in summary_markdown(st) and "| KPI conversion |" in summary_markdown(st)
    ended = [json.loads(line) for line in ctx.store.events_path.read_text().splitlines()
             if '"experiment_ended"' in line]
    assert len(ended) == 1 and event_line(ended[0]).startswith("ENDED     experiment: conversion lift lower bound")


def test_a_shown_improvement_promotes_from_the_split_to_100(repo, registry):
    ctx, router = setup(repo, registry, Shop, rates={1: 0.1, 2: 0.4}, per_tick=800)
    st, weights = run_to_end(ctx, router)
    assert st.phase is Phase.PROMOTED, st.reason
    assert router.weights() == {2: 100.0} and ctx.registry.alias("fraud-detector", "prod") == 2
    record = verify_record(st.record_path, repo)
    assert record.action == "promote" and [s["weight"] for s in record.predicate["steps"]] == [20.0]
    assert record.predicate["steps"][0]["evidence"]["experiment"]["shown"]


def test_a_source_that_cannot_read_kpis_never_promotes(repo, registry):
    ctx, router = setup(repo, registry, SimulatedService)  # no PromQL: the KPI cannot be read
    st, _ = run_to_end(ctx, router)
    assert st.phase is Phase.ROLLED_BACK and router.weights() == {1: 100.0}
    assert "kpi conversion cannot be judged: metrics.source" in st.reason, st.reason
