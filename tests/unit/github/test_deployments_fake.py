"""The GitHub fake serves the Deployments API as GitHub documents it (the inconvenient parts too)."""

from __future__ import annotations

import requests

from tests.support.github_fake import GitHubFake

SHA = "d" * 40
H = {"Authorization": "Bearer test-token", "Accept": "application/vnd.github+json"}


def post(gh, path, body):
    return requests.post(gh.url + "/repos/acme/models" + path, json=body, headers=H, timeout=5)


def get(gh, path, **params):
    return requests.get(gh.url + "/repos/acme/models" + path, params=params, headers=H, timeout=5)


def test_create_answers_201_with_githubs_fields_and_rate_limit_headers():
    with GitHubFake() as gh:
        resp = post(gh, "/deployments", {"ref": SHA, "environment": "prod", "payload": {"version": 7},
                                         "auto_merge": False, "required_contexts": []})
        assert resp.status_code == 201
        dep = resp.json()
        for key in ("url", "id", "node_id", "sha", "ref", "task", "payload", "original_environment", "environment",
                    "description", "creator", "created_at", "updated_at", "statuses_url", "repository_url",
                    "transient_environment", "production_environment"):
            assert key in dep, key
        assert dep["task"] == "deploy" and dep["payload"] == {"version": 7} and dep["sha"] == SHA
        assert dep["production_environment"] is False  # only "production" defaults to true
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= {k.lower() for k in resp.headers}
        default = post(gh, "/deployments", {"ref": SHA, "required_contexts": []}).json()
        assert default["environment"] == "production" and default["production_environment"] is True


def test_omitted_required_contexts_checks_every_status_and_auto_merge_merges_a_behind_ref():
    with GitHubFake() as gh:
        gh.add_commit_status(SHA, "ci/tests", "failure")
        resp = post(gh, "/deployments", {"ref": SHA, "environment": "prod", "auto_merge": False})
        assert resp.status_code == 409 and "Commit status checks failed" in resp.json()["message"]
        assert post(gh, "/deployments", {"ref": SHA, "environment": "prod", "auto_merge": False,
                                         "required_contexts": []}).status_code == 201
        gh.add_commit_status("topic", "ci/tests", "success")
        gh.mark_behind("topic")
        merged = post(gh, "/deployments", {"ref": "topic", "required_contexts": []})
        assert merged.status_code == 202 and merged.json()["message"].startswith("Auto-merged main into topic")
        assert post(gh, "/deployments", {"ref": "no-such-ref", "required_contexts": []}).status_code == 422


def test_statuses_validate_list_newest_first_and_auto_inactive_spares_production():
    with GitHubFake() as gh:
        ids = [post(gh, "/deployments", {"ref": SHA, "environment": env, "required_contexts": [],
                                         "production_environment": prod}).json()["id"]
               for env, prod in (("staging", False), ("staging", False), ("prod", True), ("prod", True))]
        assert post(gh, f"/deployments/{ids[0]}/statuses", {"state": "done"}).status_code == 422
        assert post(gh, f"/deployments/{ids[0]}/statuses", {"state": "success", "description": "x" * 141}).status_code == 422
        for i in ids[:2] + ids[2:]:
            made = post(gh, f"/deployments/{i}/statuses", {"state": "success", "log_url": "https://ci/run/1",
                                                           "environment_url": "https://svc"})
            assert made.status_code == 201 and made.json()["target_url"] == "https://ci/run/1"
        assert gh.deployment_states(ids[0]) == ["success", "inactive"]  # non-production: GitHub deactivates
        assert gh.deployment_states(ids[2]) == ["success"]              # production: nobody does
        listed = get(gh, f"/deployments/{ids[0]}/statuses").json()
        assert [s["state"] for s in listed] == ["inactive", "success"]


def test_lists_paginate_with_link_headers_newest_first():
    with GitHubFake() as gh:
        ids = [post(gh, "/deployments", {"ref": SHA, "environment": "prod", "required_contexts": []}).json()["id"]
               for _ in range(3)]
        page = get(gh, "/deployments", environment="prod", per_page=2)
        assert [d["id"] for d in page.json()] == ids[::-1][:2]
        assert 'rel="next"' in page.headers["Link"] and 'rel="last"' in page.headers["Link"]
        assert get(gh, "/deployments", environment="staging").json() == []


def test_a_token_without_deployments_write_gets_403():
    with GitHubFake() as gh:
        gh.deployments_writable = False
        resp = post(gh, "/deployments", {"ref": SHA, "required_contexts": []})
        assert resp.status_code == 403 and resp.json()["message"] == "Resource not accessible by integration"
