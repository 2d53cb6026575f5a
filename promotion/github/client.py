"""A small GitHub REST client over ``requests`` that speaks the project's errors.

Honours ``GITHUB_API_URL`` (GitHub Enterprise Server) and ``GITHUB_TOKEN``; follows
``Link: rel="next"`` pagination; every failure (timeout, connection refused, 403, 5xx, a
body that is not the JSON expected) becomes :class:`~promotion.errors.GitHubError` with
the method, path and reason, so a gate that calls GitHub blocks with that reason.

Rate limits are waited out, within a budget: a 403 or 429 that carries
``x-ratelimit-remaining: 0`` (wait until ``x-ratelimit-reset``, epoch seconds) or
``retry-after`` (seconds), or that says "secondary rate limit" (wait a minute, as GitHub
asks), is retried once the wait is over, as long as the client's total wait stays within
``max_wait`` (``$PROMOTION_GITHUB_RATE_LIMIT_WAIT``, 60 s by default). Past that it raises
:class:`RateLimited` naming the reset time. A 403 without those signs is a permission
problem (:class:`Forbidden`). A 422 (or any error carrying GitHub's ``errors[]``) shows
each error's ``resource``, ``field``, ``code`` and ``message``.

Usage::

    gh = GitHubClient.from_env()
    pr = gh.get("/repos/acme/models/pulls/7")
    reviews = gh.paginate("/repos/acme/models/pulls/7/reviews")
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

from promotion.errors import GitHubError, UsageError

DEFAULT_API = "https://api.github.com"
API_VERSION = "2022-11-28"
MAX_PAGES = 50
RATE_LIMIT_WAIT = 60.0   # seconds one client may spend waiting for rate limits, in total
SECONDARY_WAIT = 60.0    # GitHub: without retry-after, wait at least a minute
APP_TOKEN_ENV = "PROMOTION_GITHUB_APP_TOKEN"


class NotFound(GitHubError):
    """The API answered 404 (also what GitHub says for "not a member")."""


class Forbidden(GitHubError):
    """401 or 403 that is not a rate limit: the token may not do this."""


class RateLimited(GitHubError):
    """Still rate limited after the client's wait budget; ``reset_at`` is epoch seconds."""

    def __init__(self, message: str, reset_at: float | None) -> None:
        super().__init__(message)
        self.reset_at = reset_at


def env_seconds(name: str, default: float) -> float:
    """A non-negative finite number of seconds from ``$name``; bad input is a UsageError."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"${name}: must be a number of seconds >= 0, got {raw[:40]!r}")
    return value


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _errors(body: Any) -> str:
    """GitHub's ``errors[]`` (dicts with resource/field/code/message, or strings), one line."""
    items = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        return ""
    out = []
    for item in items[:10]:
        if isinstance(item, dict):
            where = ".".join(str(item[k]) for k in ("resource", "field") if item.get(k))
            code = str(item.get("code") or "")
            text = " ".join(p for p in (where, code if code != "custom" else "") if p)
            if item.get("message"):
                text = f"{text}: {item['message']}" if text else str(item["message"])
            out.append(text or "unspecified")
        else:
            out.append(str(item))
    more = f"; and {len(items) - 10} more" if len(items) > 10 else ""
    return "; ".join(out)[:600] + more


