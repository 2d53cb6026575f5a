"""End to end: GitHub events drive the real workflows, run by the harness, against the
loopback GitHub fake, the real embedded MLflow, real git and (for rollout and rollback)
a real ``bentoml serve`` router with 2 workers.

The world (built once per module, copied per test): a team's repository where
fraud-detector v1 runs in prod and v2 has been promoted to staging.

- v1 is the ``tiny`` spec, v2 the ``v1`` spec ("small baseline"), both trained and
  registered with ``services.fraud.train.register``: v2 passes prod's metric thresholds
  and beats v1 on the holdout (F1 ratio about 1.4), so the metrics gate is judged for real.
- The staging record of v2 is written with ``promotion.records.write_record`` directly,
  signed by the local ed25519 key (the staging rollout itself is covered by
  ``test_rollout_bentoml.py``); prod's record of v1 likewise.
- The drift gate reads a production window parquet of the same feature distribution.
- ``policies/prod.yaml`` keeps every gate of the repository's prod policy (metrics,
  drift, fairness, schema, lineage, promotion path, 2 approvals by code owners) and
  changes only timing: the registration-time latency bound and the online SLO latency are
  loosened (a shared 2-core machine measures its load, not the model), and the canary
  steps hold 1 s / 20 requests instead of 5 s / 300.
- The workflows sign with ``PROMOTION_SIGNER=local`` (forced in the harness environment):
  keyless Sigstore signing needs GitHub's OIDC token and the internet.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.github_fake import GitHubFake
from tests.support.router import serving
from tests.support.workflow_runner import (
    WorkflowRunner, install_venv_shim, pull_request_payload, pull_request_review_payload,
    push_payload, workflow_dispatch_payload)
from tests.unit.workflows.conftest import WORKFLOWS, git, make_repo  # noqa: F401 (WORKFLOWS: the attack test)

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
TOKEN = "admin-token"
CODEOWNERS = "/environments/ @bob @carol\n/policies/ @bob @carol\n/.github/ @bob\n"
FAST = """rollout:
  strategy: steps
  steps:
    - {weight: 5, hold_s: 1, min_requests: 20, max_s: 90}
    - {weight: 25, hold_s: 1, min_requests: 20, max_s: 90}
    - {weight: 100, hold_s: 1, min_requests: 20, max_s: 90}
  interval_s: 0.5
  inconclusive: rollback

slo:
  error_rate_max: 0.05
  latency_p95_ms_max: 1000
  min_requests: 20
"""


def fast_policy(text: str) -> str:
    """policies/prod.yaml with the timing changes described in the module docstring."""
    head, rest = text.split("\nrollout:\n", 1)
    tail = rest[rest.index("\nanalysis:"):]
    assert "      latency_p95_ms: {max: 100}\n" in head
    head = head.replace("      latency_p95_ms: {max: 100}\n", "      latency_p95_ms: {max: 1000}\n")
    return head + "\n" + FAST + tail


def set_version(repo: Path, env: str, mv) -> None:
    path = repo / "environments" / f"{env}.yaml"
    lines = []
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("  version: "):
            line = f"  version: {mv.version}\n"
        elif line.startswith("  digest: "):
            line = f"  digest: {mv.digest}\n"
        lines.append(line)
    path.write_text("".join(lines))


def record(repo: Path, env: str, mv, previous=None, **extra) -> Path:
    from promotion.records import write_record

    return write_record(repo, env, action="promote", model=MODEL, version=mv.version, digest=mv.digest,
                        from_env={"prod": "staging", "staging": "dev"}[env], to_env=env, checks=[], approvers=[],
                        steps=[], rollback_target=previous.version if previous else None,
                        data_snapshot=mv.tags.get("data_snapshot"), code_commit=mv.tags.get("code_commit"),
                        policy_digest=None, source_commit=None, **extra)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Repository + state (registry, signing key) of the world; tests work on copies."""
    from promotion.registry import Registry
    from services.fraud import data, train
    from tests.support.fraud_versions import register_tiny

    base = tmp_path_factory.mktemp("events")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROMOTION_STATE", str(base / "state"))
    mp.setenv("PROMOTION_SIGNER", "local")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        repo = make_repo(base / "origin")
        reg = Registry.for_root(repo)
        v1 = register_tiny(reg)
        v2 = train.register(reg, train.SPECS["v1"])
        window = base / "production-window.parquet"
        data.generate(20_000, seed=2024).drop(columns=[data.LABEL]).to_parquet(window, index=False)
        (repo / "policies" / "prod.yaml").write_text(fast_policy((repo / "policies" / "prod.yaml").read_text()))
        (repo / ".github" / "CODEOWNERS").write_text(CODEOWNERS)
        for env, mv in (("staging", v2), ("prod", v1)):
            set_version(repo, env, mv)
            path = repo / "environments" / f"{env}.yaml"
            path.write_text(path.read_text() + f"\ndrift:\n  production_window: {window}\n")
        reg.set_alias(MODEL, "staging", v1.version)
        reg.set_alias(MODEL, "staging", v2.version)
        reg.set_alias(MODEL, "prod", v1.version)
        record(repo, "prod", v1)
        record(repo, "staging", v2, previous=v1)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "v1 runs in prod; v2 promoted to staging")
    finally:
        mp.undo()
    return base, v1, v2


