"""Notifications: Slack, Microsoft Teams and a signed generic webhook, from the policy's ``notify:``.

One contract (:mod:`promotion.notify.base`: :class:`Message`, the ``Sink`` protocol,
bounded :func:`deliver`), one file per sink, one registry that fails closed (the schema
allows only the kinds listed here), and delivery off the critical path
(:mod:`promotion.notify.dispatch`). What each decision says: :mod:`promotion.notify.events`.

Policy::

    notify:
      - kind: slack
        url_env: PROMOTION_NOTIFY_SLACK_URL          # the variable, never the URL
        events: [rollback, promoted, rejected]
      - kind: webhook
        url_env: PROMOTION_NOTIFY_WEBHOOK_URL
        secret_env: PROMOTION_NOTIFY_WEBHOOK_SECRET  # X-Promotion-Signature: sha256=<HMAC>

Usage::

    from promotion.notify import Notifier, RolloutListener
    notifier = Notifier.from_policy(ctx.policy)
    ctx.listeners.append(RolloutListener(notifier, ctx.project.root))
    ...
    notifier.close()       # waits <= one delivery budget; reports failures to stderr and the job summary
"""

from __future__ import annotations

from promotion.notify.base import EVENTS, Evidence, Message, SinkSettings, SinkUnavailable
from promotion.notify.dispatch import Notifier
from promotion.notify.events import RolloutListener
from promotion.notify.slack import SlackSink
from promotion.notify.teams import TeamsSink
from promotion.notify.webhook import WebhookSink

SINKS = {"slack": SlackSink, "teams": TeamsSink, "webhook": WebhookSink}

__all__ = ["EVENTS", "Evidence", "Message", "Notifier", "RolloutListener", "SINKS", "SinkSettings",
           "SinkUnavailable", "SlackSink", "TeamsSink", "WebhookSink"]
