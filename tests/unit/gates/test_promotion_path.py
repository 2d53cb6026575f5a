"""The promotion-path gate judged from real, signed, committed staging records."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "records"))
from _records_helpers import commit, record  # noqa: E402

from promotion.config import Project  # noqa: E402
from promotion.gates import run_gates  # noqa: E402


@pytest.fixture
def project(repo, monkeypatch):
    for name in ("PROMOTION_SIGNING_KEY", "PROMOTION_SIGNER"):
        monkeypatch.delenv(name, raising=False)
    return Project(repo)


def propose_prod(root: Path, version: int) -> None:
    """The PR's environment file: prod names ``version`` (digest as the records helper makes it)."""
    path = root / "environments/prod.yaml"
    text = path.read_text()
    lines = [f"  version: {version}" if line.startswith("  version:") else
             f"  digest: sha256:{version:064x}" if line.startswith("  digest:") else line
             for line in text.splitlines()]
    path.write_text("\n".join(lines) + "\n")


def set_soak(root: Path, seconds: int) -> None:
    path = root / "policies/prod.yaml"
    path.write_text(path.read_text().replace("  promotion_path: {}", f"  promotion_path: {{min_soak_s: {seconds}}}"))


def path_checks(project) -> list:
    report = run_gates(project, "prod", only=["promotion_path"])
    return report.checks


def staging(root: Path, version: int, action: str = "promote", **kw) -> Path:
    return record(root, version, action=action, env="staging", from_env="dev", **kw)


def test_promoted_in_staging_passes(project):
    staging(project.root, 3)
    commit(project.root, "staging promote v3")
    propose_prod(project.root, 3)
    (check,) = path_checks(project)
    assert check.passed and "v3 holds a verified staging promotion record" in check.message


def test_rolled_back_in_staging_after_its_promotion_is_not_eligible(project):
    """Reproduction: promoted in staging, then rolled back there; prod's path still passed."""
    staging(project.root, 2)
    staging(project.root, 3)
    staging(project.root, 2, action="rollback", replaced_version=3, reason="p95 latency breach")
    commit(project.root, "staging: v2, v3, rollback to v2")
    propose_prod(project.root, 3)
    (check,) = path_checks(project)
    assert not check.passed
    assert check.name == "promotion_path.staging"
    assert "v3 was promoted in staging (000002-promote-v3.json) but then taken out by rollback record " \
           "000003-rollback-v2.json" in check.message
    assert "p95 latency breach" in check.message


def test_a_rejected_canary_in_staging_is_not_eligible_and_promoting_again_restores_it(project):
    staging(project.root, 2)
    staging(project.root, 3)
    staging(project.root, 2, action="reject", replaced_version=3, reason="canary error rate")
    propose_prod(project.root, 3)
    assert not path_checks(project)[0].passed
    staging(project.root, 3)  # promoted again after a fix of the serving side
    assert path_checks(project)[0].passed


def test_superseded_in_staging_is_still_eligible(project):
    staging(project.root, 3)
    staging(project.root, 4)
    propose_prod(project.root, 3)
    assert path_checks(project)[0].passed


def test_wrong_digest_and_missing_record_block(project):
    staging(project.root, 3)
    propose_prod(project.root, 4)
    (check,) = path_checks(project)
    assert not check.passed and "v4 has no verified promotion record in staging" in check.message
    path = project.root / "environments/prod.yaml"
    path.write_text(path.read_text().replace("  version: 4", "  version: 3"))  # v3 with v4's digest
    (check,) = path_checks(project)
    assert not check.passed and "is for artifact sha256:" + f"{3:064x}" in check.message


def test_min_soak_blocks_until_served_long_enough(project, monkeypatch):
    from promotion.gates import promotion_path
    from promotion.records import RecordStore
    from promotion.records.statement import parse_time

    staging(project.root, 3)
    commit(project.root, "staging promote v3")
    set_soak(project.root, 86400)
    propose_prod(project.root, 3)
    promoted = parse_time(RecordStore(project.root, "staging").records()[-1].recorded_at)
    monkeypatch.setattr(promotion_path, "now", lambda: promoted + timedelta(seconds=3600))
    path_check, soak = path_checks(project)
    assert path_check.passed
    assert not soak.passed and soak.name == "promotion_path.staging.soak"
    assert (soak.value, soak.threshold) == (3600, ">= 86400 s")
    assert soak.message.startswith("soaked 3600 s >= 86400 s: BLOCK (v3 at 100% in staging since")
    assert soak.file == "policies/prod.yaml" and soak.line > 1
    monkeypatch.setattr(promotion_path, "now", lambda: promoted + timedelta(days=1, seconds=1))
    assert path_checks(project)[1].passed


def test_soak_ends_when_the_source_moved_away(project, monkeypatch):
    from promotion.gates import promotion_path

    staging(project.root, 3)
    staging(project.root, 4)  # v3 served only until v4 replaced it, moments later
    set_soak(project.root, 600)
    propose_prod(project.root, 3)
    from datetime import datetime, timezone

    monkeypatch.setattr(promotion_path, "now", lambda: datetime.now(timezone.utc) + timedelta(days=30))
    _, soak = path_checks(project)
    assert not soak.passed and "until 000002-promote-v4.json moved staging away from it" in soak.message


def test_unreadable_staging_chain_blocks_with_reason(project):
    path = staging(project.root, 3)
    path.write_text("[" * 5000)
    propose_prod(project.root, 3)
    (check,) = path_checks(project)
    assert not check.passed and check.message.startswith("cannot decide: the staging records do not verify")


def test_min_soak_must_be_a_finite_non_negative_number(project, capsys):
    from promotion.cli import main

    set_soak(project.root, -1)
    assert main(["--root", str(project.root), "validate"]) == 2
    assert "gates.promotion_path.min_soak_s" in capsys.readouterr().err