@pytest.fixture
def world(template, tmp_path, monkeypatch):
    """A copy of the template, the GitHub fake and a workflow runner factory."""
    from promotion.registry import Registry

    base, v1, v2 = template
    shutil.copytree(base / "state", tmp_path / "state")  # artifacts stay where the registry put them
    repo = tmp_path / "origin"
    git(tmp_path, "clone", "-q", str(base / "origin"), str(repo))
    state = tmp_path / "state"
    monkeypatch.setenv("PROMOTION_STATE", str(state))
    monkeypatch.setenv("PROMOTION_SIGNER", "local")
    monkeypatch.setenv("PROMOTION_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    reg = Registry.for_root(repo)
    with GitHubFake() as gh:
        gh.add_file(".github/CODEOWNERS", CODEOWNERS)
        for login in ("bob", "carol", "alice"):
            gh.add_collaborator(login, "write")

        def runner(name: str) -> WorkflowRunner:
            return WorkflowRunner(
                WORKFLOWS / name, repo=repo, workdir=tmp_path / "runs" / name, repository=gh.full_name,
                api_url=gh.url, token=gh.token, server_url=tmp_path.as_uri(),
                secrets={"PROMOTION_ADMIN_TOKEN": TOKEN, "PROMOTION_BOT_TOKEN": "bot-token"},
                vars={"MLFLOW_TRACKING_URI": reg.uri},
                # the workflows keep state in the runner's temp directory; here it is the
                # world's state folder (outside the checkout), which holds the signing key
                force_env={"PROMOTION_SIGNER": "local", "PROMOTION_STATE": str(state)},
                on_checkout=install_venv_shim)

        yield repo, reg, gh, runner, v1, v2


def remote(tmp_path: Path, repo: Path) -> Path:
    """The bare repository `promotion github push` pushes to: $GITHUB_SERVER_URL/acme/models.git."""
    bare = tmp_path / "acme" / "models.git"
    bare.parent.mkdir(exist_ok=True)
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    return bare


def open_promotion_pr(repo: Path, gh, v2, number: int = 7):
    """A pull request moving prod to v2; returns (merge sha, head sha, payload); main is unchanged."""
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "promote/prod-v2")
    set_version(repo, "prod", v2)
    git(repo, "commit", "-q", "-am", "promote prod to v2")
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "--no-edit", "promote/prod-v2")
    merge = git(repo, "rev-parse", "HEAD")
    git(repo, "reset", "-q", "--hard", base)
    gh.add_pull(number, author="alice", head_sha=head)
    return merge, head, pull_request_payload(repository=gh.full_name, number=number, base_sha=base,
                                             head_sha=head, author="alice")


def gate_rows(summary: str) -> dict[str, str]:
    """Check name -> verdict cell, from the gate's markdown table."""
    rows = {}
    for line in summary.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].lower() not in ("check", "") and not set(cells[0]) <= set("-:"):
            rows[cells[0]] = line
    return rows


