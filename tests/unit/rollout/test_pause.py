"""Pause steps and lifecycle hooks in the controller's tick: real registry, git and records."""

from __future__ import annotations

import pytest

from promotion.cli import main
from promotion.config import Project
from promotion.records import RecordStore
from promotion.rollout import Phase, start, tick
from promotion.rollout.judgement import decide
from tests.unit.rollout.test_controller import HEALTHY, _setup

POLICY = """apiVersion: promotion/v1
environment: prod
gates:
  lineage: {{}}
rollout:
  strategy: steps
  steps:
    - {{weight: 25, hold_s: 1, min_requests: 20, max_s: 60}}
    - {{pause: {{max_s: {max_s}}}}}
    - {{weight: 100, hold_s: 1, min_requests: 20, max_s: 60}}
  interval_s: 0.5
  inconclusive: rollback
slo: {{error_rate_max: 0.05, latency_p95_ms_max: 250, min_requests: 20}}
{hooks}"""


def _world(repo, registry, behaviour=None, *, max_s=600, hooks=""):
    (repo / "policies" / "prod.yaml").write_text(POLICY.format(max_s=max_s, hooks=hooks))
    return _setup(repo, registry, behaviour or {1: HEALTHY, 2: HEALTHY})


def _until(ctx, st, done, limit=300):
    for _ in range(limit):
        if done(st):
            return st
        st = tick(ctx, st)
    raise AssertionError(f"stuck in {st.phase} step {st.step}")


def _paused(ctx, st):
    return _until(ctx, st, lambda s: s.paused_since is not None or s.phase.completed)


def test_pause_holds_the_weights_until_resumed_and_the_record_names_who_and_why(repo, registry, monkeypatch):
    ctx, router, _, _ = _world(repo, registry)
    st = _paused(ctx, start(ctx))
    assert st.phase is Phase.PROGRESSING and router.weights() == {1: 75.0, 2: 25.0}
    for _ in range(20):  # held, and still analysed
        st = tick(ctx, st)
    assert st.paused_since is not None and router.weights() == {1: 75.0, 2: 25.0}
    assert any(e["event"] == "observed" and e["step"] == 1 for e in _events(ctx))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_ACTOR", "release-manager")
    decide(ctx.registry, ctx.env, "resume", reason="load test looked fine", saved=st)
    st = _until(ctx, st, lambda s: s.phase.completed)
    assert st.phase is Phase.PROMOTED
    record = RecordStore(repo, "prod").latest()
    assert record.action == "promote"
    [given] = record.predicate["interventions"]
    assert (given["action"], given["actor"], given["reason"]) == ("resume", "release-manager", "load test looked fine")
    assert [s.get("verdict") for s in record.predicate["steps"]] == ["pass", "resumed", "pass"]


def test_abort_while_paused_rolls_back_with_who_and_why(repo, registry):
    ctx, router, _, _ = _world(repo, registry)
    st = _paused(ctx, start(ctx))
    decide(ctx.registry, ctx.env, "abort", reason="marketing freeze", saved=st)
    st = _until(ctx, st, lambda s: s.phase.completed)
    assert st.phase is Phase.ROLLED_BACK and router.weights() == {1: 100.0}
    record = RecordStore(repo, "prod").latest()
    assert record.action == "rollback" and "aborted by" in record.predicate["reason"]
    assert record.predicate["interventions"][0]["reason"] == "marketing freeze"


def test_a_pause_undecided_past_max_s_rolls_back(repo, registry):
    ctx, router, _, clock = _world(repo, registry, max_s=5)
    st = _until(ctx, _paused(ctx, start(ctx)), lambda s: s.phase.completed)
    assert st.phase is Phase.ROLLED_BACK and "with no decision (max_s 5)" in st.reason
    assert router.weights() == {1: 100.0}


