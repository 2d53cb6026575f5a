"""Delivery: retried with backoff inside a bounded time; a dead or hung sink never blocks
the caller; failures are one line on stderr and in the job summary, with no secret."""

from __future__ import annotations

import io
import time

from promotion.notify import Message, Notifier, SinkSettings, SlackSink, WebhookSink
from promotion.notify.base import deliver, redact
from tests.support.receiver import Hung, Receiver, dead_url

MSG = Message("rollback", env="prod", title="prod: fraud-detector v7 rolled back to v6", model="fraud-detector")


def test_a_5xx_is_retried_with_backoff_then_delivered():
    with Receiver(statuses=[500, 503]) as rx:
        outcome = deliver(rx.url + "/hook", b"{}", {}, budget_s=5.0, attempts=3)
        assert outcome.ok and outcome.attempts == 3
        gaps = [b.at - a.at for a, b in zip(rx.received, rx.received[1:])]
        assert len(rx.received) == 3 and gaps[0] >= 0.2 and gaps[1] >= 0.6  # 0.25 s, then 0.75 s


def test_a_4xx_is_not_retried_and_a_redirect_is_not_followed():
    with Receiver(statuses=[404]) as rx:
        outcome = deliver(rx.url, b"{}", {}, budget_s=5.0)
        assert not outcome.ok and outcome.error == "HTTP 404" and len(rx.received) == 1
    with Receiver(statuses=[302]) as rx:
        outcome = deliver(rx.url, b"{}", {}, budget_s=5.0)
        assert not outcome.ok and "redirects are not followed" in outcome.error and len(rx.received) == 1


def test_connection_refused_is_tried_three_times_within_the_bound():
    start = time.monotonic()
    outcome = deliver(dead_url(), b"{}", {}, budget_s=2.0, attempts=3)
    assert not outcome.ok and outcome.error == "connection refused" and outcome.attempts == 3
    assert time.monotonic() - start < 2.0


def test_a_hung_sink_costs_at_most_the_budget():
    with Hung() as hung:
        start = time.monotonic()
        outcome = deliver(hung.url, b"{}", {}, budget_s=1.5, attempts=3)
        took = time.monotonic() - start
    assert not outcome.ok and outcome.error.startswith("timed out")
    assert took < 1.5 + 0.3, took


def _notifier(monkeypatch, url: str, budget_s: float = 1.5, kind: str = "slack"):
    monkeypatch.setenv("PROMOTION_NOTIFY_SLACK_URL", url)
    summary, err = [], io.StringIO()
    sink = SlackSink(SinkSettings("slack", "PROMOTION_NOTIFY_SLACK_URL"))
    return Notifier([sink], budget_s=budget_s, summary=summary.append, err=err), summary, err


def test_send_never_blocks_and_close_is_bounded_with_a_hung_sink(monkeypatch):
    with Hung() as hung:
        notifier, summary, err = _notifier(monkeypatch, hung.url)
        start = time.monotonic()
        for _ in range(5):
            notifier.send(MSG)
        assert time.monotonic() - start < 0.05  # the rollout's tick goes on at once
        failures = notifier.close()
        assert time.monotonic() - start < 1.5 + 0.5 + 0.3
    # the first message spends the budget; the rest are not attempted against a sink that is down
    assert hung.connections <= 3
    assert failures and all("notify[0] slack ($PROMOTION_NOTIFY_SLACK_URL)" in f for f in failures)
    lines = err.getvalue().strip().splitlines()
    assert lines and all(line.startswith("warning: notification rollback to notify[0] slack") for line in lines)
    assert "Notifications not delivered" in summary[0]
    assert hung.url not in err.getvalue() and hung.url not in summary[0]


def test_a_dead_sink_is_reported_once_per_message_with_no_url(monkeypatch):
    url = dead_url().replace("/hook", "/services/T000/B000/SECRETSECRET")
    notifier, summary, err = _notifier(monkeypatch, url)
    notifier.send(MSG)
    notifier.send(MSG)
    failures = notifier.close()
    assert len(failures) == 2
    assert "connection refused (3 attempts" in failures[0]
    assert "skipped, the sink failed earlier" in failures[1]
    assert "SECRETSECRET" not in err.getvalue() + "".join(summary)


def test_messages_go_only_to_sinks_that_hear_their_event(monkeypatch):
    with Receiver() as rx:
        monkeypatch.setenv("PROMOTION_NOTIFY_SLACK_URL", rx.url + "/slack")
        monkeypatch.setenv("PROMOTION_NOTIFY_HOOK_URL", rx.url + "/hook")
        monkeypatch.setenv("PROMOTION_NOTIFY_HOOK_SECRET", "k" * 32)
        slack = SlackSink(SinkSettings("slack", "PROMOTION_NOTIFY_SLACK_URL", events=frozenset({"promoted"})))
        hook = WebhookSink(SinkSettings("webhook", "PROMOTION_NOTIFY_HOOK_URL", "PROMOTION_NOTIFY_HOOK_SECRET", index=1))
        notifier = Notifier([slack, hook], summary=lambda _: None)
        notifier.send(MSG)
        assert notifier.close() == []
        assert [r.path for r in rx.received] == ["/hook"]


def test_secret_values_are_redacted(monkeypatch):
    monkeypatch.setenv("PROMOTION_NOTIFY_SLACK_URL", "https://hooks.slack.com/services/T/B/abcdefgh")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "mlflow-token-123456")
    text = redact("sent to https://hooks.slack.com/services/T/B/abcdefgh with mlflow-token-123456")
    assert text == "sent to *** with ***"
