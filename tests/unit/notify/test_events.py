"""Controller events become the messages people act on, with evidence as value vs threshold."""

from __future__ import annotations

from promotion.notify.events import RolloutListener, links, triggered
from promotion.rollout.state import RolloutState


class Collect:
    def __init__(self):
        self.sent = []

    def send(self, m):
        self.sent.append(m)


def state(**kw):
    base = dict(env="prod", model="fraud-detector", canary=8, canary_digest="sha256:" + "8" * 64, champion=7,
                champion_digest="sha256:" + "7" * 64, source_commit=None, policy_digest="sha256:" + "0" * 64)
    base.update(kw)
    return RolloutState(**base)


EVIDENCE = {"slo": {"error_rate": {"e_value": 412.0, "threshold": 40.0, "objective": 0.05, "errors": 31, "requests": 64},
                    "latency_p95": {"e_value": 1.2, "threshold": 40.0, "slower": 1, "observed": 64}},
            "errors_vs_champion": {"e_value": 3.0, "threshold": 40.0}}


def test_only_the_tests_that_fired_are_evidence():
    fired = triggered(EVIDENCE)
    assert [e.check for e in fired] == ["error-rate SLO"]
    assert fired[0].value == 31 / 64 and fired[0].threshold == 0.05
    assert "48.44% over 64 requests vs objective 5.00% (e=412 >= 40)" in fired[0].text


def test_event_mapping(monkeypatch):
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
    monkeypatch.setenv("GITHUB_RUN_ID", "5")
    out = Collect()
    listen = RolloutListener(out)
    st = state()
    for event in ("planned", "routing", "step_started", "observed", "window_started"):
        listen(st, {"event": event, "step": 0, "weight": 5.0})
    st.steps.append({"canary_requests": 40, "canary_error_rate": 0.0, "canary_p95_ms": 3.2})
    listen(st, {"event": "step_passed", "step": 0, "weight": 5.0})
    st.reason, st.evidence, st.switch_seconds, st.record_path = "error-rate SLO breached", EVIDENCE, 0.21, "r.json"
    listen(st, {"event": "rolled_back"})
    assert [m.event for m in out.sent] == ["started", "step_passed", "rollback"]
    assert out.sent[1].title == "prod: fraud-detector v8 step 1 passed at 5%"
    rb = out.sent[2]
    assert rb.title == "prod: fraud-detector v8 rolled back to v7" and ("Traffic switched in", "210 ms") in rb.facts
    assert dict(rb.links) == {"Workflow run": "https://github.com/acme/models/actions/runs/5",
                              "Record": "https://github.com/acme/models/blob/main/r.json"}
    rejected = state(rollback_action="reject", reason="gates block at rollout time: lineage")
    listen(rejected, {"event": "rejected"})
    listen(rejected, {"event": "rolled_back"})
    assert out.sent[-1].event == "rejected" and out.sent[-1].summary.startswith("gates block")
    assert len(out.sent) == 4


def test_a_broken_message_never_breaks_the_tick():
    out = Collect()
    st = state()
    st.steps.append({"canary_requests": "not a number"})
    RolloutListener(out)(st, {"event": "step_passed", "weight": 5})  # formatting fails: dropped, not raised
    assert out.sent == []


def test_links_outside_a_workflow_are_paths_only(monkeypatch):
    for var in ("GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    assert links(pr=3, record="environments/records/prod/1.json") == (("Record", "environments/records/prod/1.json"),)