def test_pull_request_gets_a_verdict_comment_and_summary(world):
    repo, reg, gh, runner, v1, v2 = world
    merge, head, payload = open_promotion_pr(repo, gh, v2)

    # calls: tool/.venv/bin/promotion --root pr gate prod   (GITHUB_EVENT_PATH -> PR 7)
    run = runner("gates.yml").run("pull_request", payload, sha=merge, ref="refs/pull/7/merge")
    assert run.jobs["changes"].outputs == {"environments": '["prod"]', "governance": "false"}
    assert run.jobs["governance"].conclusion == "success", run.jobs["governance"].output
    gate = run.jobs["gate (prod)"]
    assert gate.conclusion == "failure" and gate.step("Gate").returncode == 1, gate.output
    assert run.jobs["gates"].conclusion == "failure"
    # everything is judged; only the missing approvals block
    rows = gate_rows(gate.summary)
    blocked = [name for name, line in rows.items() if "PASS" not in line]
    assert blocked == ["approvals"], gate.summary
    for name in ("metrics.f1 vs champion", "drift.psi", "fairness.tpr_gap", "lineage.digest", "promotion_path.staging"):
        assert name in rows, gate.summary
    assert "0 of 2 approval(s)" in rows["approvals"], rows["approvals"]
    assert "::error file=policies/prod.yaml" in gate.output, "the blocking check is annotated on the policy line"
    comments = gh.repo.comments[7]
    assert len(comments) == 1 and "0 of 2 approval(s)" in comments[0]["body"]

    # a new push re-runs the gate: the sticky comment is edited in place, not repeated
    before = len(gh.paths("PATCH"))
    run = runner("gates.yml").run("pull_request", {**payload, "action": "synchronize"}, sha=merge,
                                  ref="refs/pull/7/merge")
    assert run.jobs["gates"].conclusion == "failure"
    assert len(gh.repo.comments[7]) == 1
    assert len(gh.paths("PATCH")) == before + 1 and gh.paths("PATCH")[-1].endswith(f"/issues/comments/{comments[0]['id']}")


def test_a_review_flips_the_verdict(world):
    repo, reg, gh, runner, v1, v2 = world
    merge, head, payload = open_promotion_pr(repo, gh, v2)
    run = runner("gates.yml").run("pull_request", payload, sha=merge, ref="refs/pull/7/merge")
    assert run.jobs["gates"].conclusion == "failure"
    gh.add_review(7, "alice", "APPROVED", commit_id=head)   # the author: never counts
    gh.add_review(7, "bob", "APPROVED", commit_id=head)
    gh.add_review(7, "carol", "APPROVED", commit_id=head)
    review = pull_request_review_payload(repository=gh.full_name, number=7, base_sha=payload["pull_request"]["base"]["sha"],
                                         head_sha=head, reviewer="carol")

    run = runner("gates.yml").run("pull_request_review", review, sha=merge, ref="refs/pull/7/merge")

    gate = run.jobs["gate (prod)"]
    assert gate.conclusion == "success" and gate.step("Gate").returncode == 0, gate.output
    assert run.jobs["gates"].conclusion == "success"
    approvals = gate_rows(gate.summary)["approvals"]
    assert "PASS" in approvals and "2 of 2 approval(s): bob, carol" in approvals, approvals
    assert "alice (author of the pull request)" in approvals
    comments = gh.repo.comments[7]
    assert len(comments) == 1, "the verdict comment is sticky: updated, not repeated"
    assert "PASS" in comments[0]["body"] and "BLOCKED" not in comments[0]["body"]


