"""The gateway-api backend: weights committed to git (only the manifests), pushed without
losing or forcing a commit, verified from observed traffic, read back from git."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from promotion.config import Project
from promotion.errors import ConfigError, ServiceError
from promotion.metrics.base import Snapshot, VersionCounters
from promotion.traffic import backend_for
from promotion.traffic.base import Mirror, TrafficBackend
from promotion.traffic.gateway_api import GatewayApiBackend
from promotion.traffic.observed_split import CONTRADICTS, MATCHES, UNDECIDED, expected_shares, judge_split

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
BLOCK = """serving:
  kind: gateway-api
  endpoint: http://127.0.0.1:18080
  manifests_dir: deploy/prod
  route_name: fraud
  namespace: ml
  parent_ref: ml-gateway
  service_pattern: fraud-v{version}
  port: 3000
  verify: {min_requests: 100, poll_s: 0.05}
"""
METRICS = "metrics:\n  source: prometheus\n  url: http://127.0.0.1:9\n"


def git(root, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def write_env(repo, block: str = BLOCK, metrics: str = METRICS) -> None:
    path = repo / "environments" / "prod.yaml"
    text = path.read_text()
    path.write_text(text[:text.index("serving:")] + block + metrics)
    git(repo, "commit", "-qam", "prod on gateway-api")


class Traffic:
    """Counts served per version as a data plane applying ``split`` would (exact shares),
    behind the MetricsProvider contract; ``serve`` moves its clock on."""

    def __init__(self) -> None:
        self.t, self.counts, self.split = 1000.0, {}, {1: 100.0}

    def serve(self, n: int, split: dict[int, float] | None = None) -> None:
        for v, w in (split or self.split).items():
            self.counts[v] = self.counts.get(v, 0.0) + round(n * w / 100)
        self.t += 1

    def now(self) -> float:
        return self.t

    def snapshot(self) -> Snapshot:
        self.serve(50)
        return Snapshot(self.t, {v: VersionCounters(requests=c) for v, c in self.counts.items()})

    def is_online(self) -> bool:
        return True


@pytest.fixture
def backend(repo) -> GatewayApiBackend:
    write_env(repo)
    b = backend_for(Project(repo).environment("prod"))
    b.metrics = Traffic()
    b.prepare(1, D1)
    b.prepare(2, D2)
    return b


def test_an_environment_of_kind_gateway_api_builds_this_backend(repo):
    write_env(repo)
    b = backend_for(Project(repo).environment("prod"))
    assert isinstance(b, GatewayApiBackend) and isinstance(b, TrafficBackend)
    assert b.route_path == "deploy/prod/fraud.httproute.yaml" and b.spec.service(7) == "fraud-v7"


def test_the_split_is_read_from_prometheus_or_refused(repo):
    write_env(repo, metrics="metrics:\n  source: scrape\n  url: http://127.0.0.1:3000/metrics\n")
    with pytest.raises(ConfigError, match=r"environments/prod.yaml:\d+ metrics.source: serving.kind gateway-api"):
        backend_for(Project(repo).environment("prod"))


@pytest.mark.parametrize("field, value, message", [
    ("manifests_dir", "../outside", "serving.manifests_dir: '../outside' does not match"),
    ("manifests_dir", ".github/workflows", "serving.manifests_dir: '.github/workflows' does not match"),
    ("route_name", "Fraud_Route", "serving.route_name: 'Fraud_Route' does not match"),
    ("weigths", "{}", "serving: unknown field(s): weigths"),
])
def test_a_bad_field_is_a_file_line_error(repo, field, value, message):
    block = BLOCK.replace(f"  {field}: ", f"  {field}: {value}  # ") if f"  {field}: " in BLOCK else BLOCK + f"  {field}: {value}\n"
    write_env(repo, block)
    with pytest.raises(ConfigError) as caught:
        Project(repo).environment("prod")
    assert any(p.startswith("environments/prod.yaml:") and message in p for p in caught.value.problems), caught.value.problems


def test_a_folder_the_promotion_trusts_is_refused(repo):
    write_env(repo, BLOCK.replace("deploy/prod", "policies/prod"))
    with pytest.raises(ServiceError, match="inside policies/, which the promotion itself trusts"):
        backend_for(Project(repo).environment("prod"))
    (repo / "deploy").symlink_to(repo / "environments")
    write_env(repo, BLOCK)
    with pytest.raises(ServiceError, match="deploy is a symbolic link; refused"):
        backend_for(Project(repo).environment("prod"))


def test_set_weights_commits_only_the_route_and_reads_it_back(backend, repo):
    (repo / "unrelated.txt").write_text("staged by someone else\n")
    git(repo, "add", "unrelated.txt")
    first = backend.set_weights({1: 100.0})
    applied = backend.set_weights({1: 95.0, 2: 5.0}, canary=2)
    assert (first.generation, applied.generation, applied.canary) == (1, 2, 2)
    assert git(repo, "log", "-2", "--format=%s").splitlines() == [
        "traffic prod: v1=95%, v2=5% (generation 2)", "traffic prod: v1=100% (generation 1)"]
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["deploy/prod/fraud.httproute.yaml"]
    assert "unrelated.txt" in git(repo, "diff", "--cached", "--name-only")  # still staged, not swept in
    route = yaml.safe_load(git(repo, "show", "HEAD:deploy/prod/fraud.httproute.yaml"))
    assert [(r["name"], r["weight"]) for r in route["spec"]["rules"][1]["backendRefs"]] == [
        ("fraud-v1", 950_000), ("fraud-v2", 50_000)]
    now = backend.current()
    assert (now.generation, now.weights, now.digests) == (2, {1: 95.0, 2: 5.0}, {1: D1, 2: D2})
    # the same split again changes nothing: no empty commit, the same generation
    head = git(repo, "rev-parse", "HEAD")
    assert backend.set_weights({1: 95.0, 2: 5.0}, canary=2).generation == 2 and git(repo, "rev-parse", "HEAD") == head


def test_current_reads_git_not_the_work_tree(backend, repo):
    backend.set_weights({1: 100.0})
    (repo / backend.route_path).write_text("edited by hand, not committed\n")
    assert backend.current().weights == {1: 100.0}


def test_refusals_change_nothing(backend, repo):
    backend.set_weights({1: 100.0})
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(ServiceError, match="v3 not prepared; traffic not changed"):
        backend.set_weights({1: 90.0, 3: 10.0})
    with pytest.raises(ServiceError, match="weights must sum to 100"):
        backend.set_weights({1: 90.0, 2: 5.0})
    with pytest.raises(ServiceError, match="the route is at generation 1, not 0"):
        backend.set_weights({1: 90.0, 2: 10.0}, based_on=0)
    assert git(repo, "rev-parse", "HEAD") == head


def test_verify_waits_for_traffic_that_fits_the_new_split(backend):
    backend.set_weights({1: 100.0})
    applied = backend.set_weights({1: 80.0, 2: 20.0}, canary=2)
    backend.metrics.split = {1: 80.0, 2: 20.0}
    assert backend.verify(applied, timeout_s=5) < 5


def test_verify_times_out_while_traffic_keeps_the_old_split(backend):
    backend.set_weights({1: 100.0})
    applied = backend.set_weights({1: 50.0, 2: 50.0}, canary=2)
    with pytest.raises(ServiceError, match=r"v1=50%, v2=50% \(generation 2\) committed but not observed in served "
                                           r"traffic within 0.5s: v1 served 100.00% of 100 requests at share 50.00% \(sample ratio mismatch"):
        backend.verify(applied, timeout_s=0.5)


def test_a_mirror_is_rendered_and_counted_in_the_expected_shares(backend, repo):
    applied = backend.set_weights({1: 100.0}, Mirror(2, 100.0))
    route = yaml.safe_load(git(repo, "show", "HEAD:deploy/prod/fraud.httproute.yaml"))
    assert route["spec"]["rules"][0]["filters"][0]["requestMirror"]["backendRef"]["name"] == "fraud-v2"
    assert backend.current().mirror == Mirror(2, 100.0)
    backend.metrics.split = {1: 100.0, 2: 100.0}  # every request, and its copy
    assert backend.verify(applied, timeout_s=5) < 5


def test_the_sample_ratio_judgement():
    new, old = expected_shares({1: 95.0, 2: 5.0}), expected_shares({1: 100.0})
    assert judge_split({1: 95, 2: 5}, new, previous=old, min_requests=200).state == UNDECIDED
    assert judge_split({1: 950, 2: 50}, new, previous=old).state == MATCHES
    assert judge_split({1: 1000}, new, previous=old).state == CONTRADICTS
    assert judge_split({1: 700, 2: 300}, new).state == CONTRADICTS
    # 90/10 after 95/5: 200 requests fit both, so they prove nothing yet
    assert judge_split({1: 181, 2: 19}, expected_shares({1: 90.0, 2: 10.0}), previous=new).state == UNDECIDED
    # a rollback: a few canary-header requests are tolerated, the old split is not
    back = expected_shares({1: 100.0})
    assert judge_split({1: 995, 2: 5}, back, previous=new).state == MATCHES
    assert judge_split({1: 950, 2: 50}, back, previous=new).state == CONTRADICTS
    assert expected_shares({1: 100.0}, Mirror(2, 25.0)) == {1: 0.8, 2: 0.2}


def bare_remote(repo, tmp_path):
    remote = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    return remote


def other_clone(remote, tmp_path, name="other"):
    clone = tmp_path / name
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True)
    return clone


def test_every_weight_commit_is_pushed_and_a_race_is_rebased_not_lost(repo, tmp_path):
    remote = bare_remote(repo, tmp_path)
    write_env(repo, BLOCK + "  push: {remote: origin, branch: main}\n")
    git(repo, "push", "-q", "origin", "main")
    b = backend_for(Project(repo).environment("prod"))
    b.metrics = Traffic()
    b.prepare(1, D1)
    b.prepare(2, D2)
    b.set_weights({1: 100.0})
    assert git(remote, "log", "-1", "--format=%s", "main").strip() == "traffic prod: v1=100% (generation 1)"
    # meanwhile someone merges an unrelated change
    other = other_clone(remote, tmp_path)
    (other / "README.md").write_text("a merged change\n")
    git(other, "add", "README.md")
    git(other, "commit", "-qm", "a merged change")
    git(other, "push", "-q", "origin", "main")
    b.set_weights({1: 90.0, 2: 10.0}, canary=2)
    assert git(remote, "log", "--format=%s", "main").splitlines()[:3] == [
        "traffic prod: v1=90%, v2=10% (generation 2)", "a merged change", "traffic prod: v1=100% (generation 1)"]
    assert git(repo, "rev-parse", "HEAD") == git(remote, "rev-parse", "main")


def test_a_conflicting_route_change_on_the_remote_is_reported_never_forced(repo, tmp_path):
    remote = bare_remote(repo, tmp_path)
    write_env(repo, BLOCK + "  push: {remote: origin, branch: main}\n")
    git(repo, "push", "-q", "origin", "main")
    b = backend_for(Project(repo).environment("prod"))
    b.metrics = Traffic()
    b.prepare(1, D1)
    b.prepare(2, D2)
    b.set_weights({1: 100.0})
    other = other_clone(remote, tmp_path)
    route = other / "deploy/prod/fraud.httproute.yaml"
    route.write_text(route.read_text().replace("1000000", "999999"))
    git(other, "commit", "-qam", "a hand edit of the route")
    git(other, "push", "-q", "origin", "main")
    remote_head = git(remote, "rev-parse", "main")
    with pytest.raises(ServiceError, match=r"conflict with newer commits on main .*weights committed locally "
                                           r"\([0-9a-f]{12}\), nothing pushed, nothing force-pushed"):
        b.set_weights({1: 50.0, 2: 50.0}, canary=2)
    assert git(remote, "rev-parse", "main") == remote_head  # the other commit is not lost
    assert git(repo, "log", "-1", "--format=%s").strip() == "traffic prod: v1=50%, v2=50% (generation 2)"
    assert not (repo / ".git" / "rebase-merge").exists() and git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("rollout", ["strategy: blue_green", "shadow"])
def test_a_shadow_phase_on_gateway_api_is_refused_before_anything_moves(repo, capsys, rollout):
    """A RequestMirror copy never meets the champion's answer, so agreement could never be
    judged: the rollout refuses the policy (exit 2) instead of failing every shadow phase."""
    from promotion.cli import main

    write_env(repo)
    policy = repo / "policies" / "prod.yaml"
    text = policy.read_text()
    if rollout == "shadow":
        text = text.replace("rollout:\n", "rollout:\n  shadow: {min_requests: 50, min_agreement: 0.95}\n", 1)
    else:
        text = text.replace("  strategy: steps\n", "  strategy: blue_green\n", 1)
    policy.write_text(text)
    assert main(["--root", str(repo), "rollout", "prod"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("policies/prod.yaml:") and "a shadow phase cannot be judged with serving.kind gateway-api" in err
    assert not (repo / "deploy").exists()