class GitHubClient:
    """Authenticated calls to one GitHub API base URL."""

    def __init__(self, token: str | None, api_url: str | None = None, timeout: float = 10.0, *,
                 token_name: str = "GITHUB_TOKEN", max_wait: float = RATE_LIMIT_WAIT,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        self.token = token
        self.api_url = (api_url or DEFAULT_API).rstrip("/")
        self.timeout = timeout
        self.token_name = token_name
        self.max_wait = max_wait
        self.waited = 0.0
        self.calls = 0
        self._sleep, self._clock = sleep, clock
        self._session = None

    @classmethod
    def from_env(cls, timeout: float | None = None, *, token_env: str = "GITHUB_TOKEN") -> "GitHubClient":
        """A client for ``$GITHUB_API_URL`` with the token in ``$token_env``."""
        t = timeout if timeout is not None else env_seconds("PROMOTION_GITHUB_TIMEOUT", 10.0)
        return cls(os.environ.get(token_env) or None, os.environ.get("GITHUB_API_URL") or None, t,
                   token_name=token_env, max_wait=env_seconds("PROMOTION_GITHUB_RATE_LIMIT_WAIT", RATE_LIMIT_WAIT))

    @classmethod
    def app_from_env(cls) -> "GitHubClient | None":
        """The GitHub App installation token client (``$PROMOTION_GITHUB_APP_TOKEN``), if set.

        ``GITHUB_TOKEN`` cannot read organisation teams; an App installation token with
        organisation *Members: read* can, so team and CODEOWNERS-team checks use this one.
        """
        if not os.environ.get(APP_TOKEN_ENV):
            return None
        return cls.from_env(token_env=APP_TOKEN_ENV)

    @property
    def session(self):
        if self._session is None:
            import requests

            s = requests.Session()
            s.headers["Accept"] = "application/vnd.github+json"
            s.headers["X-GitHub-Api-Version"] = API_VERSION
            s.headers["User-Agent"] = "promotion"
            if self.token:
                s.headers["Authorization"] = f"Bearer {self.token}"
            self._session = s
        return self._session

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            # only follow links that stay on the configured API host
            if urlsplit(path).netloc != urlsplit(self.api_url).netloc:
                raise GitHubError(f"GitHub API: refusing to follow a link off {self.api_url}: {path[:200]}")
            return path
        return urljoin(self.api_url + "/", path.lstrip("/"))

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                accept_404: bool = False):
        """One call; returns the ``requests.Response`` of a 2xx (or a 404 if ``accept_404``)."""
        import requests

        url = self.url(path)
        what = f"GitHub API {method} {urlsplit(url).path}"
        while True:
            self.calls += 1
            try:
                resp = self.session.request(method, url, json=json, params=params, timeout=self.timeout)
            except requests.Timeout:
                raise GitHubError(f"{what}: timed out after {self.timeout:g} s") from None
            except requests.RequestException as exc:
                raise GitHubError(f"{what}: cannot connect ({exc.__class__.__name__})") from None
            if resp.status_code not in (403, 429):
                break
            limit = self._rate_limit(resp)
            if limit is None:
                break
            wait, reset_at, why = limit
            if self.waited + wait > self.max_wait:
                raise RateLimited(f"{what}: {resp.status_code} {why}; resets at {_iso(reset_at)} (in {wait:.0f} s), "
                                  f"past the {self.max_wait:g} s this run waits for rate limits; re-run after that",
                                  reset_at)
            self._sleep(wait)
            self.waited += wait
        if resp.status_code == 404:
            if accept_404:
                return resp
            raise NotFound(f"{what}: 404 not found")
        if resp.status_code >= 300:
            raise self._failure(what, resp)
        return resp

    def _rate_limit(self, resp) -> tuple[float, float, str] | None:
        """(seconds to wait, reset epoch, why) when a 403/429 is a rate limit, else None."""
        now = self._clock()
        h = resp.headers
        message = ""
        try:
            body = resp.json()
            message = str(body.get("message", "")) if isinstance(body, dict) else ""
        except ValueError:
            pass
        retry_after = h.get("retry-after")
        if retry_after is not None:
            try:
                seconds = max(1.0, float(retry_after))
            except ValueError:
                seconds = SECONDARY_WAIT
            if not math.isfinite(seconds):
                seconds = SECONDARY_WAIT
            return seconds, now + seconds, f"rate limited (retry-after {retry_after.strip()[:20]} s)"
        if h.get("x-ratelimit-remaining") == "0":
            try:
                reset = float(h.get("x-ratelimit-reset", ""))
            except ValueError:
                reset = now + SECONDARY_WAIT
            if not math.isfinite(reset):
                reset = now + SECONDARY_WAIT
            resource = h.get("x-ratelimit-resource", "core")
            # one second past the reset: GitHub's clock and ours are not the same clock
            return max(1.0, reset - now + 1), reset, \
                f"rate limit exhausted ({resource}: {h.get('x-ratelimit-used', '?')} of {h.get('x-ratelimit-limit', '?')} used)"
        if "secondary rate limit" in message.lower() or resp.status_code == 429:
            return SECONDARY_WAIT, now + SECONDARY_WAIT, "secondary rate limit"
        return None

    def _failure(self, what: str, resp) -> GitHubError:
        detail, errors = "", ""
        try:
            body = resp.json()
            detail = str(body.get("message", ""))[:200] if isinstance(body, dict) else ""
            errors = _errors(body)
        except ValueError:
            detail = resp.text[:200].strip()
        if errors:
            detail = f"{detail}: {errors}" if detail else errors
        if resp.status_code in (401, 403):
            hint = f" (check {self.token_name} and the workflow's permissions)"
            return Forbidden(f"{what}: {resp.status_code} {detail}{hint}".replace("  ", " "))
        hint = " (GitHub is failing; re-run the check)" if resp.status_code >= 500 else ""
        return GitHubError(f"{what}: {resp.status_code} {detail}{hint}".rstrip())

    def _json(self, resp, what: str):
        try:
            return resp.json()
        except ValueError:
            raise GitHubError(f"{what}: the response is not JSON") from None

    def get(self, path: str, params: dict | None = None) -> Any:
        resp = self.request("GET", path, params=params)
        return self._json(resp, f"GitHub API GET {path}")

    def post(self, path: str, body: dict) -> Any:
        return self._json(self.request("POST", path, json=body), f"GitHub API POST {path}")

    def patch(self, path: str, body: dict) -> Any:
        return self._json(self.request("PATCH", path, json=body), f"GitHub API PATCH {path}")

    def paginate(self, path: str, params: dict | None = None) -> list:
        """Every item of a list endpoint, following ``Link: <...>; rel="next"``."""
        items: list = []
        url: str | None = path
        params = {"per_page": 100, **(params or {})}
        for _ in range(MAX_PAGES):
            resp = self.request("GET", url, params=params)
            page = self._json(resp, f"GitHub API GET {path}")
            if not isinstance(page, list):
                raise GitHubError(f"GitHub API GET {path}: expected a list, got {type(page).__name__}")
            items.extend(page)
            url = resp.links.get("next", {}).get("url")
            params = None  # the next link carries its own query
            if not url:
                return items
        raise GitHubError(f"GitHub API GET {path}: more than {MAX_PAGES} pages")
