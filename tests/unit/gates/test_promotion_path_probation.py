"""``promotion_path.requires_probation``: prod needs the version's probation_passed record in staging."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "records"))
from _records_helpers import commit, record  # noqa: E402

from promotion.cli import main  # noqa: E402
from promotion.config import Project  # noqa: E402
from promotion.gates import run_gates  # noqa: E402
from promotion.records import RecordStore  # noqa: E402


@pytest.fixture
def project(repo, monkeypatch):
    for name in ("PROMOTION_SIGNING_KEY", "PROMOTION_SIGNER"):
        monkeypatch.delenv(name, raising=False)
    path = repo / "policies/prod.yaml"
    path.write_text(path.read_text().replace("  requires_record_from: staging ",
                                             "  requires_probation: true\n  requires_record_from: staging "))
    return Project(repo)


def propose_prod(root: Path, version: int) -> None:
    path = root / "environments/prod.yaml"
    lines = [f"  version: {version}" if line.startswith("  version:") else
             f"  digest: sha256:{version:064x}" if line.startswith("  digest:") else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def staging(root: Path, version: int, action: str = "promote", **kw) -> Path:
    kw.setdefault("rollback_target", version - 1 if version > 1 else None)
    return record(root, version, action=action, env="staging", from_env="dev" if action == "promote" else "staging",
                  **kw)


def probation_checks(project) -> list:
    return [c for c in run_gates(project, "prod", only=["promotion_path"]).checks if c.name.endswith(".probation")]


def test_promoted_but_no_probation_record_blocks_naming_it(project):
    staging(project.root, 2)
    staging(project.root, 3)
    commit(project.root, "staging promote v3")
    propose_prod(project.root, 3)
    (check,) = probation_checks(project)
    assert not check.passed
    assert check.message.startswith("v3 has no probation_passed record in staging after its promotion (000002-promote-v3.json)")
    assert check.file == "policies/prod.yaml" and check.line == 6  # requires_probation


def test_probation_passed_record_passes(project):
    staging(project.root, 2)
    staging(project.root, 3)
    staging(project.root, 3, action="probation_passed", replaced_version=2,
            evidence={"rollout_id": "r1", "probation": {"seconds": 3600.0}})
    commit(project.root, "staging v3 passed probation")
    propose_prod(project.root, 3)
    (check,) = probation_checks(project)
    assert check.passed and check.message.startswith("v3 passed its probation in staging for 3600 s")
    # the record verifies in the chain and is listed as what it is
    assert [r.action for r in RecordStore(project.root, "staging").records()] == ["promote", "promote",
                                                                                  "probation_passed"]


def test_probation_of_an_earlier_promotion_does_not_count_after_a_new_one(project):
    """Passed once, later re-promoted (after v4 came and went): the new promotion needs its own."""
    staging(project.root, 3)
    staging(project.root, 3, action="probation_passed", evidence={"rollout_id": "r1"})
    staging(project.root, 4, rollback_target=3)
    staging(project.root, 3, rollback_target=4)
    commit(project.root, "staging: v3, v4, v3 again")
    propose_prod(project.root, 3)
    (check,) = probation_checks(project)
    assert not check.passed and "after its promotion (000004-promote-v3.json)" in check.message


def test_probation_record_of_another_artifact_does_not_count(project):
    staging(project.root, 3)
    staging(project.root, 3, action="probation_passed", digest="sha256:" + "ab" * 32)
    commit(project.root, "staging")
    propose_prod(project.root, 3)
    (check,) = probation_checks(project)
    assert not check.passed


def test_rolled_back_in_probation_is_not_eligible(project):
    staging(project.root, 2)
    staging(project.root, 3)
    staging(project.root, 2, action="rollback", rollback_target=2, replaced_version=3,
            reason="probation of v3 failed after 40s of 600s at 100%: label recall regressed")
    commit(project.root, "staging probation rollback")
    propose_prod(project.root, 3)
    checks = run_gates(project, "prod", only=["promotion_path"]).checks
    assert [c.passed for c in checks] == [False]
    assert "probation of v3 failed" in checks[0].message


def test_without_the_setting_no_probation_check(repo, monkeypatch):
    monkeypatch.delenv("PROMOTION_SIGNING_KEY", raising=False)
    staging(repo, 3)
    commit(repo, "staging")
    propose_prod(repo, 3)
    assert probation_checks(Project(repo)) == []


def test_requires_probation_without_a_source_is_bad_input(repo, capsys):
    path = repo / "policies/prod.yaml"
    path.write_text(path.read_text().replace("  requires_record_from: staging ", "  requires_probation: true "))
    assert main(["--root", str(repo), "validate"]) == 2
    err = capsys.readouterr().err
    assert "policies/prod.yaml:" in err and "promotion_path" in err and "requires_record_from" in err, err


def test_audit_flags_a_probation_record_that_follows_no_promotion_of_its_rollout(project):
    from promotion.records.audit import audit

    staging(project.root, 3, evidence={"rollout_id": "r1"})
    staging(project.root, 3, action="probation_passed", evidence={"rollout_id": "r1"})
    staging(project.root, 3, action="probation_passed", evidence={"rollout_id": "r2"}, source_commit="ab" * 20)
    commit(project.root, "staging records")
    messages = [v.message for v in audit(project.root, "staging").violations]
    ours = [m for m in messages if "must directly follow the promote record" in m]
    assert ours == ["environments/records/staging/000003-probation_passed-v3.json: a probation_passed record must "
                    "directly follow the promote record of fraud-detector v3 by the same rollout"], messages
