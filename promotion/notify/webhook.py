"""A generic webhook: the message as JSON, signed with HMAC-SHA256.

Headers: ``X-Promotion-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` with the
secret in ``$secret_env`` (a ``PROMOTION_NOTIFY_*SECRET*`` variable), ``X-Promotion-Event``
and ``X-Promotion-Delivery`` (a unique id). The body is :meth:`Message.to_dict`
(``"schema": "promotion.notification/v1"``); its ``at`` field (epoch seconds) lets a
receiver refuse replays. Without the secret nothing is sent: an unsigned message would
teach receivers to accept unsigned ones.

A receiver checks::

    expected = "sha256=" + hmac.new(secret, raw_body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected, request.headers["X-Promotion-Signature"])
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid

from promotion.notify.base import Message, SinkSettings, SinkUnavailable, url_from_env

SIGNATURE_HEADER = "X-Promotion-Signature"


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` (constant-time comparison)."""
    return hmac.compare_digest(sign(secret, body), header or "")


class WebhookSink:
    """Posts signed JSON to any HTTPS endpoint."""

    kind = "webhook"

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings

    def payload(self, m: Message) -> dict:
        return m.to_dict()

    def request(self, message: Message) -> tuple[str, bytes, dict[str, str]]:
        url = url_from_env(self.settings.url_env)
        name = self.settings.secret_env or ""
        secret = os.environ.get(name) or ""
        if not secret:
            raise SinkUnavailable(f"${name} (the signing secret) is not set; nothing is sent unsigned")
        body = json.dumps(self.payload(message), sort_keys=True, separators=(",", ":")).encode()
        return url, body, {"Content-Type": "application/json", "User-Agent": "promotion",
                           SIGNATURE_HEADER: sign(secret.encode(), body),
                           "X-Promotion-Event": message.event, "X-Promotion-Delivery": uuid.uuid4().hex}
