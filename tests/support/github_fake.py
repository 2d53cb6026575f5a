"""A loopback fake of the parts of GitHub's REST API the project calls.

Payloads follow GitHub's documented shapes (pulls, reviews, issue comments, team
memberships, collaborator permission, contents, pull creation, issues: list by state and
label, create, edit, comment). Lists paginate with
``per_page``/``page`` and a ``Link`` header like GitHub's. Every request is recorded so
tests can assert on what was sent. Failures are injected per path: a status code
(403, 500, ...) or a delay (for timeouts).

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
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


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
    comments: dict = field(default_factory=dict)
    collaborators: dict = field(default_factory=dict)   # login -> permission
    files: dict = field(default_factory=dict)           # (ref, path) -> text
    issues: dict = field(default_factory=dict)          # number -> issue (pull requests excluded)


class GitHubFake:
    """The fake server; ``url`` is the API base to put in ``GITHUB_API_URL``."""

    def __init__(self, owner: str = "acme", name: str = "models", token: str = "test-token", per_page_max: int = 100):
        self.repo = FakeRepo(owner, name)
        self.teams: dict[tuple[str, str], dict[str, str]] = {}  # (org, slug) -> {login: state}
        self.token = token
        self.per_page_max = per_page_max
        self.requests: list[Request] = []
        self.faults: dict[str, Fault] = {}
        self._ids = iter(range(1000, 10**9))
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

    def add_pull(self, number: int, *, author: str = "alice", head_sha: str = "a" * 40, base: str = "main",
                 head_ref: str = "promote/prod-v2", author_type: str | None = None) -> dict:
        pr = {
            "id": next(self._ids), "number": number, "state": "open", "title": f"PR {number}",
            "user": user(author, author_type), "draft": False,
            "head": {"ref": head_ref, "sha": head_sha, "label": f"{self.repo.owner}:{head_ref}"},
            "base": {"ref": base, "sha": "b" * 40, "label": f"{self.repo.owner}:{base}"},
            "html_url": f"https://github.com/{self.full_name}/pull/{number}",
        }
        self.repo.pulls[number] = pr
        self.repo.reviews.setdefault(number, [])
        self.repo.comments.setdefault(number, [])
        return pr

    def set_head(self, number: int, sha: str) -> None:
        self.repo.pulls[number]["head"]["sha"] = sha

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

    def add_comment(self, number: int, login: str, body: str) -> dict:
        c = {"id": next(self._ids), "body": body, "user": user(login),
             "html_url": f"https://github.com/{self.full_name}/pull/{number}#issuecomment-1"}
        self.repo.comments[number].append(c)
        return c

    def add_issue(self, title: str, body: str = "", labels: list[str] | None = None,
                  author: str = "github-actions[bot]") -> dict:
        """An open issue; numbers are shared with pull requests, as on GitHub."""
        number = max([*self.repo.pulls, *self.repo.issues], default=0) + 1
        issue = {"id": next(self._ids), "number": number, "title": title, "body": body, "state": "open",
                 "state_reason": None, "user": user(author), "labels": [{"name": n} for n in labels or []],
                 "html_url": f"https://github.com/{self.full_name}/issues/{number}"}
        self.repo.issues[number] = issue
        self.repo.comments.setdefault(number, [])
        return issue

    def add_collaborator(self, login: str, permission: str = "write") -> None:
        self.repo.collaborators[login.lower()] = permission

    def add_team_member(self, org: str, slug: str, login: str, state: str = "active") -> None:
        self.teams.setdefault((org, slug), {})[login.lower()] = state

    def add_file(self, path: str, text: str, ref: str = "main") -> None:
        self.repo.files[(ref, path)] = text

    def fail(self, path_regex: str, status: int | None = None, delay: float = 0.0, times: int | None = None,
             body: str | None = None) -> None:
        """Make requests whose path matches ``path_regex`` fail or stall."""
        self.faults[path_regex] = Fault(status, delay, times, body)

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

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        req = Request(method, parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}, dict(h.headers), body)
        with self._lock:
            self.requests.append(req)
        for pattern, fault in list(self.faults.items()):
            if re.search(pattern, parts.path) and (fault.times is None or fault.times > 0):
                if fault.times is not None:
                    fault.times -= 1
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.status:
                    return self._send(h, fault.status, fault.body if fault.body is not None
                                      else {"message": "injected failure", "documentation_url": "https://docs.github.com/rest"})
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(h, 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
        status, payload, headers = self._route(method, parts.path, req)
        self._send(h, status, payload, headers)

    def _send(self, h, status: int, payload, headers: dict | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
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
        per_page = min(int(query.get("per_page", 30)), self.per_page_max)
        page = int(query.get("page", 1))
        chunk = items[(page - 1) * per_page: page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []
        if page < last:
            links.append(f'<{self.url}{path}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{self.url}{path}?per_page={per_page}&page={last}>; rel="last"')
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})

    def _route(self, method: str, path: str, req: Request):
        not_found = (404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, {})
        r = self.repo
        m = re.fullmatch(rf"/repos/{r.owner}/{r.name}(/.*)", path)
        if m is None:
            m2 = re.fullmatch(r"/orgs/([^/]+)/teams/([^/]+)/memberships/([^/]+)", path)
            if m2 and method == "GET":
                state = self.teams.get((m2.group(1), m2.group(2)), {}).get(m2.group(3).lower())
                if state is None:
                    return not_found
                return 200, {"url": f"{self.url}{path}", "role": "member", "state": state}, {}
            return not_found
        sub = m.group(1)
        if (mm := re.fullmatch(r"/pulls/(\d+)", sub)) and method == "GET":
            pr = r.pulls.get(int(mm.group(1)))
            return (200, pr, {}) if pr else not_found
        if (mm := re.fullmatch(r"/pulls/(\d+)/reviews", sub)) and method == "GET":
            n = int(mm.group(1))
            return self._page(path, r.reviews[n], req.query) if n in r.pulls else not_found
        if sub == "/issues" and method == "GET":
            state, labels = req.query.get("state", "open"), [x for x in req.query.get("labels", "").split(",") if x]
            found = [i for i in r.issues.values() if (state == "all" or i["state"] == state)
                     and all(any(lb["name"] == want for lb in i["labels"]) for want in labels)]
            return self._page(path, found, req.query)
        if sub == "/issues" and method == "POST":
            issue = self.add_issue(req.body["title"], req.body.get("body") or "", req.body.get("labels"))
            return 201, issue, {}
        if (mm := re.fullmatch(r"/issues/(\d+)", sub)) and method in ("GET", "PATCH"):
            issue = r.issues.get(int(mm.group(1)))
            if issue is None:
                return not_found
            if method == "PATCH":
                for key in ("title", "body", "state", "state_reason"):
                    if key in req.body:
                        issue[key] = req.body[key]
            return 200, issue, {}
        if (mm := re.fullmatch(r"/issues/(\d+)/comments", sub)):
            n = int(mm.group(1))
            if n not in r.pulls and n not in r.issues:
                return not_found
            if method == "GET":
                return self._page(path, r.comments[n], req.query)
            if method == "POST":
                c = self.add_comment(n, "github-actions[bot]", req.body["body"])
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
            perm = r.collaborators.get(login.lower(), "none")
            return 200, {"permission": perm, "role_name": perm, "user": user(login)}, {}
        if (mm := re.fullmatch(r"/contents/(.+)", sub)) and method == "GET":
            text = r.files.get((req.query.get("ref", "main"), mm.group(1)))
            if text is None:
                return not_found
            return 200, {"type": "file", "encoding": "base64", "name": mm.group(1).rsplit("/", 1)[-1],
                         "path": mm.group(1), "content": base64.encodebytes(text.encode()).decode()}, {}
        if (mm := re.fullmatch(r"/commits/([0-9a-f]{7,40})/pulls", sub)) and method == "GET":
            # "List pull requests associated with a commit": merged PRs whose merge commit it is
            sha = mm.group(1)
            found = [p for p in r.pulls.values() if str(p.get("merge_commit_sha", "")).startswith(sha)
                     or p["head"]["sha"].startswith(sha)]
            return self._page(path, found, req.query)
        if sub == "/pulls" and method == "POST":
            number = max(r.pulls, default=0) + 1
            pr = self.add_pull(number, author="promotion-bot", head_ref=req.body["head"], base=req.body["base"])
            pr["title"], pr["body"] = req.body["title"], req.body.get("body")
            return 201, pr, {}
        return not_found
