"""The tick is total: every failure inside it becomes a one-line reason and a safe state;
a step passes only on traffic served at its own weight; the whole policy is validated
before any traffic moves; a decision is signed once, however often the rollout resumes."""

from __future__ import annotations

import json

import pytest

from promotion.cli import main
from promotion.config import Project
from promotion.errors import ConfigError, RolloutError, ServiceError
from promotion.records import RecordStore, record_files
from promotion.rollout import Context, Phase, StateStore, start, tick
from promotion.rollout.controller import run
from tests.unit.rollout.conftest import RouterDouble
from tests.unit.rollout.test_controller import HEALTHY, _setup, _tick_until


def _events(ctx) -> list[dict]:
    return [json.loads(line) for line in ctx.store.events_path.read_text().splitlines()]


def _set_policy(repo, old: str, new: str) -> None:
    path = repo / "policies" / "prod.yaml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _reload(ctx, repo):
    """The same world with the policy read again from disk (as a new process would)."""
    project = Project(repo)
    env = project.environment("prod")
    fields = {**ctx.__dict__, "project": project, "env": env, "policy": project.policy_for(env)}
    if "settings" in fields:
        fields["settings"] = None  # validated again, from the file
    return Context(**fields)


class FlakyRouter(RouterDouble):
    """Refuses the routing change that gives the canary ``weight`` the first ``times`` times."""

    def __init__(self, weight: float, times: int = 1) -> None:
        super().__init__()
        self.weight, self.times = weight, times

    def set_routing(self, routes, digests, shadow=None):
        if self.times and any(float(w) == self.weight and v == 2 for v, w in routes.items()):
            self.times -= 1
            raise ServiceError("POST http://127.0.0.1:3000/admin/routing: HTTP 503: worker restarting")
        return super().set_routing(routes, digests, shadow)


# -- a step passes only on traffic served at its own weight ------------------------------


def test_a_step_whose_weights_failed_to_apply_restarts_its_window_and_clock_once_they_apply(repo, registry):
    ctx, _, service, clock = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    router = FlakyRouter(25.0)
    router.set_routing({1: 100.0}, {1: registry[1][1]})
    ctx.traffic = service.router = router
    st = _tick_until(ctx, start(ctx), {Phase.PROGRESSING})
    while st.step == 0 and st.phase is Phase.PROGRESSING:
        st = tick(ctx, st)  # step 1 passes; entering step 2 (25%) is refused once
    assert st.phase is Phase.PROGRESSING and st.step == 1
    assert router.weights() == {1: 95.0, 2: 5.0}, "the refused change left 5% in place"
    # nothing of step 1 (its baseline, its clock) is carried into step 2
    assert st.step_baseline is None and st.step_started_at is None
    st = tick(ctx, st)  # applies 25% now; the step's window and clock begin here
    assert router.weights() == {1: 75.0, 2: 25.0} and st.steps[-1]["weight"] == 5.0
    began = st.step_started_at
    assert began == pytest.approx(clock(), abs=1.0)
    st = _tick_until(ctx, st, {Phase.PROMOTED, Phase.ROLLING_BACK, Phase.ROLLED_BACK})
    assert st.phase is Phase.PROMOTED, st.reason
    step2 = st.steps[1]
    assert step2["weight"] == 25.0 and step2["seconds"] >= ctx.policy.steps[1].hold_s
    share = step2["canary_requests"] / (step2["canary_requests"] + step2["champion_requests"])
    assert abs(share - 0.25) < 0.04, step2  # counted at 25%, none of the 5% traffic
    assert "step_restarted" in [e["event"] for e in _events(ctx)]


def test_weights_that_never_apply_leave_the_step_undecided_then_roll_back(repo, registry):
    ctx, _, service, clock = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    router = FlakyRouter(5.0, times=10**6)
    router.set_routing({1: 100.0}, {1: registry[1][1]})
    ctx.traffic = service.router = router
    st = start(ctx)
    for _ in range(3):
        st = tick(ctx, st)
        assert st.phase is Phase.PROGRESSING and st.step == 0 and st.steps == []
        assert router.weights() == {1: 100.0}
    clock.advance(ctx.policy.steps[0].max_s + 1)
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLING_BACK and "cannot measure the canary" in st.reason and "HTTP 503" in st.reason
    assert router.weights() == {1: 100.0}


