"""`promotion gate`, `approve` and `propose` on a real MLflow sqlite registry and real git.

Three versions are registered once per session: v1 (the champion), v2 (a comparable
challenger) and v3 (needs one more input feature and carries no lineage tags).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from promotion import cli
from tests.support.github_fake import GitHubFake

PASSING_POLICY = """\
# test policy: thresholds the tiny test models can meet
apiVersion: promotion/v1
environment: prod
gates:
  metrics:
    absolute:
      recall: {min: 0.95}
      fpr: {max: 0.06}
      latency_p95_ms: {max: 1000}
    relative:
      f1: {min_ratio: 0.9}
      auc: {max_drop: 0.01}
  drift: {psi_max: 0.2, ks_p_min: 0.01, prediction_psi_max: 0.2}
  fairness: {tpr_gap_max: 0.1, fpr_gap_max: 0.03}
  schema: {allow_added_optional: true}
  lineage: {}
  approvals: {required: 2}
rollout:
  strategy: steps
  steps: [{weight: 100}]
slo: {}
"""


def register_with_extra(reg, optional: bool):
    """A version whose signature has one more input, ``session_risk``; no lineage tags."""
    import mlflow
    import mlflow.xgboost
    import numpy as np
    import xgboost as xgb
    from mlflow.models import infer_signature

    from promotion.registry import EXPERIMENT
    from services.fraud import data

    frame = data.generate(4000, seed=106)
    frame["session_risk"] = np.random.default_rng(1).random(len(frame))
    features = [*data.FEATURES, "session_risk"]
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=2).fit(frame[features], frame[data.LABEL])
    example = frame[features].head(50).copy()
    if optional:
        example.loc[example.index[::2], "session_risk"] = None
    mlflow.set_tracking_uri(reg.uri)
    mlflow.set_registry_uri(reg.uri)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    with mlflow.start_run(experiment_id=exp.experiment_id):
        mlflow.xgboost.log_model(model, name="model", signature=infer_signature(example, model.predict_proba(example)[:, 1]),
                                 pip_requirements=["xgboost"], registered_model_name="fraud-detector")


@pytest.fixture(scope="session")
def registry_template(tmp_path_factory):
    from promotion.registry import Registry
    from services.fraud import data, train

    root = tmp_path_factory.mktemp("gate-registry")
    state = root / "state"
    old = os.environ.get("PROMOTION_STATE")
    os.environ["PROMOTION_STATE"] = str(state)
    try:
        reg = Registry(tracking_uri=f"sqlite:///{state}/mlflow.db", root=root)
        state.mkdir(exist_ok=True)
        reg.artifact_root = (state / "mlartifacts").as_uri()
        train.register(reg, train.SPECS["tiny"])
        train.register(reg, train.Spec(8000, 25, 3, 0.3, seed=105, description="tiny challenger"))
        register_with_extra(reg, optional=False)  # v3
        register_with_extra(reg, optional=True)   # v4
        digests = {v: reg.artifact_digest("fraud-detector", v) for v in (1, 2, 3, 4)}
    finally:
        if old is None:
            os.environ.pop("PROMOTION_STATE", None)
        else:
            os.environ["PROMOTION_STATE"] = old
    windows = root / "windows"
    windows.mkdir()
    data.generate(3000, seed=7).to_parquet(windows / "steady.parquet")
    data.generate(3000, seed=8, shift=1.0).to_parquet(windows / "shifted.parquet")
    return state, digests, windows


@pytest.fixture
def setup(registry_template, repo, tmp_path, monkeypatch):
    """A repo whose prod environment proposes v2 over champion v1, with a steady window."""
    from promotion.registry import Registry

    state, digests, windows = registry_template
    mine = tmp_path / "state"
    mine.mkdir(exist_ok=True)
    shutil.copy(state / "mlflow.db", mine / "mlflow.db")
    shutil.copytree(state / "artifacts", mine / "artifacts")
    monkeypatch.setenv("PROMOTION_STATE", str(mine))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mine}/mlflow.db")
    reg = Registry(root=repo)
    reg.set_alias("fraud-detector", "prod", 1)
    (repo / "policies" / "prod.yaml").write_text(PASSING_POLICY)
    shutil.copy(windows / "steady.parquet", repo / "window.parquet")
    set_env(repo, 2, digests[2], window="window.parquet")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "propose v2")
    return repo, reg, digests, windows


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def set_env(repo: Path, version: int, digest: str, window: str | None = None) -> None:
    path = repo / "environments" / "prod.yaml"
    text = path.read_text()
    text = re.sub(r"version: \d+", f"version: {version}", text, count=1)
    text = re.sub(r"digest: sha256:[0-9a-f]{64}", f"digest: {digest}", text, count=1)
    if window and "production_window" not in text:
        text += f"\ndrift:\n  production_window: {window}\n"
    path.write_text(text)


def gate(repo, *args, capsys):
    code = cli.main(["--root", str(repo), "gate", "prod", *args])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> dict[str, list[str]]:
    """check name -> [value, threshold, verdict] from the plain table."""
    found = {}
    for line in out.splitlines()[2:]:
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) >= 4:
            found[parts[0]] = parts[1:4]
    return found


def approve(repo, *names):
    from promotion.commands import approve as approve_cmd

    for name in names:
        parser = cli._Parser(prog="promotion approve")
        approve_cmd.add_arguments(parser)
        args = parser.parse_args(["prod", "--by", name])
        args.root = str(repo)
        assert approve_cmd.run(args) == 0


def test_gate_passes_with_two_local_approvals_and_says_not_for_production(setup, capsys):
    repo, _, _, _ = setup
    code, out, err = gate(repo, capsys=capsys)
    assert code == 1
    assert rows(out)["approvals"] == ["0", ">= 2", "BLOCK"]
    approve(repo, "bob", "Test Author", "carol")  # the author of the env change does not count
    capsys.readouterr()
    code, out, err = gate(repo, capsys=capsys)
    table = rows(out)
    assert code == 0, out
    assert "gate prod: fraud-detector v2 (champion v1, registry alias 'prod'): PASS" in out
    assert table["approvals"] == ["2", ">= 2", "PASS"]
    assert "Test Author (author of the last change to environments/prod.yaml)" in out
    assert "local approvals: NOT FOR PRODUCTION" in err
    for name in ("metrics.recall", "metrics.f1 vs champion", "drift.psi", "drift.ks_p", "drift.prediction_psi",
                 "fairness.tpr_gap", "schema.removed_features", "lineage.digest"):
        assert table[name][2] == "PASS", (name, table[name])


def test_json_output(setup, capsys):
    repo, _, _, _ = setup
    code, out, _ = gate(repo, "--json", "--only", "metrics", "--only", "lineage", capsys=capsys)
    doc = json.loads(out)
    assert code == 0 and doc["verdict"] == "PASS" and doc["champion"] == 1 and doc["challenger"] == 2
    assert [g["gate"] for g in doc["gates"]] == ["metrics", "lineage"]
    recall = doc["gates"][0]["checks"][0]
    assert recall["name"] == "metrics.recall" and recall["threshold"] == ">= 0.95" and recall["line"] == 7


def test_metrics_block_against_thresholds_and_champion(setup, capsys):
    repo, _, _, _ = setup
    policy = repo / "policies" / "prod.yaml"
    policy.write_text(PASSING_POLICY.replace("fpr: {max: 0.06}", "fpr: {max: 0.02}").replace("min_ratio: 0.9", "min_ratio: 1.5"))
    code, out, _ = gate(repo, "--only", "metrics", capsys=capsys)
    table = rows(out)
    assert code == 1
    assert table["metrics.fpr"][1:] == ["<= 0.02", "BLOCK"]
    assert table["metrics.f1 vs champion"][2] == "BLOCK" and "1.5 x v1" in table["metrics.f1 vs champion"][1]
    assert table["metrics.recall"][2] == "PASS"


def test_missing_metric_blocks(setup, capsys):
    repo, _, _, _ = setup
    policy = repo / "policies" / "prod.yaml"
    policy.write_text(PASSING_POLICY.replace("recall: {min: 0.95}", "recall: {min: 0.95}\n      brier: {max: 0.1}"))
    code, out, _ = gate(repo, "--only", "metrics", capsys=capsys)
    assert code == 1
    assert "cannot decide: metric 'brier' is missing from v2 in the registry" in out


def test_drift_unshifted_passes_and_shifted_blocks_naming_features(setup, capsys):
    repo, _, _, windows = setup
    code, out, _ = gate(repo, "--only", "drift", capsys=capsys)
    assert code == 0, out
    shutil.copy(windows / "shifted.parquet", repo / "window.parquet")
    code, out, _ = gate(repo, "--only", "drift", "--json", capsys=capsys)
    doc = json.loads(out)
    assert code == 1
    checks = {c["name"]: c for c in doc["gates"][0]["checks"]}
    assert checks["drift.psi"]["verdict"] == "BLOCK" and checks["drift.psi"]["value"] >= 0.2
    assert checks["drift.ks_p"]["verdict"] == "BLOCK"
    blocking = set(doc["gates"][0]["details"]["blocking_features"])
    # the features data.generate(shift=...) moves, and not the ones it leaves alone
    assert {"amount", "merchant_risk", "distance_km", "velocity_1h", "intl"} <= blocking
    assert not blocking & {"card_present", "account_age_days"}
    assert "amount" in checks["drift.psi"]["message"]
    assert checks["drift.psi"]["file"] == "policies/prod.yaml"


def test_drift_without_window_or_with_too_few_rows_blocks(setup, capsys):
    repo, _, digests, _ = setup
    import pandas as pd

    pd.read_parquet(repo / "window.parquet").head(100).to_parquet(repo / "window.parquet")
    code, out, _ = gate(repo, "--only", "drift", capsys=capsys)
    assert code == 1 and "the production window has 100 rows; at least 500 are needed" in out
    text = (repo / "environments" / "prod.yaml").read_text()
    (repo / "environments" / "prod.yaml").write_text(text.split("\ndrift:")[0] + "\n")
    code, out, _ = gate(repo, "--only", "drift", capsys=capsys)
    assert code == 1 and "names no drift.production_window" in out


def test_drift_reads_an_inference_log_directory(setup, capsys):
    repo, _, _, windows = setup
    import pandas as pd

    frame = pd.read_parquet(windows / "steady.parquet")
    logs = repo / "logs"
    logs.mkdir()
    feats = [c for c in frame.columns if c not in ("segment", "is_fraud")]
    with open(logs / "2026-01-01.jsonl", "w") as fh:
        for rec in frame[feats].to_dict("records"):
            fh.write(json.dumps({"features": rec, "score": 0.1, "version": 1}) + "\n")
    text = (repo / "environments" / "prod.yaml").read_text().replace("production_window: window.parquet", "production_window: logs")
    (repo / "environments" / "prod.yaml").write_text(text)
    code, out, _ = gate(repo, "--only", "drift", capsys=capsys)
    assert code == 0, out
    assert "(3000 production rows)" in out


def test_schema_blocks_a_new_required_feature(setup, capsys):
    repo, _, digests, _ = setup
    set_env(repo, 3, digests[3])
    code, out, _ = gate(repo, "--only", "schema", "--only", "lineage", capsys=capsys)
    table = rows(out)
    assert code == 1
    assert table["schema.added_features"][2] == "BLOCK"
    assert "new required input(s) callers do not send: session_risk" in out
    assert table["schema.removed_features"][2] == "PASS"
    assert table["lineage.tags"] == ["0/5", "all present", "BLOCK"]
    assert "v3 lacks: data_snapshot, code_commit, params, env_lock, artifact_digest" in out


def test_schema_passes_a_new_optional_feature(setup, capsys):
    repo, _, digests, _ = setup
    set_env(repo, 4, digests[4])
    code, out, _ = gate(repo, "--only", "schema", capsys=capsys)
    assert code == 0, out
    assert rows(out)["schema.added_features"] == ["1", "optional only", "PASS"]
    assert "added optional: session_risk" in out


def test_schema_blocks_a_removed_feature(setup, capsys):
    repo, reg, digests, _ = setup
    reg.set_alias("fraud-detector", "prod", 3)  # champion has session_risk; v2 lacks it
    code, out, _ = gate(repo, "--only", "schema", capsys=capsys)
    assert code == 1
    assert rows(out)["schema.removed_features"][2] == "BLOCK" and "removed since v3: session_risk" in out


def test_digest_that_does_not_match_blocks(setup, capsys):
    repo, _, digests, _ = setup
    set_env(repo, 2, "sha256:" + "0" * 64)
    code, out, _ = gate(repo, "--only", "lineage", capsys=capsys)
    assert code == 1
    assert rows(out)["lineage.digest"][2] == "BLOCK"
    assert f"says sha256:{'0' * 64} but the artifact of v2 in the registry is {digests[2]}" in out


def test_version_that_does_not_exist_blocks_every_gate(setup, capsys):
    repo, _, _, _ = setup
    set_env(repo, 99, "sha256:" + "1" * 64)
    code, out, _ = gate(repo, "--json", capsys=capsys)
    doc = json.loads(out)
    assert code == 1 and doc["verdict"] == "BLOCK"
    for g in doc["gates"]:
        if g["gate"] in ("metrics", "drift", "fairness", "schema", "lineage"):
            assert g["verdict"] == "BLOCK"
            assert "model fraud-detector version 99: does not exist in the registry" in g["checks"][0]["message"]


def test_champion_falls_back_to_the_base_branch_without_an_alias(setup, capsys):
    repo, reg, digests, _ = setup
    reg.client.delete_registered_model_alias("fraud-detector", "prod")
    git(repo, "branch", "base-branch", "HEAD~1")  # env file there still names v1
    code, out, _ = gate(repo, "--only", "metrics", "--base", "base-branch", capsys=capsys)
    assert "champion v1, environments/prod.yaml on base-branch" in out
    code, out, _ = gate(repo, "--only", "metrics", capsys=capsys)
    assert "champion none" in out and "no champion in prod" in out


@pytest.mark.parametrize("name,content,message", [
    ("malformed", "model: [unclosed\n", "invalid YAML"),
    ("tag", "apiVersion: !!python/object:os.system ls\n", "YAML tag"),
    ("huge", "# " + "x" * (1 << 20) + "\n", "the limit is"),
])
def test_hostile_environment_files_exit_2(setup, capsys, name, content, message):
    repo, _, _, _ = setup
    (repo / "environments" / "prod.yaml").write_text(content)
    code, out, err = gate(repo, capsys=capsys)
    assert code == 2 and message in err and out == ""


def test_non_numeric_threshold_exits_2(setup, capsys):
    repo, _, _, _ = setup
    (repo / "policies" / "prod.yaml").write_text(PASSING_POLICY.replace("psi_max: 0.2", "psi_max: high"))
    code, _, err = gate(repo, capsys=capsys)
    assert code == 2 and "policies/prod.yaml:13 gates.drift.psi_max: must be a number" in err


def test_unknown_gate_in_only_exits_2(setup, capsys):
    repo, _, _, _ = setup
    code, _, err = gate(repo, "--only", "vibes", capsys=capsys)
    assert code == 2 and "unknown gate 'vibes'" in err


def test_promotion_path_requires_a_staging_record(setup, capsys):
    repo, _, _, _ = setup
    policy = repo / "policies" / "prod.yaml"
    policy.write_text(PASSING_POLICY.replace("gates:\n", "promotion_path:\n  requires_record_from: staging\ngates:\n")
                      + "")
    text = policy.read_text().replace("  approvals: {required: 2}", "  approvals: {required: 2}\n  promotion_path: {}")
    policy.write_text(text)
    code, out, _ = gate(repo, "--only", "promotion_path", capsys=capsys)
    assert code == 1
    assert rows(out)["promotion_path.staging"][1:] == ["promoted in staging, not rolled back", "BLOCK"]
    assert "v2 has no verified promotion record in staging" in out


# -- GitHub Actions --------------------------------------------------------------------

def test_in_github_actions_summary_sticky_comment_and_annotations(setup, capsys, tmp_path, monkeypatch):
    repo, _, _, _ = setup
    head = git(repo, "rev-parse", "HEAD").strip()
    with GitHubFake() as gh:
        gh.add_pull(7, author="alice", head_sha=head)
        gh.add_file(".github/CODEOWNERS", "environments/ @bob @carol\n")
        for login in ("bob", "carol"):
            gh.add_collaborator(login)
        gh.add_review(7, "bob", "APPROVED", commit_id=head)
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"pull_request": {"number": 7, "base": {"ref": "main"}}}))
        summary = tmp_path / "summary.md"
        for k, v in {"GITHUB_ACTIONS": "true", "GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "test-token",
                     "GITHUB_REPOSITORY": "acme/models", "GITHUB_EVENT_PATH": str(event),
                     "GITHUB_STEP_SUMMARY": str(summary)}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GITHUB_BASE_REF", raising=False)
        (repo / "policies" / "prod.yaml").write_text(PASSING_POLICY.replace("fpr: {max: 0.06}", "fpr: {max: 0.02}"))

        code, out, _ = gate(repo, capsys=capsys)
        assert code == 1
        assert "::error file=policies/prod.yaml,line=8,title=gate metrics.fpr::fpr = " in out
        assert "::error file=policies/prod.yaml,line=17,title=gate approvals::1 of 2 approval(s): bob" in out
        md = summary.read_text()
        assert re.search(r"^\| metrics\.fpr \| 0\.0\d+ \| <= 0\.02 \| ❌ BLOCK \|", md, re.M)
        assert re.search(r"^\| approvals \| 1 \| >= 2 \| ❌ BLOCK \|", md, re.M)
        assert md.count("| lineage.digest |") == 1

        # a new approval on the head commit: re-run, same comment edited in place
        gh.add_review(7, "carol", "APPROVED", commit_id=head)
        (repo / "policies" / "prod.yaml").write_text(PASSING_POLICY)
        code, out, _ = gate(repo, capsys=capsys)
        assert code == 0, out
        comments = gh.repo.comments[7]
        assert len(comments) == 1
        assert "<!-- promotion-gate:prod -->" in comments[0]["body"]
        assert "| approvals | 2 | >= 2 | ✅ PASS |" in comments[0]["body"]
        assert [r.method for r in gh.requests if "/comments" in r.path] == ["GET", "POST", "GET", "PATCH"]
        assert "NOT FOR PRODUCTION" not in comments[0]["body"]


def test_in_github_actions_an_api_failure_blocks(setup, capsys, tmp_path, monkeypatch):
    repo, _, _, _ = setup
    with GitHubFake() as gh:
        gh.fail(r"/pulls/7", status=503)
        gh.fail(r"/comments", status=503)
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"pull_request": {"number": 7}}))
        for k, v in {"GITHUB_ACTIONS": "true", "GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "test-token",
                     "GITHUB_REPOSITORY": "acme/models", "GITHUB_EVENT_PATH": str(event),
                     "GITHUB_STEP_SUMMARY": str(tmp_path / "s.md")}.items():
            monkeypatch.setenv(k, v)
        code, out, err = gate(repo, "--only", "approvals", capsys=capsys)
        assert code == 1
        assert "cannot decide: GitHub API GET /repos/acme/models/pulls/7: 503" in out
        assert "::warning title=gate comment::could not update the pull request comment" in out
        assert "Traceback" not in err


# -- propose ---------------------------------------------------------------------------

def test_propose_without_github_prints_the_next_command(setup, capsys):
    repo, _, digests, _ = setup
    set_env(repo, 1, digests[1])
    git(repo, "commit", "-qam", "back to v1")
    before = (repo / "environments" / "prod.yaml").read_text()
    code = cli.main(["--root", str(repo), "propose", "prod", "--version", "2"])
    out = capsys.readouterr().out
    assert code == 0
    after = (repo / "environments" / "prod.yaml").read_text()
    assert after == before.replace("version: 1", "version: 2").replace(digests[1], digests[2])  # comments kept
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "promote/prod-v2"
    assert git(repo, "log", "-1", "--format=%s").strip() == "Promote fraud-detector v2 to prod"
    assert "git push -u origin promote/prod-v2 && gh pr create --base main --head promote/prod-v2" in out


def test_propose_opens_the_pull_request_with_the_table(setup, capsys, tmp_path, monkeypatch):
    repo, _, digests, _ = setup
    set_env(repo, 1, digests[1])
    git(repo, "commit", "-qam", "back to v1")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(repo, "remote", "add", "origin", str(remote))
    with GitHubFake() as gh:
        monkeypatch.setenv("GITHUB_API_URL", gh.url)
        monkeypatch.setenv("GITHUB_TOKEN", "test-token")
        code = cli.main(["--root", str(repo), "propose", "prod", "--version", "2", "--repo", "acme/models"])
        out = capsys.readouterr().out
        assert code == 0, out
        post = [r for r in gh.requests if r.method == "POST"][0]
        assert post.path == "/repos/acme/models/pulls"
        assert post.body["head"] == "promote/prod-v2" and post.body["base"] == "main"
        assert "| metric | v2 (challenger) | v1 (champion) | change |" in post.body["body"]
        assert re.search(r"^\| f1 \| 0\.\d+ \| 0\.\d+ \| [+-]0\.\d+ \|$", post.body["body"], re.M)
        assert "opened pull request #1" in out
    assert "promote/prod-v2" in subprocess.run(["git", "branch"], cwd=remote, capture_output=True, text=True).stdout


def test_propose_unknown_version_fails_without_touching_git(setup, capsys):
    repo, _, _, _ = setup
    code = cli.main(["--root", str(repo), "propose", "prod", "--version", "42"])
    assert code == 1
    assert "does not exist in the registry" in capsys.readouterr().err
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
