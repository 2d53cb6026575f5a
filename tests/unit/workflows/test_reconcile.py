"""``promotion reconcile`` against a loopback router admin API and the real embedded MLflow."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from promotion.cli import main
from tests.unit.workflows.conftest import make_repo

TOKEN = "admin-token"
ZERO = "sha256:" + "0" * 64  # the digest the copied environment files name


def record(repo: Path, action: str, version: int, digest: str = ZERO, target: int | None = None,
           replaced: int | None = None) -> Path:
    """A signed record of prod (local key), committed as the rollout would."""
    from promotion.records import record_related_paths, write_record
    from tests.unit.workflows.conftest import git

    path = write_record(repo, "prod", action=action, model="fraud-detector", version=version, digest=digest,
                        from_env="staging" if action == "promote" else "prod", to_env="prod", checks=[],
                        approvers=[], steps=[], rollback_target=target, replaced_version=replaced,
                        data_snapshot=None, code_commit=None, policy_digest=None, source_commit=None)
    git(repo, "add", "--", *(str(p.relative_to(repo)) for p in record_related_paths(repo, "prod")))
    git(repo, "commit", "-q", "-m", f"{action} prod v{version}")
    return path


def set_version(repo: Path, version: int) -> None:
    env_file = repo / "environments" / "prod.yaml"
    text = env_file.read_text()
    import re

    env_file.write_text(re.sub(r"(?m)^  version: \d+$", f"  version: {version}", text, count=1))


class Router:
    """Speaks the router's admin API: GET/POST /admin/routing (POST needs the Bearer token)."""

    def __init__(self, routes: dict[str, float]) -> None:
        self.state = {"generation": 1, "model": "fraud-detector", "routes": routes, "digests": {},
                      "shadow": None,
                      "workers": [{"pid": 101, "generation": 1, "loaded": [1], "seen_at": 0.0, "ready": True}]}
        self.posts: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != "/admin/routing":
                    return self._send(404, {"error": "not found"})
                # like the real router: every routed version has the digest it verified
                digests = {v: outer.state["digests"].get(v, ZERO) for v in outer.state["routes"]}
                self._send(200, {**outer.state, "digests": digests})

            def do_POST(self):
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"error": "unauthorized"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.posts.append(body)
                outer.state.update(routes=body["routes"], digests=body["digests"], shadow=body["shadow"],
                                   generation=outer.state["generation"] + 1)
                # like the real router's workers, which apply the new generation at once
                for worker in outer.state["workers"]:
                    worker["generation"] = outer.state["generation"]
                # the answer is the persisted routing, without the workers' view
                self._send(200, {k: v for k, v in outer.state.items() if k != "workers"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def registry_state(tmp_path_factory):
    """An embedded MLflow registry with fraud-detector versions 1 and 2 (built once)."""
    from promotion.registry import Registry

    state = tmp_path_factory.mktemp("state")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROMOTION_STATE", str(state))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    reg = Registry.for_root(state)
    reg.client.create_registered_model("fraud-detector")
    for _ in (1, 2):
        reg.client.create_model_version("fraud-detector", source=(state / "artifact").as_uri())
    mp.undo()
    return state


@pytest.fixture
def world(tmp_path, monkeypatch, registry_state):
    from promotion.registry import Registry

    monkeypatch.setenv("PROMOTION_STATE", str(registry_state))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PROMOTION_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("PROMOTION_RECONCILE_CONVERGE", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    repo = make_repo(tmp_path / "repo")
    router = Router({"1": 100.0})
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("http://127.0.0.1:3000", router.url))
    reg = Registry.for_root(repo)
    reg.set_alias("fraud-detector", "prod", 1)
    record(repo, "promote", 1)  # v1 came to prod through a rollout
    yield repo, router, reg
    router.close()


def reconcile(repo, *args, capsys):
    code = main(["--root", str(repo), "reconcile", "prod", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_in_sync_exits_0(world, capsys):
    repo, router, _ = world
    code, out, _ = reconcile(repo, capsys=capsys)
    assert code == 0 and "prod: in_sync" in out


def test_drift_in_routing_and_alias_is_reported_not_fixed(world, capsys):
    repo, router, reg = world
    router.state["routes"] = {"2": 100.0}  # someone moved traffic by hand
    code, out, err = reconcile(repo, "--json", capsys=capsys)
    assert code == 1 and "drift in prod (drift)" in err
    report = json.loads(out)["environments"][0]
    assert report["state"] == "drift" and report["live"] == {"routes": {"2": 100.0}, "champion": 2, "alias": 1}
    assert report["desired"]["record"] == "000001-promote-v1.json"
    assert any("version 2 serves 100%, git wants 1" in p for p in report["problems"])
    assert router.posts == [] and reg.alias("fraud-detector", "prod") == 1


def test_a_data_plane_that_does_not_apply_its_split_is_drift(world, capsys):
    """The file and the split agree, but a worker still serves an older generation: the
    split git wants is not what clients get, so reconcile says so (and converge rewrites it)."""
    repo, router, _ = world
    router.state["generation"] = 3
    router.state["workers"][0]["generation"] = 2  # one worker never applied the last write
    code, out, err = reconcile(repo, "--json", capsys=capsys)
    assert code == 1 and "drift in prod" in err
    report = json.loads(out)["environments"][0]
    assert report["state"] == "drift"
    assert any("does not serve the split it was given (generation 3)" in p for p in report["problems"])
    assert router.posts == []
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "prod: converged" in out  # drift was found (and fixed): the job says so
    assert [p["routes"] for p in router.posts] == [{"1": 100.0}]
    code, out, _ = reconcile(repo, capsys=capsys)
    assert code == 0 and "prod: in_sync" in out


def test_converge_never_deploys_a_version_no_record_put_there(world, capsys):
    """A merge that skipped the gates names v2: reconcile leaves it to the rollout, which judges it."""
    repo, router, reg = world
    set_version(repo, 2)
    code, out, err = reconcile(repo, "--converge", "--json", capsys=capsys)
    assert code == 1 and "drift in prod (rollout_pending)" in err
    report = json.loads(out)["environments"][0]
    assert report["state"] == "rollout_pending" and report["actions"] == []
    assert report["problems"][0].startswith("rollout pending: environments/prod.yaml names v2")
    assert "the last record 000001-promote-v1.json put v1" in report["problems"][0]
    assert router.posts == [] and reg.alias("fraud-detector", "prod") == 1


def test_converge_refuses_a_version_whose_last_record_rejected_it(world, capsys):
    repo, router, reg = world
    set_version(repo, 2)
    record(repo, "reject", 2, target=None, replaced=2)  # a first deployment rejected: nothing to restore
    router.state["routes"] = {"2": 100.0}
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "prod: unrecorded" in out
    assert f"no verified promote record for prod v2 {ZERO}: run the rollout" in out
    assert router.posts == [] and reg.alias("fraud-detector", "prod") == 1


def test_records_that_do_not_verify_authorise_nothing(world, capsys):
    repo, router, reg = world
    path = record(repo, "promote", 2, target=1)
    set_version(repo, 2)
    path.write_text(path.read_text().replace("A", "B", 1))  # one byte of the signed content
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "prod: unrecorded" in out and "do not verify" in out
    assert router.posts == [] and reg.alias("fraud-detector", "prod") == 1


def test_converge_restores_the_version_a_rollback_record_put_back(world, capsys):
    repo, router, reg = world
    record(repo, "promote", 2, target=1)
    record(repo, "rollback", 1, target=1, replaced=2)
    router.state["routes"] = {"2": 100.0}  # traffic drifted back to the rolled-back version
    reg.set_alias("fraud-detector", "prod", 2)
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "prod: converged" in out, out
    assert router.posts == [{"routes": {"1": 100.0}, "digests": {"1": ZERO}, "shadow": None}]
    assert reg.alias("fraud-detector", "prod") == 1


def test_converge_moves_traffic_with_the_digest_and_the_alias(world, capsys, tmp_path, monkeypatch):
    repo, router, reg = world
    set_version(repo, 2)
    record(repo, "promote", 2, target=1)  # recorded; then traffic and alias were put back by hand
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("PROMOTION_RECONCILE_CONVERGE", "dev,prod")
    code, out, _ = reconcile(repo, capsys=capsys)
    assert code == 1 and "prod: converged" in out
    assert router.posts == [{"routes": {"2": 100.0}, "digests": {"2": "sha256:" + "0" * 64}, "shadow": None}]
    assert reg.alias("fraud-detector", "prod") == 2 and reg.previous("fraud-detector", "prod") == 1
    assert "| prod | fraud-detector v2 |" in summary.read_text()
    code, out, _ = reconcile(repo, capsys=capsys)
    assert code == 0, out


def test_a_canary_of_the_desired_version_is_left_to_the_rollout(world, capsys):
    repo, router, reg = world
    set_version(repo, 2)
    router.state["routes"] = {"1": 75.0, "2": 25.0}
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "rollout_pending" in out and "canary at 25%" in out
    assert router.posts == []
    record(repo, "promote", 2, target=1)  # recorded, yet a canary again: a stopped rollout of it
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "rollout_in_progress" in out and "canary at 25%" in out
    assert router.posts == []


def test_unreachable_service_is_drift_not_silence(world, capsys):
    repo, router, _ = world
    router.close()
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "prod: unknown" in out and "cannot reach the service" in out


def test_converge_without_the_admin_token_says_so(world, capsys, monkeypatch):
    repo, router, _ = world
    monkeypatch.delenv("PROMOTION_ADMIN_TOKEN")
    router.state["routes"] = {"3": 100.0}
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "admin token" in out and router.posts == []


def test_converge_setting_names_environments():
    from promotion.commands.reconcile import converge_allowed

    assert converge_allowed("prod", None, "dev, staging") is False
    assert converge_allowed("staging", None, "dev, staging") is True
    assert converge_allowed("prod", None, "true") is True
    assert converge_allowed("prod", False, "true") is False


# -- the workflow ------------------------------------------------------------------------


def _workflow() -> dict:
    import yaml

    from tests.unit.workflows.conftest import WORKFLOWS

    return yaml.safe_load((WORKFLOWS / "reconcile.yml").read_text())


def test_the_job_that_can_converge_runs_inside_the_environment_it_acts_on():
    jobs = _workflow()["jobs"]
    converging = [j for j in jobs.values() if "PROMOTION_ADMIN_TOKEN" in str(j.get("env"))
                  or any("reconcile" in s.get("run", "") and "--list" not in s.get("run", "") for s in j["steps"])]
    assert len(converging) == 1
    job = converging[0]
    assert job["environment"] == "${{ matrix.environment }}"
    # one entry per environment file: the command takes the file's name (prod/<model> for one of
    # several models), the protection rules and secrets are the GitHub environment's (prod)
    assert job["strategy"]["matrix"] == {"include": "${{ fromJSON(needs.environments.outputs.targets) }}"}
    assert job["strategy"]["fail-fast"] is False
    assert job["env"]["ENVIRONMENT"] == "${{ matrix.target }}"
    assert job["steps"][-1]["run"] == '.venv/bin/promotion reconcile "$ENVIRONMENT" --issue'
    assert job["permissions"] == {"contents": "read", "issues": "write"}


def test_the_job_that_lists_environments_holds_no_secret_and_reads_only():
    job = _workflow()["jobs"]["environments"]
    assert job["permissions"] == {"contents": "read"}
    assert "environment" not in job and "secrets." not in str(job)
    assert job["outputs"]["environments"] == "${{ steps.list.outputs.environments }}"
    assert [s["run"] for s in job["steps"] if s.get("id") == "list"] == [".venv/bin/promotion reconcile --list"]


def test_list_prints_the_environments_and_sets_the_step_output(world, capsys, tmp_path, monkeypatch):
    repo, router, reg = world
    output = tmp_path / "output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert main(["--root", str(repo), "reconcile", "--list"]) == 0
    assert json.loads(capsys.readouterr().out) == ["dev", "prod", "staging"]
    assert output.read_text().splitlines() == [
        'environments=["dev", "prod", "staging"]',
        'targets=' + json.dumps([{"target": e, "environment": e} for e in ("dev", "prod", "staging")])]
    assert router.posts == []
    assert main(["--root", str(repo), "reconcile", "nope", "--list"]) == 2
    assert "environments/nope.yaml:1 (document): no such environment" in capsys.readouterr().err
