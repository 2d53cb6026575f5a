"""GitHub Deployments: the repository's Environments panel says what runs where.

Each rollout creates a deployment for its environment (``ref`` = the merged commit,
``payload`` = model, version, digest and the rollout's id; ``auto_merge: false`` and
``required_contexts: []``, since the rollout already judged the commit) and moves its
status ``in_progress`` -> ``success`` or ``failure``, with ``log_url`` (the workflow run)
and ``environment_url`` (the service). On success, the deployments of the version it
replaced get ``inactive`` (GitHub does that by itself only for non-production
environments). A rollback does the same for the version it restores; the rolled-back
canary's deployment ends in ``failure``; an operator's rollback creates a deployment of
the target and deactivates the replaced one.

GitHub is told in the background (:class:`~promotion.notify.dispatch.Outbox`), in order,
so an API failure or a slow API never holds up a traffic action; failures are one line
each on stderr and in the job summary. It is on when ``GITHUB_REPOSITORY``,
``GITHUB_TOKEN`` and ``GITHUB_RUN_ID`` are set (a workflow run whose job has
``permissions: deployments: write``).

Usage::

    tracker = DeploymentTracker.from_env(env)     # None outside a workflow run
    if tracker:
        ctx.listeners.append(tracker)
    ...
    tracker.close()
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable

from promotion.errors import GitHubError
from promotion.github.client import GitHubClient
from promotion.github.context import parse_repo

STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
DESCRIPTION_MAX = 140  # GitHub's limit for a status description
CLOSE_WAIT_S = 15.0
TASK = "deploy"


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= DESCRIPTION_MAX else text[:DESCRIPTION_MAX - 3] + "..."


class Deployments:
    """The Deployments REST API of one repository (``owner/name``)."""

    def __init__(self, client: GitHubClient, repo: str) -> None:
        owner, name = parse_repo(repo)
        self.client, self.base = client, f"/repos/{owner}/{name}/deployments"

    def create(self, *, environment: str, ref: str, payload: dict, description: str = "",
               production: bool = False) -> dict:
        """POST a deployment; GitHub answers 201 with it (202 would mean it merged a branch instead)."""
        body = {"ref": ref, "task": TASK, "environment": environment, "payload": payload,
                "description": _short(description), "auto_merge": False, "required_contexts": [],
                "production_environment": production, "transient_environment": False}
        resp = self.client.request("POST", self.base, json=body)
        if resp.status_code != 201:
            raise GitHubError(f"GitHub API POST {self.base}: {resp.status_code} instead of 201; no deployment created")
        data = self.client._json(resp, f"GitHub API POST {self.base}")
        if not isinstance(data, dict) or not isinstance(data.get("id"), int):
            raise GitHubError(f"GitHub API POST {self.base}: the answer carries no deployment id")
        return data

    def set_status(self, deployment_id: int, state: str, *, log_url: str | None = None,
                   environment_url: str | None = None, description: str = "",
                   auto_inactive: bool | None = None) -> dict:
        """POST a status (one of :data:`STATES`) to a deployment."""
        if state not in STATES:
            raise ValueError(f"not a deployment state: {state!r}")
        body: dict[str, Any] = {"state": state, "description": _short(description)}
        if log_url:
            body["log_url"] = log_url
        if environment_url:
            body["environment_url"] = environment_url
        if auto_inactive is not None:
            body["auto_inactive"] = auto_inactive
        return self.client.post(f"{self.base}/{deployment_id}/statuses", body)

    def list(self, environment: str, *, sha: str | None = None) -> list[dict]:
        """Deployments of ``environment`` (newest first), every page."""
        params = {"environment": environment, "task": TASK, **({"sha": sha} if sha else {})}
        return self.client.paginate(self.base, params)

    def latest_state(self, deployment_id: int) -> str | None:
        """The newest status's state (GitHub lists statuses newest first), or None."""
        page = self.client.get(f"{self.base}/{deployment_id}/statuses", {"per_page": 1})
        return page[0].get("state") if isinstance(page, list) and page else None

    def deactivate(self, environment: str, version: int, *, keep: int | None, log_url: str | None,
                   description: str) -> list[int]:
        """``inactive`` for every deployment of ``version`` here whose newest status is success."""
        done = []
        for dep in self.list(environment):
            payload = dep.get("payload") if isinstance(dep.get("payload"), dict) else {}
            if dep.get("id") == keep or payload.get("version") != version:
                continue
            if self.latest_state(dep["id"]) == "success":
                self.set_status(dep["id"], "inactive", log_url=log_url, description=description)
                done.append(dep["id"])
        return done


def enabled() -> bool:
    """Whether this run reports deployments: a workflow run with a repository and a token."""
    return all(os.environ.get(k) for k in ("GITHUB_REPOSITORY", "GITHUB_TOKEN", "GITHUB_RUN_ID"))


