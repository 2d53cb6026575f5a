"""A small GitHub REST client over ``requests`` that speaks the project's errors.

Honours ``GITHUB_API_URL`` (GitHub Enterprise Server) and ``GITHUB_TOKEN``; follows
``Link: rel="next"`` pagination; every failure (timeout, connection refused, 403, 5xx, a
body that is not the JSON expected) becomes :class:`~promotion.errors.GitHubError` with
the method, path and reason, so a gate that calls GitHub blocks with that reason.

Usage::

    gh = GitHubClient.from_env()
    pr = gh.get("/repos/acme/models/pulls/7")
    reviews = gh.paginate("/repos/acme/models/pulls/7/reviews")
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urljoin, urlsplit

from promotion.errors import GitHubError

DEFAULT_API = "https://api.github.com"
API_VERSION = "2022-11-28"
MAX_PAGES = 50


class NotFound(GitHubError):
    """The API answered 404 (also what GitHub says for "not a member")."""


class GitHubClient:
    """Authenticated calls to one GitHub API base URL."""

    def __init__(self, token: str | None, api_url: str | None = None, timeout: float = 10.0) -> None:
        self.token = token
        self.api_url = (api_url or DEFAULT_API).rstrip("/")
        self.timeout = timeout
        self.calls = 0
        self._session = None

    @classmethod
    def from_env(cls, timeout: float | None = None) -> "GitHubClient":
        t = timeout if timeout is not None else float(os.environ.get("PROMOTION_GITHUB_TIMEOUT", "10"))
        return cls(os.environ.get("GITHUB_TOKEN") or None, os.environ.get("GITHUB_API_URL") or None, t)

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
        self.calls += 1
        try:
            resp = self.session.request(method, url, json=json, params=params, timeout=self.timeout)
        except requests.Timeout:
            raise GitHubError(f"{what}: timed out after {self.timeout:g} s") from None
        except requests.RequestException as exc:
            raise GitHubError(f"{what}: cannot connect ({exc.__class__.__name__})") from None
        if resp.status_code == 404:
            if accept_404:
                return resp
            raise NotFound(f"{what}: 404 not found")
        if resp.status_code >= 300:
            detail = ""
            try:
                detail = str(resp.json().get("message", ""))[:200]
            except Exception:
                detail = resp.text[:200].strip()
            if resp.status_code in (401, 403):
                hint = " (check GITHUB_TOKEN and the workflow's permissions)"
            elif resp.status_code >= 500:
                hint = " (GitHub is failing; re-run the check)"
            else:
                hint = ""
            raise GitHubError(f"{what}: {resp.status_code} {detail}{hint}".rstrip())
        return resp

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
