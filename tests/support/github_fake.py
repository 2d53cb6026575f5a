"""A loopback fake of the parts of GitHub's REST API the project calls: the one GitHub fake.

It returns what GitHub returns, including the inconvenient parts, so that the code's
filters run against them:

- the issues list includes pull requests (each with a ``pull_request`` key), and issue
  and pull request numbers share one sequence;
- a PENDING review is visible only to its author (the token's user, here
  ``github-actions[bot]``), so others' pending reviews never show;
- the collaborator permission endpoint reports the legacy base role: ``maintain`` as
  ``permission: write`` and ``triage`` as ``read``, the real role in ``role_name``;
- lists paginate with ``per_page``/``page`` and a ``Link`` header with ``prev``,
  ``next``, ``last`` and ``first`` as GitHub formats it, the request's query kept;
- every response carries ``x-ratelimit-limit``, ``-remaining``, ``-used``, ``-reset``
  (epoch seconds) and ``-resource``; an exhausted token gets 403 with remaining 0
  (:meth:`GitHubFake.exhaust`), a secondary limit 403 with ``retry-after``
  (:meth:`GitHubFake.secondary_limit`);
- the repository token cannot read organisation teams (404 on teams and memberships, as
  ``GITHUB_TOKEN`` gets); ``app_token`` (a GitHub App installation token with organisation
  Members: read) can, and gets 403 "Resource not accessible by integration" on the
  repository's pull requests;
- ``GET /pulls/{n}/commits`` lists each commit's ``author``/``committer`` logins;
- rulesets: ``GET .../rulesets`` includes organisation rulesets unless
  ``includes_parents=false``; a ruleset read back carries the parameters GitHub fills in
  (``allowed_merge_methods``, ``do_not_enforce_on_create``); branch protection likewise;
- validation failures answer 422 with ``errors[]``;
- deployments (``POST/GET .../deployments``, ``GET .../deployments/{id}``, ``POST/GET
  .../deployments/{id}/statuses``) as GitHub documents them: 201 on create; ``environment``
  defaults to ``production`` and ``production_environment`` to whether it is
  ``production``; ``required_contexts`` omitted means every commit status context of the
  ref must be success (409 otherwise, :meth:`GitHubFake.add_commit_status`);
  ``auto_merge`` (default true) on a ref behind the default branch answers 202 with
  GitHub's "Auto-merged" message and no deployment (:meth:`GitHubFake.mark_behind`);
  lists are newest first; a ``success`` status with ``auto_inactive`` (default true) makes
  earlier successful non-transient, non-production deployments of the environment
  ``inactive``; a token without ``deployments: write`` gets 403
  (``deployments_writable = False``).

Every request is recorded so tests can assert on what was sent. Failures are injected
per path: a status code (403, 500, ...), headers, or a delay (for timeouts).

Usage::

    with GitHubFake() as gh:
        gh.add_pull(7, author="alice", head_sha="a" * 40)
        gh.add_review(7, "bob", "APPROVED", commit_id="a" * 40)
        os.environ["GITHUB_API_URL"] = gh.url
        ...
        assert gh.requests[-1].path == "/repos/acme/models/pulls/7/reviews"
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

DOCS = "https://docs.github.com/rest"
ACTIONS_APP_ID = 15368  # the GitHub Actions app: the source of workflow check runs
RULE_DEFAULTS = {
    "pull_request": {"required_approving_review_count": 0, "dismiss_stale_reviews_on_push": False,
                     "require_code_owner_review": False, "require_last_push_approval": False,
                     "required_review_thread_resolution": False, "allowed_merge_methods": ["merge", "squash", "rebase"]},
    "required_status_checks": {"strict_required_status_checks_policy": False, "do_not_enforce_on_create": False,
                               "required_status_checks": []},
}
RULE_TYPES = {"creation", "update", "deletion", "required_linear_history", "required_signatures", "non_fast_forward",
              "pull_request", "required_status_checks", "required_deployments", "merge_queue"}


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict
    body: object


@dataclass
class Fault:
    status: int | None = None
    delay: float = 0.0
    times: int | None = None  # None: always
    body: str | None = None
    headers: dict = field(default_factory=dict)


def user(login: str, kind: str | None = None) -> dict:
    kind = kind or ("Bot" if login.endswith("[bot]") else "User")
    return {"login": login, "id": abs(hash(login)) % 10**8, "type": kind,
            "url": f"https://api.github.com/users/{login}", "site_admin": False}


@dataclass
class FakeRepo:
    owner: str = "acme"
    name: str = "models"
    pulls: dict = field(default_factory=dict)
    reviews: dict = field(default_factory=dict)
    commits: dict = field(default_factory=dict)         # pull number -> commits, oldest first
    comments: dict = field(default_factory=dict)
    collaborators: dict = field(default_factory=dict)   # login -> role (admin, maintain, write, triage, read)
    files: dict = field(default_factory=dict)           # (ref, path) -> text
    issues: dict = field(default_factory=dict)          # number -> issue (pull requests excluded)
    rulesets: dict = field(default_factory=dict)        # id -> ruleset (this repository's and its org's)
    protection: dict = field(default_factory=dict)      # branch -> classic branch protection
    deployments: dict = field(default_factory=dict)     # id -> deployment
    deployment_statuses: dict = field(default_factory=dict)  # deployment id -> statuses, oldest first
    commit_statuses: dict = field(default_factory=dict)  # ref or sha -> {context: state}
    behind: set = field(default_factory=set)            # refs behind the default branch (auto_merge merges them)
    default_branch: str = "main"


class GitHubFake:
    """The fake server; ``url`` is the API base to put in ``GITHUB_API_URL``."""

    def __init__(self, owner: str = "acme", name: str = "models", token: str = "test-token", per_page_max: int = 100,
                 app_token: str = "app-token", token_user: str = "github-actions[bot]"):
        self.repo = FakeRepo(owner, name)
        self.teams: dict[tuple[str, str], dict[str, str]] = {}  # (org, slug) -> {login: state}
        self.token, self.app_token, self.token_user = token, app_token, token_user
        self.per_page_max = per_page_max
        self.requests: list[Request] = []
        self.faults: dict[str, Fault] = {}
        # per token: GITHUB_TOKEN has 1,000 requests an hour per repository, an App 5,000
        self.limits = {token: {"limit": 1000, "used": 0, "reset": int(time.time()) + 3600},
                       app_token: {"limit": 5000, "used": 0, "reset": int(time.time()) + 3600}}
        self._ids = iter(range(1000, 10**9))
        self.deployments_writable = True  # the job's token has `deployments: write`
        self._tick = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False  # keep-alive handler threads must not hold up shutdown
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> "GitHubFake":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- state -----------------------------------------------------------------------

    @property
    def full_name(self) -> str:
        return f"{self.repo.owner}/{self.repo.name}"

    def _next_number(self) -> int:
        return max([*self.repo.pulls, *self.repo.issues], default=0) + 1

    def add_pull(self, number: int | None = None, *, author: str = "alice", head_sha: str = "a" * 40,
                 base: str = "main", head_ref: str = "promote/prod-v2", author_type: str | None = None,
                 labels: list[str] | None = None) -> dict:
        """An open pull request whose one commit (``head_sha``) ``author`` made and pushed."""
        number = number if number is not None else self._next_number()
        pr = {
            "id": next(self._ids), "number": number, "state": "open", "title": f"PR {number}", "body": None,
            "user": user(author, author_type), "draft": False, "labels": [{"name": n} for n in labels or []],
            "head": {"ref": head_ref, "sha": head_sha, "label": f"{self.repo.owner}:{head_ref}"},
            "base": {"ref": base, "sha": "b" * 40, "label": f"{self.repo.owner}:{base}"},
            "html_url": f"https://github.com/{self.full_name}/pull/{number}",
            "merged": False, "merge_commit_sha": None, "merged_at": None, "commits": 0,
        }
        self.repo.pulls[number] = pr
        self.repo.reviews.setdefault(number, [])
        self.repo.comments.setdefault(number, [])
        self.repo.commits[number] = []
        self.add_commit(number, head_sha, author=author)
        return pr

    def add_commit(self, number: int, sha: str, *, author: str | None = "alice", committer: str | None = None,
                   head: bool = True) -> dict:
        """A commit on the pull request (the new head unless ``head=False``).

        ``author``/``committer`` are GitHub logins, or None for an e-mail GitHub cannot
        map to an account (``author: null`` in the API, as GitHub answers).
        """
        committer = author if committer is None else committer

        def person(login):
            return {"name": login or "someone", "email": f"{login or 'someone'}@example.com", "date": "2026-01-01T00:00:00Z"}

        commit = {"sha": sha, "node_id": "C_x", "html_url": f"https://github.com/{self.full_name}/commit/{sha}",
                  "commit": {"author": person(author), "committer": person(committer), "message": "change"},
                  "author": user(author) if author else None, "committer": user(committer) if committer else None,
                  "parents": []}
        self.repo.commits[number].append(commit)
        self.repo.pulls[number]["commits"] = len(self.repo.commits[number])
        if head:
            self.repo.pulls[number]["head"]["sha"] = sha
        return commit

    def set_head(self, number: int, sha: str, author: str | None = None, committer: str | None = None) -> None:
        """A new push to the pull request (by its author unless told otherwise)."""
        self.add_commit(number, sha, author=author or self.repo.pulls[number]["user"]["login"], committer=committer)

    def merge(self, number: int, merge_sha: str) -> None:
        """Mark the pull request merged as ``merge_sha`` (what a push event then carries)."""
        pr = self.repo.pulls[number]
        pr.update({"state": "closed", "merged": True, "merge_commit_sha": merge_sha,
                   "merged_at": "2026-01-01T00:00:00Z"})

    def add_review(self, number: int, login: str, state: str, *, commit_id: str | None = None,
                   user_type: str | None = None) -> dict:
        reviews = self.repo.reviews[number]
        review = {
            "id": next(self._ids), "node_id": "R_x", "user": user(login, user_type), "body": "",
            "state": state, "commit_id": commit_id or self.repo.pulls[number]["head"]["sha"],
            "html_url": f"https://github.com/{self.full_name}/pull/{number}#pullrequestreview-1",
            "pull_request_url": f"{self.url}/repos/{self.full_name}/pulls/{number}",
            "author_association": "MEMBER",
            "submitted_at": f"2026-01-01T00:{len(reviews) // 60:02d}:{len(reviews) % 60:02d}Z",
        }
        if state == "PENDING":
            del review["submitted_at"]
        reviews.append(review)
        return review

    def dismiss(self, number: int, review_id: int) -> None:
        """What "Dismiss a review" does: the review itself becomes DISMISSED."""
        for r in self.repo.reviews[number]:
            if r["id"] == review_id:
                r["state"] = "DISMISSED"

    def add_comment(self, number: int, login: str, body: str) -> dict:
        c = {"id": next(self._ids), "body": body, "user": user(login),
             "html_url": f"https://github.com/{self.full_name}/pull/{number}#issuecomment-1"}
        self.repo.comments[number].append(c)
        return c

    def add_issue(self, title: str, body: str = "", labels: list[str] | None = None,
                  author: str = "github-actions[bot]") -> dict:
        """An open issue; numbers are shared with pull requests, as on GitHub."""
        number = self._next_number()
        issue = {"id": next(self._ids), "number": number, "title": title, "body": body, "state": "open",
                 "state_reason": None, "user": user(author), "labels": [{"name": n} for n in labels or []],
                 "html_url": f"https://github.com/{self.full_name}/issues/{number}"}
        self.repo.issues[number] = issue
        self.repo.comments.setdefault(number, [])
        return issue

    def add_collaborator(self, login: str, permission: str = "write") -> None:
        """``permission`` is the role: admin, maintain, write, triage or read."""
        self.repo.collaborators[login.lower()] = permission

    def add_team(self, org: str, slug: str) -> None:
        self.teams.setdefault((org, slug), {})

    def add_team_member(self, org: str, slug: str, login: str, state: str = "active") -> None:
        self.teams.setdefault((org, slug), {})[login.lower()] = state

    def add_file(self, path: str, text: str, ref: str = "main") -> None:
        self.repo.files[(ref, path)] = text

    def add_ruleset(self, body: dict, *, organization: bool = False) -> dict:
        """A ruleset as if made in GitHub's settings (``organization``: the org's, applying here)."""
        rid = next(self._ids)
        self.repo.rulesets[rid] = self._ruleset(rid, body, organization)
        return self.repo.rulesets[rid]

    def add_commit_status(self, ref: str, context: str, state: str) -> None:
        """A commit status (``success``, ``failure``, ``pending``...) on ``ref``."""
        self.repo.commit_statuses.setdefault(ref, {})[context] = state

    def mark_behind(self, ref: str) -> None:
        """``ref`` is behind the default branch: a deployment with auto_merge merges instead."""
        self.repo.behind.add(ref)

    def deployment_states(self, deployment_id: int) -> list[str]:
        """The states of a deployment's statuses, oldest first."""
        return [x["state"] for x in self.repo.deployment_statuses.get(deployment_id, [])]

    def fail(self, path_regex: str, status: int | None = None, delay: float = 0.0, times: int | None = None,
             body: str | None = None, headers: dict | None = None) -> None:
        """Make requests whose path matches ``path_regex`` fail or stall."""
        self.faults[path_regex] = Fault(status, delay, times, body, dict(headers or {}))

    def exhaust(self, token: str | None = None, reset_in: float = 3600) -> None:
        """Use up ``token``'s primary rate limit; it refills ``reset_in`` seconds from now."""
        bucket = self.limits[token or self.token]
        bucket.update(used=bucket["limit"], reset=int(time.time() + reset_in))

    def secondary_limit(self, path_regex: str = ".", retry_after: int | None = 1, times: int = 1,
                        status: int = 403) -> None:
        """The next ``times`` matching requests hit a secondary rate limit."""
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        self.fail(path_regex, status=status, times=times, headers=headers, body=json.dumps({
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}))

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    # -- HTTP ------------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                fake._serve(self, "GET")

            def do_POST(self):
                fake._serve(self, "POST")

            def do_PATCH(self):
                fake._serve(self, "PATCH")

            def do_PUT(self):
                fake._serve(self, "PUT")

        return Handler

    def _rate_headers(self, token: str | None) -> dict:
        bucket = self.limits.get(token)
        if bucket is None:  # unauthenticated: 60 an hour
            return {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59", "x-ratelimit-used": "1",
                    "x-ratelimit-reset": str(int(time.time()) + 3600), "x-ratelimit-resource": "core"}
        return {"x-ratelimit-limit": str(bucket["limit"]),
                "x-ratelimit-remaining": str(max(0, bucket["limit"] - bucket["used"])),
                "x-ratelimit-used": str(bucket["used"]), "x-ratelimit-reset": str(bucket["reset"]),
                "x-ratelimit-resource": "core"}

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        req = Request(method, parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}, dict(h.headers), body)
        auth = h.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        with self._lock:
            self.requests.append(req)
            bucket = self.limits.get(token)
            exhausted = False
            if bucket is not None:
                if time.time() >= bucket["reset"]:
                    bucket.update(used=0, reset=int(time.time()) + 3600)
                exhausted = bucket["used"] >= bucket["limit"]
                if not exhausted:
                    bucket["used"] += 1
        rate = self._rate_headers(token)
        for pattern, fault in list(self.faults.items()):
            if re.search(pattern, parts.path) and (fault.times is None or fault.times > 0):
                if fault.times is not None:
                    fault.times -= 1
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.status:
                    return self._send(h, fault.status, fault.body if fault.body is not None
                                      else {"message": "injected failure", "documentation_url": DOCS},
                                      {**rate, **fault.headers})
        if token not in (self.token, self.app_token):
            return self._send(h, 401, {"message": "Bad credentials", "documentation_url": DOCS}, rate)
        if exhausted:
            return self._send(h, 403, {"message": "API rate limit exceeded for installation ID 4242.",
                                       "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api"}, rate)
        status, payload, headers = self._route(method, parts.path, req, token)
        self._send(h, status, payload, {**rate, **headers})

    def _send(self, h, status: int, payload, headers: dict | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else (b"" if payload is None else json.dumps(payload).encode())
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to tell it

    def _page(self, path: str, items: list, query: dict):
        per_page = max(1, min(int(query.get("per_page", 30)), self.per_page_max))
        page = max(1, int(query.get("page", 1)))
        chunk = items[(page - 1) * per_page: page * per_page]
        last = max(1, -(-len(items) // per_page))

        def link(n: int, rel: str) -> str:
            return f'<{self.url}{path}?{urlencode({**query, "per_page": per_page, "page": n})}>; rel="{rel}"'

        links = []  # GitHub's order: prev, next, last, first
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})

    # -- routes ----------------------------------------------------------------------

    def _route(self, method: str, path: str, req: Request, token: str):
        not_found = (404, {"message": "Not Found", "documentation_url": DOCS}, {})
        r = self.repo
        if (mm := re.fullmatch(r"/orgs/([^/]+)/teams/([^/]+)(/memberships/([^/]+))?", path)) and method == "GET":
            # GITHUB_TOKEN cannot see organisation teams: GitHub answers 404, as for "not a member"
            team = self.teams.get((mm.group(1), mm.group(2)))
            if token != self.app_token or team is None:
                return not_found
            if mm.group(3) is None:
                return 200, {"id": abs(hash(mm.group(2))) % 10**6, "name": mm.group(2), "slug": mm.group(2),
                             "privacy": "closed", "permission": "pull", "parent": None,
                             "url": f"{self.url}/orgs/{mm.group(1)}/teams/{mm.group(2)}",
                             "members_count": len(team), "organization": {"login": mm.group(1)}}, {}
            state = team.get(mm.group(4).lower())
            if state is None:
                return not_found
            return 200, {"url": f"{self.url}{path}", "role": "member", "state": state}, {}
        m = re.fullmatch(rf"/repos/{r.owner}/{r.name}(/.*)?", path)
        if m is None:
            return not_found
        sub = m.group(1) or ""
        if sub == "" and method == "GET":
            return 200, {"full_name": self.full_name, "name": r.name, "owner": {"login": r.owner, "type": "Organization"},
                         "default_branch": r.default_branch, "private": True}, {}
        if token == self.app_token:
            # the App's token was asked for organisation Members: read only
            return 403, {"message": "Resource not accessible by integration", "documentation_url": DOCS}, {}
        if (mm := re.fullmatch(r"/pulls/(\d+)", sub)) and method == "GET":
            pr = r.pulls.get(int(mm.group(1)))
            return (200, pr, {}) if pr else not_found
        if (mm := re.fullmatch(r"/pulls/(\d+)/reviews", sub)) and method == "GET":
            n = int(mm.group(1))
            if n not in r.pulls:
                return not_found
            # a PENDING review is its author's draft: nobody else sees it
            seen = [x for x in r.reviews[n] if x["state"] != "PENDING" or x["user"]["login"] == self.token_user]
            return self._page(path, seen, req.query)
        if (mm := re.fullmatch(r"/pulls/(\d+)/commits", sub)) and method == "GET":
            n = int(mm.group(1))
            return self._page(path, r.commits[n][:250], req.query) if n in r.pulls else not_found
        if sub == "/issues" and method == "GET":
            return self._list_issues(path, req.query)
        if sub == "/issues" and method == "POST":
            body = req.body if isinstance(req.body, dict) else {}
            if not body.get("title"):
                return 422, {"message": "Validation Failed", "documentation_url": DOCS,
                             "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}]}, {}
            issue = self.add_issue(body["title"], body.get("body") or "", body.get("labels"))
            return 201, issue, {}
        if (mm := re.fullmatch(r"/issues/(\d+)", sub)) and method in ("GET", "PATCH"):
            n = int(mm.group(1))
            target = r.issues.get(n) or r.pulls.get(n)
            if target is None:
                return not_found
            if method == "PATCH":
                for key in ("title", "body", "state", "state_reason"):
                    if key in req.body:
                        target[key] = req.body[key]
            return 200, self._as_issue(target) if n in r.pulls else target, {}
        if (mm := re.fullmatch(r"/issues/(\d+)/comments", sub)):
            n = int(mm.group(1))
            if n not in r.pulls and n not in r.issues:
                return not_found
            if method == "GET":
                return self._page(path, r.comments[n], req.query)
            if method == "POST":
                c = self.add_comment(n, self.token_user, req.body["body"])
                return 201, c, {}
        if (mm := re.fullmatch(r"/issues/comments/(\d+)", sub)) and method == "PATCH":
            for comments in r.comments.values():
                for c in comments:
                    if c["id"] == int(mm.group(1)):
                        c["body"] = req.body["body"]
                        return 200, c, {}
            return not_found
        if (mm := re.fullmatch(r"/collaborators/([^/]+)/permission", sub)) and method == "GET":
            login = mm.group(1)
            role = r.collaborators.get(login.lower(), "none")
            # the legacy base role: maintain reads as write, triage as read
            legacy = {"maintain": "write", "triage": "read"}.get(role, role)
            return 200, {"permission": legacy, "role_name": role,
                         "user": {**user(login), "role_name": role}}, {}
        if (mm := re.fullmatch(r"/contents/(.+)", sub)) and method == "GET":
            text = r.files.get((req.query.get("ref", r.default_branch), mm.group(1)))
            if text is None:
                return not_found
            return 200, {"type": "file", "encoding": "base64", "name": mm.group(1).rsplit("/", 1)[-1],
                         "path": mm.group(1), "content": base64.encodebytes(text.encode()).decode()}, {}
        if (mm := re.fullmatch(r"/commits/([0-9a-f]{7,40})/pulls", sub)) and method == "GET":
            # "List pull requests associated with a commit": merged PRs whose merge commit it is
            sha = mm.group(1)
            found = [p for p in r.pulls.values() if str(p.get("merge_commit_sha") or "").startswith(sha)
                     or p["head"]["sha"].startswith(sha)]
            return self._page(path, found, req.query)
        if sub == "/pulls" and method == "POST":
            number = self._next_number()
            pr = self.add_pull(number, author="promotion-bot", head_ref=req.body["head"], base=req.body["base"])
            pr["title"], pr["body"] = req.body["title"], req.body.get("body")
            return 201, pr, {}
        if sub.startswith("/rulesets"):
            return self._rulesets(method, path, sub, req) or not_found
        if (mm := re.fullmatch(r"/branches/([^/]+)/protection", sub)):
            return self._protection(method, mm.group(1), req) or not_found
        if sub.startswith("/deployments"):
            return self._deployments(method, path, sub, req) or not_found
        return not_found

    def _as_issue(self, pr: dict) -> dict:
        """A pull request as the issues API shows it."""
        n = pr["number"]
        return {"id": pr["id"], "number": n, "title": pr["title"], "body": pr.get("body"), "state": pr["state"],
                "state_reason": None, "user": pr["user"], "labels": pr.get("labels", []), "html_url": pr["html_url"],
                "pull_request": {"url": f"{self.url}/repos/{self.full_name}/pulls/{n}", "html_url": pr["html_url"],
                                 "diff_url": pr["html_url"] + ".diff", "patch_url": pr["html_url"] + ".patch",
                                 "merged_at": pr.get("merged_at")}}

    def _list_issues(self, path: str, query: dict):
        state, labels = query.get("state", "open"), [x for x in query.get("labels", "").split(",") if x]
        everything = [*self.repo.issues.values(), *(self._as_issue(p) for p in self.repo.pulls.values())]
        found = [i for i in everything if (state == "all" or i["state"] == state)
                 and all(any(lb["name"] == want for lb in i["labels"]) for want in labels)]
        found.sort(key=lambda i: i["number"], reverse=True)  # sort=created, direction=desc
        return self._page(path, found, query)

    # -- rulesets and branch protection ----------------------------------------------

    def _ruleset(self, rid: int, body: dict, organization: bool) -> dict:
        rules = []
        for rule in body.get("rules") or []:
            rule = copy.deepcopy(rule)
            if rule.get("type") in RULE_DEFAULTS:  # GitHub reads back every parameter, defaults included
                rule["parameters"] = {**copy.deepcopy(RULE_DEFAULTS[rule["type"]]), **(rule.get("parameters") or {})}
            rules.append(rule)
        return {"id": rid, "name": body.get("name"), "target": body.get("target", "branch"),
                "source_type": "Organization" if organization else "Repository",
                "source": self.repo.owner if organization else self.full_name,
                "enforcement": body.get("enforcement"), "node_id": f"RRS_{rid}",
                "conditions": copy.deepcopy(body.get("conditions") or {}), "rules": rules,
                "bypass_actors": copy.deepcopy(body.get("bypass_actors") or []), "current_user_can_bypass": "always",
                "_links": {"self": {"href": f"{self.url}/repos/{self.full_name}/rulesets/{rid}"}},
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}

    def _invalid_ruleset(self, body, rid: int | None):
        problems = []
        if not isinstance(body, dict) or not body.get("name"):
            problems.append("Name can't be blank")
        else:
            if body.get("enforcement") not in ("disabled", "active", "evaluate"):
                problems.append(f"Invalid property /enforcement: `{body.get('enforcement')}` is not a possible value.")
            for rule in body.get("rules") or []:
                if rule.get("type") not in RULE_TYPES:
                    problems.append(f"Invalid rule '{rule.get('type')}'")
            if any(x["name"] == body["name"] and x["source_type"] == "Repository" and x["id"] != rid
                   for x in self.repo.rulesets.values()):
                problems.append("Name must be unique")
        if problems:
            return 422, {"message": "Validation Failed", "errors": problems, "documentation_url": DOCS}, {}
        return None

    def _rulesets(self, method: str, path: str, sub: str, req: Request):
        rs = self.repo.rulesets
        if sub == "/rulesets" and method == "GET":
            parents = req.query.get("includes_parents", "true") != "false"
            items = [{k: v for k, v in x.items() if k in ("id", "name", "target", "source_type", "source",
                                                          "enforcement", "node_id", "_links", "created_at",
                                                          "updated_at")}
                     for x in rs.values() if parents or x["source_type"] == "Repository"]
            return self._page(path, items, req.query)
        if sub == "/rulesets" and method == "POST":
            bad = self._invalid_ruleset(req.body, None)
            if bad:
                return bad
            return 201, self.add_ruleset(req.body), {}
        mm = re.fullmatch(r"/rulesets/(\d+)", sub)
        if mm and int(mm.group(1)) in rs:
            rid = int(mm.group(1))
            if method == "GET":
                return 200, rs[rid], {}
            if method == "PUT" and rs[rid]["source_type"] == "Repository":
                bad = self._invalid_ruleset({**rs[rid], **(req.body or {})}, rid)
                if bad:
                    return bad
                rs[rid] = self._ruleset(rid, {**rs[rid], **req.body}, False)
                return 200, rs[rid], {}
        return None

    def _protection(self, method: str, branch: str, req: Request):
        base = f"{self.url}/repos/{self.full_name}/branches/{branch}/protection"
        if method == "GET":
            if branch not in self.repo.protection:
                return 404, {"message": "Branch not protected", "documentation_url": DOCS}, {}
            return 200, self.repo.protection[branch], {}
        if method == "PUT":
            b = req.body
            checks = b["required_status_checks"]
            listed = checks.get("checks") or [{"context": c, "app_id": None} for c in checks.get("contexts") or []]
            listed = [{"context": c["context"], "app_id": c.get("app_id")} for c in listed]
            self.repo.protection[branch] = {
                "url": base,
                "required_status_checks": {"url": f"{base}/required_status_checks", "strict": checks["strict"],
                                           "contexts": [c["context"] for c in listed], "checks": listed},
                "enforce_admins": {"url": f"{base}/enforce_admins", "enabled": bool(b["enforce_admins"])},
                "required_pull_request_reviews": {"url": f"{base}/required_pull_request_reviews",
                                                  **b["required_pull_request_reviews"]},
                "allow_force_pushes": {"enabled": bool(b.get("allow_force_pushes"))},
                "allow_deletions": {"enabled": bool(b.get("allow_deletions"))},
            }
            return 200, self.repo.protection[branch], {}
        return None

    # -- deployments -------------------------------------------------------------------

    def _now(self) -> str:
        self._tick += 1
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1767225600 + self._tick))

    def _invalid(self, resource: str, field_name: str, code: str, message: str | None = None):
        error = {"resource": resource, "field": field_name, "code": code, **({"message": message} if message else {})}
        return 422, {"message": "Validation Failed", "errors": [error],
                     "documentation_url": f"{DOCS}/deployments/deployments"}, {}

    def _deployments(self, method: str, path: str, sub: str, req: Request):
        r, api = self.repo, f"{self.url}/repos/{self.full_name}"
        denied = (403, {"message": "Resource not accessible by integration",
                        "documentation_url": f"{DOCS}/deployments/deployments#create-a-deployment"}, {})
        if sub == "/deployments" and method == "GET":
            q = req.query
            found = [d for d in r.deployments.values()
                     if all(q.get(k) in (None, d[k]) for k in ("sha", "ref", "task", "environment"))]
            return self._page(path, sorted(found, key=lambda d: d["id"], reverse=True), q)
        if sub == "/deployments" and method == "POST":
            if not self.deployments_writable:
                return denied
            b = req.body if isinstance(req.body, dict) else {}
            ref = b.get("ref")
            if not isinstance(ref, str) or not ref:
                return self._invalid("Deployment", "ref", "missing_field")
            sha = ref if re.fullmatch(r"[0-9a-f]{40}", ref) else None
            if sha is None and ref != r.default_branch and ref not in r.commit_statuses:
                return 422, {"message": f"No ref found for: {ref}",
                             "documentation_url": f"{DOCS}/deployments/deployments#create-a-deployment"}, {}
            sha = sha or "c" * 40
            if b.get("auto_merge", True) and ref in r.behind:
                return 202, {"message": f"Auto-merged {r.default_branch} into {ref} on deployment."}, {}
            contexts = b.get("required_contexts")
            statuses = r.commit_statuses.get(ref, {})
            wanted = statuses if contexts is None else {c: statuses.get(c, "missing") for c in contexts}
            failing = sorted(c for c, st in wanted.items() if st != "success")
            if failing:
                return 409, {"message": f"Conflict: Commit status checks failed for {ref}.",
                             "errors": [{"contexts": [{"context": c, "state": wanted[c]} for c in failing],
                                         "resource": "Deployment", "field": "required_contexts", "code": "invalid"}],
                             "documentation_url": f"{DOCS}/deployments/deployments#failed-commit-status-checks"}, {}
            environment = b.get("environment", "production")
            did, now = next(self._ids), self._now()
            dep = {"url": f"{api}/deployments/{did}", "id": did, "node_id": f"DE_{did}", "sha": sha, "ref": ref,
                   "task": b.get("task", "deploy"), "payload": b.get("payload", {}),
                   "original_environment": environment, "environment": environment,
                   "description": b.get("description", ""), "creator": user(self.token_user),
                   "created_at": now, "updated_at": now, "statuses_url": f"{api}/deployments/{did}/statuses",
                   "repository_url": api,
                   "transient_environment": bool(b.get("transient_environment", False)),
                   "production_environment": bool(b.get("production_environment", environment == "production")),
                   "performed_via_github_app": None}
            r.deployments[did] = dep
            r.deployment_statuses[did] = []
            return 201, dep, {}
        mm = re.fullmatch(r"/deployments/(\d+)(/statuses)?", sub)
        if mm is None or int(mm.group(1)) not in r.deployments:
            return None
        dep = r.deployments[int(mm.group(1))]
        if mm.group(2) is None:
            return (200, dep, {}) if method == "GET" else None
        if method == "GET":
            return self._page(path, list(reversed(r.deployment_statuses[dep["id"]])), req.query)
        if method != "POST":
            return None
        if not self.deployments_writable:
            return denied
        b = req.body if isinstance(req.body, dict) else {}
        state = b.get("state")
        if state not in ("error", "failure", "inactive", "in_progress", "queued", "pending", "success"):
            return self._invalid("DeploymentStatus", "state", "custom", "state is not included in the list")
        if len(b.get("description") or "") > 140:
            return self._invalid("DeploymentStatus", "description", "custom",
                                 "description is too long (maximum is 140 characters)")
        status = self._add_status(dep, state, b)
        if state == "success" and b.get("auto_inactive", True):
            for other in r.deployments.values():
                if (other["id"] < dep["id"] and other["environment"] == dep["environment"]
                        and not other["transient_environment"] and not other["production_environment"]
                        and self.deployment_states(other["id"])[-1:] == ["success"]):
                    self._add_status(other, "inactive", {"description": ""})
        return 201, status, {}

    def _add_status(self, dep: dict, state: str, b: dict) -> dict:
        api = f"{self.url}/repos/{self.full_name}"
        sid, now = next(self._ids), self._now()
        log_url = b.get("log_url") or b.get("target_url") or ""
        status = {"url": f"{api}/deployments/{dep['id']}/statuses/{sid}", "id": sid, "node_id": f"DES_{sid}",
                  "state": state, "creator": user(self.token_user), "description": b.get("description", ""),
                  "environment": b.get("environment", dep["environment"]), "target_url": log_url,
                  "log_url": log_url, "environment_url": b.get("environment_url", ""),
                  "created_at": now, "updated_at": now, "deployment_url": dep["url"], "repository_url": api,
                  "performed_via_github_app": None}
        self.repo.deployment_statuses[dep["id"]].append(status)
        dep["updated_at"] = now
        return status
