"""The notification contract: one :class:`Message`, one :class:`Sink` protocol, one delivery.

A sink turns a message into the HTTP request its service documents (Slack Block Kit,
a Teams Adaptive Card, a signed JSON document); :func:`deliver` sends it with retries
inside a bounded time. Where a sink sends comes only from the environment (a variable
named ``PROMOTION_NOTIFY_*`` in the policy, set from the organisation's secrets), never
from a file a pull request can edit, and no URL or secret is ever printed: failures name
the sink and its variable, and every line is passed through :func:`redact`.

Usage::

    msg = Message(event="promoted", env="prod", title="prod: fraud-detector v7 promoted", ...)
    url, body, headers = SlackSink.from_settings(settings).request(msg)
    outcome = deliver(url, body, headers, budget_s=5.0, attempts=3)
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

# What a policy may subscribe a sink to; the controller's and commands' events map onto these.
EVENTS = ("gate", "started", "step_passed", "rollback", "promoted", "rejected", "drift")
SEVERITIES = ("good", "warning", "danger", "info")
# A policy can name only these variables: never GITHUB_TOKEN, MLFLOW_TRACKING_TOKEN or an admin token.
URL_ENV_PATTERN = r"^PROMOTION_NOTIFY_(?!.*SECRET)[A-Z0-9_]{1,64}$"
SECRET_ENV_PATTERN = r"^PROMOTION_NOTIFY_[A-Z0-9_]*SECRET[A-Z0-9_]*$"
# variables whose values never appear in a message, a log line or the job summary
_SECRET_NAME = re.compile(r"^PROMOTION_NOTIFY_|TOKEN|SECRET|PASSWORD|PRIVATE_KEY")
MAX_TEXT = 2900  # Slack's section text limit is 3000 characters


class SinkUnavailable(Exception):
    """A sink that cannot send (its variable is unset or not a usable URL); the reason
    names the variable, never its value."""


@dataclass(frozen=True)
class Evidence:
    """One number that triggered (or judged) a decision, against its threshold."""

    check: str
    value: float | str | None
    threshold: float | str | None
    op: str = ">="
    text: str = ""


@dataclass(frozen=True)
class Message:
    """What happened, for people: a title, a summary, facts, evidence and links."""

    event: str
    env: str
    title: str
    summary: str = ""
    severity: str = "info"
    model: str | None = None
    version: int | None = None
    previous: int | None = None
    facts: tuple[tuple[str, str], ...] = ()
    evidence: tuple[Evidence, ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # (label, url): pull request, run, record
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        """The message as the generic webhook sends it (a documented JSON shape)."""
        d = asdict(self)
        d["facts"] = [{"name": k, "value": v} for k, v in self.facts]
        d["links"] = {label: url for label, url in self.links}
        d["evidence"] = [asdict(e) for e in self.evidence]
        d["schema"] = "promotion.notification/v1"
        return d


@dataclass(frozen=True)
class SinkSettings:
    """One validated ``notify[]`` entry of a policy."""

    kind: str
    url_env: str
    secret_env: str | None = None
    events: frozenset[str] = frozenset(EVENTS)
    index: int = 0

    @property
    def name(self) -> str:
        return f"notify[{self.index}] {self.kind} (${self.url_env})"


class Sink(Protocol):
    """A notification service: ``request`` is the HTTP POST its documentation asks for."""

    settings: SinkSettings

    def request(self, message: Message) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) of the POST that delivers ``message``."""


def url_from_env(name: str) -> str:
    """The sink URL in ``$name``: https (plain http only to a loopback host), no credentials.

    Raises :class:`SinkUnavailable` naming the variable; the value is never quoted (for
    Slack and Teams the URL is the secret).
    """
    from urllib.parse import urlsplit

    from promotion.config import is_loopback

    value = (os.environ.get(name) or "").strip()
    if not value:
        raise SinkUnavailable(f"${name} is not set")
    try:
        parts = urlsplit(value)
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise SinkUnavailable(f"${name} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise SinkUnavailable(f"${name} is not an https:// URL")
    if parts.username or parts.password:
        raise SinkUnavailable(f"${name} must not carry credentials in the URL")
    if parts.scheme == "http" and not is_loopback(host):
        raise SinkUnavailable(f"${name} must be https:// (plain http only to a loopback host)")
    return value


def secret_values() -> list[str]:
    """Values of the variables that hold secrets (tokens, keys, sink URLs), longest first."""
    found = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and v and len(v.strip()) >= 8}
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for value in secrets if secrets is not None else secret_values():
        text = text.replace(value, "***")
    return text


@dataclass
class Outcome:
    """How one delivery went: ``ok``, the attempts made, the seconds spent, and why not."""

    ok: bool
    attempts: int
    seconds: float
    error: str = ""


def _retry_after(resp) -> float | None:
    try:
        value = float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def deliver(url: str, body: bytes, headers: dict[str, str], *, budget_s: float = 5.0, attempts: int = 3,
            backoff_s: float = 0.25, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """POST ``body`` to ``url``: up to ``attempts`` tries, all within ``budget_s`` seconds.

    Retried: connection failures, timeouts, 429 and 5xx (after 0.25 s, 0.75 s, ...; a
    ``Retry-After`` that fits in the budget is honoured). Not retried: other 4xx (the
    request is wrong, or the hook was revoked) and redirects, which are not followed (a
    redirect would carry the body to a host nobody configured). The error says what
    failed in words (``connection refused``, ``timed out``, ``HTTP 404``): never the URL.
    """
    import requests

    start = clock()
    error, tries = "", 0
    for tries in range(1, attempts + 1):
        remaining = budget_s - (clock() - start)
        if remaining <= 0.05:
            error = error or "no time left"
            break
        per_try = min(remaining, max(0.5, budget_s / attempts))
        retry_in = backoff_s * (3 ** (tries - 1))
        try:
            resp = requests.post(url, data=body, headers=headers, timeout=(min(per_try, 2.0), per_try),
                                 allow_redirects=False)
        except requests.Timeout:
            error = f"timed out after {per_try:.1f} s"
        except requests.ConnectionError as exc:
            text = str(exc).lower()
            error = "connection refused" if "refused" in text else (
                "name not resolved" if "resolve" in text or "name or service" in text else "cannot connect")
        except requests.RequestException as exc:
            error = f"request failed ({type(exc).__name__})"
        else:
            if 200 <= resp.status_code < 300:
                return Outcome(True, tries, round(clock() - start, 3))
            error = f"HTTP {resp.status_code}"
            if 300 <= resp.status_code < 400:
                error += " (redirects are not followed)"
                break
            if resp.status_code != 429 and resp.status_code < 500:
                break  # the request itself is refused: asking again changes nothing
            retry_in = _retry_after(resp) if _retry_after(resp) is not None else retry_in
        if tries < attempts:
            left = budget_s - (clock() - start)
            if retry_in >= left:
                break
            sleep(retry_in)
    return Outcome(False, tries, round(clock() - start, 3), error)
