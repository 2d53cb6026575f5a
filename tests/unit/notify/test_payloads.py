"""Each sink's payload has the shape its service documents; the webhook's HMAC verifies."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from promotion.notify import Evidence, Message, SinkSettings, SinkUnavailable, SlackSink, TeamsSink, WebhookSink
from promotion.notify.webhook import verify

SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"


def rollback_message(**kw) -> Message:
    base = dict(
        event="rollback", env="prod", model="fraud-detector", version=6, previous=7,
        title="prod: fraud-detector v7 rolled back to v6", summary="error-rate SLO breached: canary 48% errors",
        severity="danger", facts=(("Rejected", "v7"), ("Serving", "v6")),
        evidence=(Evidence("error-rate SLO", 0.48, 0.05, ">", "error-rate SLO: canary 48.00% vs objective 5.00%"),),
        links=(("Pull request #12", "https://github.com/acme/models/pull/12"),
               ("Workflow run", "https://github.com/acme/models/actions/runs/99"),
               ("Record", "https://github.com/acme/models/blob/main/environments/records/prod/0003.json")))
    base.update(kw)
    return Message(**base)


def test_slack_block_kit_has_sections_context_and_a_text_fallback(monkeypatch):
    monkeypatch.setenv("PROMOTION_NOTIFY_SLACK_URL", SLACK_URL)
    url, body, headers = SlackSink(SinkSettings("slack", "PROMOTION_NOTIFY_SLACK_URL")).request(rollback_message())
    doc = json.loads(body)
    assert url == SLACK_URL and headers["Content-Type"].startswith("application/json")
    assert doc["text"].startswith("prod: fraud-detector v7 rolled back to v6")
    kinds = [b["type"] for b in doc["blocks"]]
    assert kinds[0] == "section" and kinds[-1] == "context" and set(kinds) <= {"section", "context"}
    for block in doc["blocks"]:
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            for text in [block.get("text"), *block.get("fields", [])]:
                if text:
                    assert text["type"] == "mrkdwn" and len(text["text"]) <= 3000
        else:
            assert all(e["type"] == "mrkdwn" for e in block["elements"])
    evidence = next(b["text"]["text"] for b in doc["blocks"] if "Evidence" in b.get("text", {}).get("text", ""))
    assert "48.00% vs objective 5.00%" in evidence
    links = doc["blocks"][-1]["elements"][0]["text"]
    assert "<https://github.com/acme/models/pull/12|Pull request #12>" in links
    assert "actions/runs/99|Workflow run>" in links and "|Record>" in links


def test_slack_text_cannot_inject_links_or_mentions(monkeypatch):
    monkeypatch.setenv("PROMOTION_NOTIFY_SLACK_URL", SLACK_URL)
    msg = rollback_message(summary="<!channel> <https://evil.example|click> & more")
    _, body, _ = SlackSink(SinkSettings("slack", "PROMOTION_NOTIFY_SLACK_URL")).request(msg)
    text = json.dumps(json.loads(body)["blocks"])
    assert "<!channel>" not in text and "<https://evil.example" not in text
    assert "&lt;!channel&gt;" in text and "&amp; more" in text


def test_teams_adaptive_card_envelope(monkeypatch):
    monkeypatch.setenv("PROMOTION_NOTIFY_TEAMS_URL", "https://acme.webhook.office.com/webhookb2/abc/IncomingWebhook/def")
    _, body, _ = TeamsSink(SinkSettings("teams", "PROMOTION_NOTIFY_TEAMS_URL")).request(rollback_message())
    doc = json.loads(body)
    assert doc["type"] == "message" and len(doc["attachments"]) == 1
    att = doc["attachments"][0]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0] == {"type": "TextBlock", "text": "prod: fraud-detector v7 rolled back to v6",
                               "weight": "Bolder", "size": "Medium", "wrap": True, "color": "Attention"}
    assert {"type"} <= set(card["body"][2]) and card["body"][2]["type"] == "FactSet"
    facts = [f for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]]
    assert {"title": "error-rate SLO", "value": "error-rate SLO: canary 48.00% vs objective 5.00%"} in facts
    assert [a["type"] for a in card["actions"]] == ["Action.OpenUrl"] * 3
    assert card["actions"][0]["url"] == "https://github.com/acme/models/pull/12"


def test_webhook_is_json_signed_with_hmac_sha256_over_the_raw_body(monkeypatch):
    secret = "s3cr3t-signing-key-for-tests"
    monkeypatch.setenv("PROMOTION_NOTIFY_WEBHOOK_URL", "https://hooks.example.com/promotion")
    monkeypatch.setenv("PROMOTION_NOTIFY_WEBHOOK_SECRET", secret)
    sink = WebhookSink(SinkSettings("webhook", "PROMOTION_NOTIFY_WEBHOOK_URL", "PROMOTION_NOTIFY_WEBHOOK_SECRET"))
    _, body, headers = sink.request(rollback_message())
    signature = headers["X-Promotion-Signature"]
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, signature)
    assert verify(secret.encode(), body, signature)
    assert not verify(secret.encode(), body + b" ", signature)
    assert not verify(b"another secret", body, signature)
    doc = json.loads(body)
    assert doc["schema"] == "promotion.notification/v1" and doc["event"] == "rollback"
    assert doc["evidence"][0] == {"check": "error-rate SLO", "value": 0.48, "threshold": 0.05, "op": ">",
                                  "text": "error-rate SLO: canary 48.00% vs objective 5.00%"}
    assert doc["links"]["Workflow run"].endswith("/actions/runs/99")
    assert headers["X-Promotion-Event"] == "rollback" and secret not in body.decode()


def test_webhook_without_its_secret_sends_nothing(monkeypatch):
    monkeypatch.setenv("PROMOTION_NOTIFY_WEBHOOK_URL", "https://hooks.example.com/promotion")
    monkeypatch.delenv("PROMOTION_NOTIFY_WEBHOOK_SECRET", raising=False)
    sink = WebhookSink(SinkSettings("webhook", "PROMOTION_NOTIFY_WEBHOOK_URL", "PROMOTION_NOTIFY_WEBHOOK_SECRET"))
    with pytest.raises(SinkUnavailable, match=r"PROMOTION_NOTIFY_WEBHOOK_SECRET .*not set"):
        sink.request(rollback_message())


@pytest.mark.parametrize("value, why", [
    ("", "is not set"),
    ("http://hooks.slack.com/services/T/B/SECRETPATH", "must be https"),
    ("https://user:pw@hooks.example.com/x", "credentials"),
    ("ftp://hooks.example.com/SECRETPATH", "not an https"),
])
def test_an_unusable_url_is_refused_without_quoting_it(monkeypatch, value, why):
    monkeypatch.setenv("PROMOTION_NOTIFY_SLACK_URL", value)
    with pytest.raises(SinkUnavailable) as info:
        SlackSink(SinkSettings("slack", "PROMOTION_NOTIFY_SLACK_URL")).request(rollback_message())
    assert why in str(info.value) and "$PROMOTION_NOTIFY_SLACK_URL" in str(info.value)
    assert "SECRETPATH" not in str(info.value) and "pw" not in str(info.value)