def test_a_pull_request_naming_its_own_registry_is_judged_with_the_base_registry(world, tmp_path):
    """Reproduction: the PR's registry.tracking_uri won over the workflow's $MLFLOW_TRACKING_URI,
    and the workflow sent MLFLOW_TRACKING_TOKEN to the host the PR named."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    repo, reg, gh, runner, v1, v2 = world
    received = []

    class Attacker(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            received.append((self.path, self.headers.get("Authorization")))
            self.send_response(404)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_POST = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = git(repo, "rev-parse", "HEAD")
        git(repo, "checkout", "-q", "-b", "promote/prod-v2")
        set_version(repo, "prod", v2)
        path = repo / "environments" / "prod.yaml"
        path.write_text(path.read_text().replace(
            "\nserving:", f"\nregistry:\n  tracking_uri: http://127.0.0.1:{server.server_port}\n\nserving:"))
        git(repo, "commit", "-q", "-am", "promote prod to v2 (and use my registry)")
        head = git(repo, "rev-parse", "HEAD")
        git(repo, "checkout", "-q", "main")
        git(repo, "merge", "-q", "--no-ff", "--no-edit", "promote/prod-v2")
        merge = git(repo, "rev-parse", "HEAD")
        git(repo, "reset", "-q", "--hard", base)
        gh.add_pull(7, author="alice", head_sha=head)
        gh.add_review(7, "bob", "APPROVED", commit_id=head)
        gh.add_review(7, "carol", "APPROVED", commit_id=head)
        payload = pull_request_payload(repository=gh.full_name, number=7, base_sha=base, head_sha=head, author="alice")
        wf = WorkflowRunner(
            WORKFLOWS / "gates.yml", repo=repo, workdir=tmp_path / "runs" / "attack", repository=gh.full_name,
            api_url=gh.url, token=gh.token, server_url=tmp_path.as_uri(),
            secrets={"MLFLOW_TRACKING_TOKEN": "mlflow-secret"}, vars={"MLFLOW_TRACKING_URI": reg.uri},
            force_env={"PROMOTION_SIGNER": "local"}, on_checkout=install_venv_shim)

        run = wf.run("pull_request", payload, sha=merge, ref="refs/pull/7/merge")
    finally:
        server.shutdown()
        server.server_close()

    assert received == [], "the pull request's registry host was contacted"
    gate = run.jobs["gate (prod)"]
    rows = gate_rows(gate.summary)
    # judged for real with the workflow's registry: the metrics and lineage of v2 are there
    for name in ("metrics.f1 vs champion", "lineage.digest", "drift.psi", "promotion_path.staging"):
        assert "PASS" in rows[name], gate.summary
    assert "PASS" in rows["approvals"], rows["approvals"]
    assert [name for name, line in rows.items() if "PASS" not in line] == ["governance"], gate.summary
    assert "environments/prod.yaml registry" in rows["governance"] and "split it" in rows["governance"]
    assert run.jobs["changes"].outputs == {"environments": '["prod"]', "governance": "true"}
    assert run.jobs["governance"].conclusion == "failure"
    assert run.jobs["gates"].conclusion == "failure"


def test_push_rolls_out_and_commits_a_record(world, tmp_path):
    from promotion.records import RecordStore

    repo, reg, gh, runner, v1, v2 = world
    with serving(repo, "prod", reg, token=TOKEN, traffic=150) as router:
        assert router.routes() == {v1.version: 100.0}
        merge, head, _ = open_promotion_pr(repo, gh, v2)
        before = git(repo, "rev-parse", "HEAD")
        git(repo, "merge", "-q", "--ff-only", merge)           # the merge lands on main
        bare = remote(tmp_path, repo)
        gh.add_review(7, "bob", "APPROVED", commit_id=head)
        gh.add_review(7, "carol", "APPROVED", commit_id=head)
        gh.merge(7, merge)
        commit = {"id": merge, "tree_id": git(repo, "rev-parse", "HEAD^{tree}"), "distinct": True,
                  "message": "Merge pull request #7 from acme/promote/prod-v2", "timestamp": "2026-01-01T00:00:00Z",
                  "author": {"name": "alice", "email": "alice@example.com", "username": "alice"},
                  "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
                  "added": [], "removed": [], "modified": ["environments/prod.yaml"]}

        # calls: .venv/bin/promotion github changed; .venv/bin/promotion rollout prod;
        #        .venv/bin/promotion github push   (to $GITHUB_SERVER_URL/acme/models.git)
        run = runner("rollout.yml").run(
            "push", push_payload(repository=gh.full_name, before=before, after=merge, commits=[commit]),
            sha=merge, ref="refs/heads/main")

        assert run.jobs["changes"].outputs == {"environments": '["prod"]',
                                               "targets": '[{"target": "prod", "environment": "prod"}]'}
        job = run.jobs["rollout (prod)"]
        assert job.environment == "prod"
        assert job.step("Roll out").returncode == 0, job.output
        assert job.step("Push the record (and the revert after a rollback)").returncode == 0, job.output
        assert job.conclusion == "success"
        assert router.routes() == {v2.version: 100.0}
        assert router.failed() == 0, router.load.totals()
    assert f"/repos/{gh.full_name}/commits/{merge}/pulls" in gh.paths("GET"), "approvals: the merged PR's reviews"
    assert f"## Rollout of {MODEL} v{v2.version} to prod: promoted" in job.summary
    assert "Pushed 1 commit(s) to `main`" in job.summary
    author, subject = git(bare, "log", "-1", "--format=%an%n%s", "main").splitlines()
    assert author == "promotion-bot"
    assert subject == f"promote prod: {MODEL} v{v2.version} (was v{v1.version})"
    assert git(bare, "rev-parse", "main^") == merge
    assert reg.alias(MODEL, "prod") == v2.version and reg.previous(MODEL, "prod") == v1.version
    # the pushed record verifies and names the reviewers of the merged pull request
    mirror = tmp_path / "mirror"
    git(tmp_path, "clone", "-q", str(bare), str(mirror))
    latest = RecordStore(mirror, "prod").latest()
    assert latest.action == "promote" and latest.version == v2.version
    assert sorted(a["login"] for a in latest.predicate["approvers"]) == ["bob", "carol"]
    assert [s["weight"] for s in latest.predicate["steps"]] == [5.0, 25.0, 100.0]


def test_workflow_dispatch_rolls_back(world, tmp_path):
    from promotion.records import RecordStore

    repo, reg, gh, runner, v1, v2 = world
    # v2 went live in prod earlier (its record written directly; the rollout is the test above)
    set_version(repo, "prod", v2)
    reg.set_alias(MODEL, "prod", v2.version)
    record(repo, "prod", v2, previous=v1)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "promote prod: v2")
    reason = "p95 latency doubled; $(touch pwned) `touch pwned2`"
    with serving(repo, "prod", reg, token=TOKEN) as router:
        assert router.routes() == {v2.version: 100.0}
        bare = remote(tmp_path, repo)
        inputs = {"environment": "prod", "version": "", "reason": reason}
        # calls: .venv/bin/promotion rollback prod --reason "$REASON"   (no --to: last known good)
        #        .venv/bin/promotion github push
        run = runner("rollback.yml").run(
            "workflow_dispatch", workflow_dispatch_payload(repository=gh.full_name, inputs=inputs),
            sha=git(repo, "rev-parse", "HEAD"), ref="refs/heads/main", inputs=inputs)
        job = run.jobs["rollback (prod)"]
        assert job.step("Roll back").returncode == 0, job.output
        assert job.step("Push the revert and the record").returncode == 0, job.output
        assert job.conclusion == "success" and job.environment == "prod"
        assert router.routes() == {v1.version: 100.0}
    assert not list(job.workspace.rglob("pwned*")), "the reason reached a shell unquoted"
    author, subject = git(bare, "log", "-1", "--format=%an%n%s", "main").splitlines()
    assert author == "promotion-bot"
    assert subject.startswith(f"rollback prod: {MODEL} v{v2.version} -> v{v1.version}"), subject
    mirror = tmp_path / "mirror"
    git(tmp_path, "clone", "-q", str(bare), str(mirror))
    assert f"version: {v1.version}\n" in (mirror / "environments" / "prod.yaml").read_text(), "the revert is pushed"
    latest = RecordStore(mirror, "prod").latest()
    assert latest.action == "rollback" and latest.version == v1.version
    assert latest.predicate["reason"] == reason, "the reason is recorded verbatim"
    assert reg.alias(MODEL, "prod") == v1.version


def test_a_push_promoting_two_models_rolls_each_out_with_its_own_record_and_deployment(world, tmp_path):
    """prod promotes two models (environments/prod/<model>.yaml, each with its own router,
    policy, records and alias); one merged pull request moves both: the rollout workflow
    runs one job per model, in the GitHub environment prod, and each leaves its own
    record, deployment and bot commit."""
    from promotion.records import RecordStore, write_record
    from services.fraud import train
    from tests.support.fraud_versions import register_tiny

    repo, reg, gh, runner, v1, v2 = world
    eu = "fraud-eu"
    e1, e2 = register_tiny(reg, name=eu), train.register(reg, train.SPECS["v1"], name=eu)
    # prod: one file per model; fraud-eu has its own policy (no staging step for it)
    (repo / "environments" / "prod").mkdir()
    git(repo, "mv", "environments/prod.yaml", f"environments/prod/{MODEL}.yaml")
    text = (repo / "environments" / "prod" / f"{MODEL}.yaml").read_text()
    (repo / "environments" / "prod" / f"{eu}.yaml").write_text(
        text.replace(f"name: {MODEL}", f"name: {eu}").replace("policy: policies/prod.yaml", f"policy: policies/prod/{eu}.yaml"))
    (repo / "policies" / "prod").mkdir()
    policy = (repo / "policies" / "prod.yaml").read_text()
    (repo / "policies" / "prod" / f"{eu}.yaml").write_text(
        policy.replace("promotion_path:\n  requires_record_from: staging", "promotion_path:\n  requires_record_from: null")
        .replace("promotion_path:\n  requires_record_from: null", "promotion_path: {}"))
    set_version(repo, f"prod/{eu}", e1)
    reg.set_alias(eu, "prod", e1.version)
    for name, mv in ((MODEL, v1), (eu, e1)):
        write_record(repo, f"prod/{name}", action="promote", model=name, version=mv.version, digest=mv.digest,
                     from_env=None, to_env=f"prod/{name}", checks=[], approvers=[], steps=[], rollback_target=None,
                     data_snapshot=mv.tags.get("data_snapshot"), code_commit=mv.tags.get("code_commit"),
                     policy_digest=None, source_commit=None)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "prod: one file per model, fraud-eu v1 runs")

    with serving(repo, f"prod/{MODEL}", reg, token=TOKEN, traffic=100, workers=1, state_dir=tmp_path / "r1") as r1, \
            serving(repo, f"prod/{eu}", reg, token=TOKEN, traffic=100, workers=1, state_dir=tmp_path / "r2") as r2:
        base = git(repo, "rev-parse", "HEAD")
        git(repo, "checkout", "-q", "-b", "promote/prod-both")
        set_version(repo, f"prod/{MODEL}", v2)
        set_version(repo, f"prod/{eu}", e2)
        git(repo, "commit", "-q", "-am", "promote fraud-detector and fraud-eu in prod")
        head = git(repo, "rev-parse", "HEAD")
        git(repo, "checkout", "-q", "main")
        git(repo, "merge", "-q", "--no-ff", "--no-edit", "promote/prod-both")
        merge = git(repo, "rev-parse", "HEAD")
        bare = remote(tmp_path, repo)
        gh.add_pull(8, author="alice", head_sha=head)
        for login in ("bob", "carol"):
            gh.add_review(8, login, "APPROVED", commit_id=head)
        gh.merge(8, merge)
        commit = {"id": merge, "tree_id": git(repo, "rev-parse", "HEAD^{tree}"), "distinct": True,
                  "message": "Merge pull request #8 from acme/promote/prod-both", "timestamp": "2026-01-01T00:00:00Z",
                  "author": {"name": "alice", "email": "alice@example.com", "username": "alice"},
                  "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
                  "added": [], "removed": [], "modified": [f"environments/prod/{MODEL}.yaml", f"environments/prod/{eu}.yaml"]}
        run = runner("rollout.yml").run(
            "push", push_payload(repository=gh.full_name, before=base, after=merge, commits=[commit]),
            sha=merge, ref="refs/heads/main")

        assert run.jobs["changes"].outputs["targets"] == json.dumps(
            [{"target": f"prod/{MODEL}", "environment": "prod"}, {"target": f"prod/{eu}", "environment": "prod"}])
        for name in (MODEL, eu):
            job = run.jobs[f"rollout (prod/{name})"]
            assert job.environment == "prod"      # prod's protection rules and secrets apply to each
            assert job.step("Roll out").returncode == 0, job.output
            assert job.conclusion == "success", job.output
        assert r1.routes() == {v2.version: 100.0} and r2.routes() == {e2.version: 100.0}
        assert r1.failed() == 0 and r2.failed() == 0

    assert reg.alias(MODEL, "prod") == v2.version and reg.alias(eu, "prod") == e2.version
    subjects = git(bare, "log", "--format=%s", f"{merge}..main").splitlines()
    assert sorted(subjects) == [f"promote prod/{MODEL}: {MODEL} v{v2.version} (was v{v1.version})",
                                f"promote prod/{eu}: {eu} v{e2.version} (was v{e1.version})"]
    mirror = tmp_path / "mirror"
    git(tmp_path, "clone", "-q", str(bare), str(mirror))
    for name, mv, old in ((MODEL, v2, v1), (eu, e2, e1)):
        latest = RecordStore(mirror, f"prod/{name}").latest()
        assert (latest.action, latest.model, latest.version) == ("promote", name, mv.version)
        assert latest.path.parent == mirror / "environments" / "records" / "prod" / name
        assert latest.predicate["to_environment"] == f"prod/{name}" and latest.predicate["rollback_target"] == old.version
        assert sorted(a["login"] for a in latest.predicate["approvers"]) == ["bob", "carol"]
        deps = [d for d in gh.repo.deployments.values() if d["environment"] == f"prod/{name}"]
        assert [(d["payload"]["version"], gh.deployment_states(d["id"])) for d in deps] == [
            (mv.version, ["in_progress", "success"])], deps
        assert deps[0]["ref"] == merge and deps[0]["payload"]["model"] == name