# -- failures become states --------------------------------------------------------------


def test_a_snapshot_older_than_the_previous_one_is_undecided_not_a_traceback(repo, registry):
    ctx, router, service, clock = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = tick(ctx, start(ctx))
    assert st.phase is Phase.PROGRESSING
    clock.advance(-30)  # the source now answers with counts stamped before the last ones
    st = tick(ctx, st)
    assert st.phase is Phase.PROGRESSING and st.step == 0
    assert "older than the previous" in st.error and "\n" not in st.error
    clock.advance(60)
    st = _tick_until(ctx, st, {Phase.PROMOTED, Phase.ROLLING_BACK})
    assert st.phase is Phase.PROMOTED and st.error is None


class BrokenSource:
    """A metrics provider with a bug: its snapshot is not a Snapshot."""

    def __init__(self, real) -> None:
        self.real = real

    def now(self):
        return self.real.now()

    def is_online(self):
        return True

    def snapshot(self):
        return {"taken_at": 0}


def test_an_unexpected_failure_with_canary_traffic_rolls_back_at_once_with_one_line(repo, registry):
    ctx, router, service, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = tick(ctx, start(ctx))
    assert router.weights() == {1: 95.0, 2: 5.0}
    ctx.metrics = BrokenSource(service)
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLING_BACK and router.weights() == {1: 100.0}
    assert st.reason.startswith("cannot judge the canary: internal error (AttributeError") and "\n" not in st.reason
    event = [e for e in _events(ctx) if e["event"] == "cannot_decide"][-1]
    assert event["kind"] == "AttributeError" and event["where"]
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLED_BACK and RecordStore(repo, "prod").latest().action == "rollback"


def test_a_rollback_whose_switch_fails_switches_first_on_the_next_tick(repo, registry):
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: (0.30, 2.0)})
    st = tick(ctx, start(ctx))
    real = router.set_routing
    calls = {"n": 0}

    def refuse_the_first_rollback(routes, digests, shadow=None):
        if routes == {1: 100.0} and not calls["n"]:
            calls["n"] += 1
            raise ServiceError("POST http://127.0.0.1:3000/admin/routing: timed out")
        return real(routes, digests, shadow)

    router.set_routing = refuse_the_first_rollback
    st = _tick_until(ctx, st, {Phase.ROLLING_BACK})
    assert router.weights() == {1: 95.0, 2: 5.0}, "the switch was refused"
    assert "error" in st.reason.lower()
    st = tick(ctx, st)
    assert st.phase is Phase.ROLLED_BACK and router.weights() == {1: 100.0}
    assert Project(repo).environment("prod").model.version == 1


def test_gates_that_cannot_run_leave_the_rollout_pending_and_the_run_stops_in_one_line(repo, registry):
    from promotion.errors import RegistryError

    def unreachable(ctx, st):
        raise RegistryError("MLflow at http://mlflow.invalid: connection refused")

    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY}, gates=unreachable)
    st = tick(ctx, start(ctx))
    assert st.phase is Phase.PENDING and "connection refused" in st.error and router.history == [{1: 100.0}]
    with pytest.raises(RolloutError, match="prod pending: MLflow at .* connection refused .run the rollout again"):
        run(Context(**{**ctx.__dict__, "store": StateStore(repo, "prod")}), sleep=lambda s: None)
    assert router.history == [{1: 100.0}]


# -- the whole policy before any traffic -------------------------------------------------


