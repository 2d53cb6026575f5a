"""Slack incoming webhook: a Block Kit message (``blocks``) with a plain ``text`` fallback.

The webhook URL is the secret (``$PROMOTION_NOTIFY_SLACK_URL`` or any
``PROMOTION_NOTIFY_*`` variable the policy names). Shape, as Slack documents it for
incoming webhooks: ``{"text": ..., "blocks": [section, section (fields), context]}``;
``mrkdwn`` text escapes ``&``, ``<`` and ``>`` so that a model name or a reason cannot
turn into a link or a mention.

Usage::

    sink = SlackSink(SinkSettings("slack", "PROMOTION_NOTIFY_SLACK_URL"))
    url, body, headers = sink.request(message)
"""

from __future__ import annotations

import json

from promotion.notify.base import MAX_TEXT, Message, SinkSettings, url_from_env

ICONS = {"good": ":white_check_mark:", "warning": ":warning:", "danger": ":rotating_light:", "info": ":information_source:"}
MAX_FIELDS = 10  # Slack: at most 10 fields in a section


def escape(text: str) -> str:
    """Slack ``mrkdwn`` control characters escaped (Slack's own rule: &, <, >)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, label: str) -> str:
    # a URL in <url|label> must not contain | or >: those would end the link early
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{escape(label)}>"


class SlackSink:
    """Posts Block Kit JSON to a Slack incoming webhook."""

    kind = "slack"

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings

    def payload(self, m: Message) -> dict:
        """The Block Kit document for ``m``."""
        icon = ICONS.get(m.severity, ICONS["info"])
        blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{escape(m.title)}*"}}]
        if m.summary:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": escape(m.summary)[:MAX_TEXT]}})
        if m.facts:
            blocks.append({"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*{escape(k)}*\n{escape(v)}"[:2000]} for k, v in m.facts[:MAX_FIELDS]]})
        if m.evidence:
            lines = "\n".join(f"• {escape(e.text or f'{e.check}: {e.value} {e.op} {e.threshold}')}" for e in m.evidence)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": ("*Evidence*\n" + lines)[:MAX_TEXT]}})
        if m.links:
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": " · ".join(_link(url, label) for label, url in m.links)}]})
        # the fallback shows in notifications and where blocks cannot be rendered
        return {"text": f"{m.title}" + (f": {m.summary}" if m.summary else ""), "blocks": blocks}

    def request(self, message: Message) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) of the POST to the webhook in ``$url_env``."""
        url = url_from_env(self.settings.url_env)
        body = json.dumps(self.payload(message), sort_keys=True).encode()
        return url, body, {"Content-Type": "application/json; charset=utf-8", "User-Agent": "promotion"}