def test_a_canary_that_fails_while_paused_is_still_rolled_back(repo, registry):
    ctx, router, service, _ = _world(repo, registry)
    st = _paused(ctx, start(ctx))
    service.behaviour[2] = (0.5, 2.0)  # it breaks during the pause
    st = _until(ctx, st, lambda s: s.phase.completed)
    assert st.phase is Phase.ROLLED_BACK and st.reason.startswith("while paused:")


def test_a_resume_for_another_pause_or_rollout_does_nothing(repo, registry):
    ctx, router, _, _ = _world(repo, registry)
    st = _paused(ctx, start(ctx))
    import json
    ctx.registry.set_tag("fraud-detector", 2, "promotion.judgement.prod", json.dumps(
        {"action": "resume", "rollout": "someone-else", "step": st.step, "reason": "x", "actor": "mallory"}))
    for _ in range(10):
        st = tick(ctx, st)
    assert st.paused_since is not None and router.weights() == {1: 75.0, 2: 25.0}


def test_resume_refuses_when_nothing_is_paused(repo, registry, capsys):
    ctx, _, _, _ = _world(repo, registry)
    st = start(ctx)
    st = tick(ctx, st)  # at 25%, not paused yet
    assert main(["--root", str(repo), "resume", "prod", "--reason", "go"]) == 1
    assert "is not paused" in capsys.readouterr().err
    assert main(["--root", str(repo), "resume", "prod"]) == 2  # --reason is required


FAILING_SMOKE = """hooks:
  pre_rollout:
    - {name: smoke, timeout_s: 5, command: [sh, -c, "echo canary answered 500; exit 1"]}
"""


def test_a_failing_pre_rollout_hook_rejects_before_any_user_traffic_moves(repo, registry):
    ctx, router, _, _ = _world(repo, registry, hooks=FAILING_SMOKE)
    st = _until(ctx, start(ctx), lambda s: s.phase.completed)
    assert st.phase is Phase.ROLLED_BACK
    # the canary was loaded at 0% for the smoke test, never given a share of users
    assert all(h.get(2, 0.0) == 0.0 for h in router.history) and router.weights() == {1: 100.0}
    record = RecordStore(repo, "prod").latest()
    assert record.action == "reject" and "pre_rollout hook 'smoke' failed" in record.predicate["reason"]
    [hook] = record.predicate["hooks"]
    assert hook["verdict"] == "fail" and hook["exit_code"] == 1 and hook["output_sha256"].startswith("sha256:")
    assert Project(repo).environment("prod").model.version == 1


def test_a_failing_post_promotion_hook_rolls_back(repo, registry):
    hooks = "hooks:\n  post_promotion:\n    - {name: check, timeout_s: 5, command: [sh, -c, 'exit 4']}\n"
    ctx, router, _, _ = _world(repo, registry, hooks=hooks)
    st = _paused(ctx, start(ctx))
    decide(ctx.registry, ctx.env, "resume", reason="ok", saved=st)
    st = _until(ctx, st, lambda s: s.phase.completed)
    assert st.phase is Phase.ROLLED_BACK and "post_promotion hook 'check' failed" in st.reason
    assert router.weights() == {1: 100.0}
    assert RecordStore(repo, "prod").latest().predicate["hooks"][0]["exit_code"] == 4


def _events(ctx):
    import json
    return [json.loads(line) for line in ctx.store.events_path.read_text().splitlines()]


@pytest.mark.parametrize("step, problem", [
    ("{pause: {max_s: 0}}", "must be > 0"),
    ("{pause: {wait: 3}}", "unknown field(s): wait"),
])
def test_bad_pause_steps_are_one_line_errors(repo, step, problem, capsys):
    text = POLICY.format(max_s=5, hooks="").replace("{pause: {max_s: 5}}", step)
    (repo / "policies" / "prod.yaml").write_text(text)
    assert main(["--root", str(repo), "validate"]) == 2
    err = capsys.readouterr()
    assert "policies/prod.yaml:9 rollout.steps[1].pause" in err.err + err.out and problem in err.err + err.out