@pytest.mark.parametrize("old, new, message", [
    ("  error_rate_max: 0.05\n", "  error_rate_max: 0\n", "slo.error_rate_max: must be > 0"),
    ("  latency_ratio: 1.5 ", "  latency_ratio: .inf ", "analysis.latency_ratio: must be a finite number"),
    ("  alpha: 0.05 ", "  alpha: .nan ", "analysis.alpha: "),
    ("{weight: 25, hold_s: 5, min_requests: 300, max_s: 120}", "{weight: 25, hold_s: 500, min_requests: 300, max_s: 120}",
     "rollout.steps[1].max_s: must be >= hold_s"),
])
def test_an_unusable_policy_is_refused_before_any_traffic_moves(repo, registry, capsys, old, new, message):
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    _set_policy(repo, old, new)
    try:
        ctx = _reload(ctx, repo)
    except ConfigError as exc:  # the schema may refuse it first: the same line, earlier
        assert message in exc.diagnostics()
    else:
        with pytest.raises(ConfigError) as refused:
            start(ctx)
        assert message in refused.value.diagnostics()
        assert refused.value.diagnostics().startswith("policies/prod.yaml:")
        assert ctx.store.load() is None
    assert router.history == [{1: 100.0}]
    # and from the command line: one line, exit 2, no traffic
    assert main(["--root", str(repo), "rollout", "prod"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert router.history == [{1: 100.0}] and not StateStore(repo, "prod").path.exists()


def test_a_policy_made_unusable_under_a_running_canary_rolls_it_back(repo, registry):
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    st = tick(ctx, start(ctx))
    assert router.weights() == {1: 95.0, 2: 5.0}
    _set_policy(repo, "  error_rate_max: 0.05\n", "  error_rate_max: 0\n")
    st = start(_reload(ctx, repo))
    assert st.phase is Phase.ROLLING_BACK and router.weights() == {1: 100.0}
    assert "the policy cannot be used: policies/prod.yaml:" in st.reason


def test_an_exponential_ramp_that_would_never_end_is_refused(repo, registry):
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY})
    path = repo / "policies" / "prod.yaml"
    text = path.read_text()
    begin, end = text.index("rollout:\n"), text.index("\nslo:")
    path.write_text(text[:begin] + "rollout:\n  strategy: exponential\n  exponential: {initial: 0.001, rate: 1.0000001}\n"
                    + text[end:])
    with pytest.raises(ConfigError, match=r"policies/prod.yaml:\d+ rollout.exponential: .*more than 50 steps"):
        start(_reload(ctx, repo))
    assert router.history == [{1: 100.0}]


# -- one record per decision --------------------------------------------------------------


class Crash(BaseException):
    """The process dies here (not an exception anything may catch)."""


def _crash_after_the_record_is_written(ctx, monkeypatch):
    real = StateStore.save

    def save(self, st):
        if st.record_path and not getattr(save, "fired", False):
            save.fired = True
            raise Crash()
        return real(self, st)

    monkeypatch.setattr(StateStore, "save", save)


@pytest.mark.parametrize("behaviour, action", [({1: HEALTHY, 2: HEALTHY}, "promote"),
                                               ({1: HEALTHY, 2: (0.30, 2.0)}, "rollback")])
def test_a_crash_between_the_record_and_the_state_never_signs_the_decision_twice(repo, registry, monkeypatch,
                                                                                    behaviour, action):
    ctx, router, _, _ = _setup(repo, registry, behaviour)
    st = _tick_until(ctx, start(ctx), {Phase.PROMOTING, Phase.ROLLING_BACK})
    before = len(record_files(repo, "prod"))
    _crash_after_the_record_is_written(ctx, monkeypatch)
    with pytest.raises(Crash):
        tick(ctx, st)
    assert len(record_files(repo, "prod")) == before + 1
    saved = StateStore(repo, "prod").load()
    assert saved.record_path is None  # the state never learnt of the record
    resumed = start(Context(**{**ctx.__dict__}))
    final = _tick_until(ctx, resumed, {Phase.PROMOTED, Phase.ROLLED_BACK})
    records = RecordStore(repo, "prod").records()
    assert len(records) == before + 1, [r.name for r in records]
    assert records[-1].action == action and final.record_path.endswith(records[-1].name)
    assert records[-1].predicate["evidence"]["rollout_id"] == final.id
    assert final.commit  # and the commit holds it
