"""Microsoft Teams: an Adaptive Card (1.4) message, as Teams incoming webhooks and
Workflows ("When a Teams webhook request is received") expect it.

Shape: ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": {"type": "AdaptiveCard",
"version": "1.4", "body": [TextBlock, TextBlock, FactSet, ...], "actions":
[Action.OpenUrl, ...]}}]}``. The webhook URL is the secret.

Usage::

    sink = TeamsSink(SinkSettings("teams", "PROMOTION_NOTIFY_TEAMS_URL"))
    url, body, headers = sink.request(message)
"""

from __future__ import annotations

import json

from promotion.notify.base import MAX_TEXT, Message, SinkSettings, url_from_env

COLOURS = {"good": "Good", "warning": "Warning", "danger": "Attention", "info": "Default"}
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"


def _plain(text: str) -> str:
    # TextBlock renders a Markdown subset: keep brackets from forming a link
    return str(text).replace("[", "(").replace("]", ")")


class TeamsSink:
    """Posts an Adaptive Card to a Teams incoming webhook or Workflows trigger URL."""

    kind = "teams"

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings

    def card(self, m: Message) -> dict:
        """The Adaptive Card for ``m``."""
        body: list[dict] = [{"type": "TextBlock", "text": _plain(m.title), "weight": "Bolder", "size": "Medium",
                             "wrap": True, "color": COLOURS.get(m.severity, "Default")}]
        if m.summary:
            body.append({"type": "TextBlock", "text": _plain(m.summary)[:MAX_TEXT], "wrap": True})
        if m.facts:
            body.append({"type": "FactSet", "facts": [{"title": _plain(k), "value": _plain(v)} for k, v in m.facts]})
        if m.evidence:
            body.append({"type": "TextBlock", "text": "Evidence", "weight": "Bolder", "wrap": True})
            body.append({"type": "FactSet", "facts": [
                {"title": _plain(e.check), "value": _plain(e.text or f"{e.value} {e.op} {e.threshold}")}
                for e in m.evidence]})
        card = {"$schema": SCHEMA, "type": "AdaptiveCard", "version": "1.4", "body": body}
        if m.links:
            card["actions"] = [{"type": "Action.OpenUrl", "title": label, "url": url} for label, url in m.links]
        return card

    def payload(self, m: Message) -> dict:
        """The message envelope Teams expects around the card."""
        return {"type": "message", "attachments": [{"contentType": CARD_TYPE, "contentUrl": None,
                                                    "content": self.card(m)}]}

    def request(self, message: Message) -> tuple[str, bytes, dict[str, str]]:
        url = url_from_env(self.settings.url_env)
        body = json.dumps(self.payload(message), sort_keys=True).encode()
        return url, body, {"Content-Type": "application/json; charset=utf-8", "User-Agent": "promotion"}