class DeploymentTracker:
    """A controller listener that mirrors a rollout (or a rollback) into GitHub Deployments."""

    def __init__(self, api: Deployments, env, *, summary: Callable[[str], None] | None = None, err=None) -> None:
        from promotion.notify.dispatch import Outbox
        from promotion.notify.events import run_url

        self.api, self.env = api, env
        self.log_url = run_url()
        self.failures: list[str] = []
        self.ids: dict[tuple[str, int], int] = {}  # (rollout id, version) -> deployment id
        self._box = Outbox(f"deployments-{env.name}")
        self._summary, self._err = summary, err
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env, **kw) -> "DeploymentTracker | None":
        """A tracker for ``env`` in a workflow run, else None."""
        if not enabled():
            return None
        # a short leash: telling GitHub must never keep a rollback's job waiting long
        client = GitHubClient(os.environ["GITHUB_TOKEN"], os.environ.get("GITHUB_API_URL") or None, 5.0, max_wait=5.0)
        return cls(Deployments(client, os.environ["GITHUB_REPOSITORY"]), env, **kw)

    # -- jobs (run in the background, in order) ------------------------------------

    def _job(self, what: str, fn: Callable[[], None]) -> None:
        def run():
            try:
                fn()
            except GitHubError as exc:
                with self._lock:
                    self.failures.append(f"GitHub deployment ({what}) not recorded: {exc.message}")
            except Exception as exc:  # noqa: BLE001 - reported, never raised into a rollout
                with self._lock:
                    self.failures.append(f"GitHub deployment ({what}) not recorded: internal error "
                                         f"({type(exc).__name__})")
        self._box.put(run)

    def _deployment(self, rollout: str, version: int, digest: str | None, ref: str | None, model: str,
                    description: str) -> int:
        key = (rollout, version)
        if key in self.ids:
            return self.ids[key]
        # a resumed rollout (the job was killed) continues the deployment it created
        for dep in self.api.list(self.env.name, sha=ref):
            payload = dep.get("payload") if isinstance(dep.get("payload"), dict) else {}
            if payload.get("rollout") == rollout and payload.get("version") == version:
                self.ids[key] = dep["id"]
                return dep["id"]
        dep = self.api.create(environment=self.env.name, ref=ref or os.environ.get("GITHUB_SHA") or "HEAD",
                              payload={"model": model, "version": version, "digest": digest, "rollout": rollout},
                              description=description, production=self.env.stage in ("prod", "production"))
        self.ids[key] = dep["id"]
        self.api.set_status(dep["id"], "in_progress", log_url=self.log_url, environment_url=self.env.endpoint,
                            description=description)
        return dep["id"]

    def _finish(self, dep_id: int, state: str, description: str) -> None:
        # auto_inactive off: which deployments stop being live is decided here, not by GitHub
        self.api.set_status(dep_id, state, log_url=self.log_url, environment_url=self.env.endpoint,
                            description=description, auto_inactive=False)

    # -- the listener -----------------------------------------------------------------

    def __call__(self, st, entry: dict) -> None:
        event = entry.get("event")
        ref = st.source_commit or os.environ.get("GITHUB_SHA")
        canary = lambda: self._deployment(st.id, st.canary, st.canary_digest, ref, st.model,  # noqa: E731
                                          f"{st.model} v{st.canary} canary")
        if event in ("planned", "bootstrap", "resumed"):
            self._job("start", canary)
        elif event == "promoted":
            def promoted():
                self._finish(canary(), "success", f"{st.model} v{st.canary} serves 100%")
                if st.champion is not None and st.champion != st.canary:
                    self.api.deactivate(self.env.name, st.champion, keep=None, log_url=self.log_url,
                                        description=f"replaced by v{st.canary}")
            self._job("promoted", promoted)
        elif event == "rolled_back":
            def rolled_back():
                word = "rejected" if st.rollback_action == "reject" else "rolled back"
                self._finish(canary(), "failure", f"{word}: {st.reason or ''}")
                if st.rollback_action != "reject" and st.champion is not None:
                    back = self._deployment(st.id, st.champion, st.champion_digest, ref, st.model,
                                            f"rollback to {st.model} v{st.champion}")
                    self._finish(back, "success", f"{st.model} v{st.champion} restored; v{st.canary} rolled back")
            self._job("rolled back", rolled_back)

    def manual_rollback(self, result, digest: str | None, reason: str) -> None:
        """An operator's rollback: a deployment of the target (success), the replaced one inactive."""
        def job():
            rollout = f"rollback-{os.environ.get('GITHUB_RUN_ID', '')}-{int(time.time())}"
            dep = self._deployment(rollout, result.target, digest, os.environ.get("GITHUB_SHA"), result.model,
                                   f"rollback to {result.model} v{result.target}")
            self._finish(dep, "success", f"rollback: {reason}")
            if result.previous != result.target:
                self.api.deactivate(self.env.name, result.previous, keep=None, log_url=self.log_url,
                                    description=f"rolled back to v{result.target}")
        self._job("rollback", job)

    def close(self, wait_s: float = CLOSE_WAIT_S) -> list[str]:
        """Wait (at most ``wait_s``) for GitHub to be told; report what was not, one line each."""
        left = self._box.close(time.monotonic() + wait_s)
        if left:
            self.failures.append(f"GitHub deployment: {left} update(s) still pending after {wait_s:g} s; not recorded")
        if self.failures:
            err = self._err or sys.stderr
            for line in self.failures:
                print(f"warning: {line}", file=err)
            summary = self._summary
            if summary is None:
                from promotion.commands._common import append_step_summary as summary
            summary("### GitHub deployments not recorded\n\n" + "\n".join(f"- {x}" for x in self.failures))
        return self.failures
