"""Probation after 100%, against the real router: ``bentoml serve`` (2 workers), real MLflow, git.

The canary is judged on labels fed back through ``POST /feedback`` (the client of
``test_label_canary``); with ``rollout.probation`` the promoted version keeps being judged
at 100% against the old champion's pre-promotion labels, the old champion still loaded.
A healthy version gets a signed ``probation_passed`` record; one whose labels turn bad
only after its promotion is rolled back by the probation (traffic, alias, file, record).
"""

from __future__ import annotations

import json

import pytest

from promotion._internal.git import Git
from promotion.cli import main
from promotion.config import Project
from promotion.records import RecordStore
from tests.integration.test_label_canary import labelled_world, propose
from tests.support.policies import steps_policy

pytestmark = pytest.mark.integration
POLICY = steps_policy(weights=(10, 50, 100), hold_s=(1, 3, 1), min_requests=20, max_s=60, analysis=(
    "  alpha: 0.2\n  labels:\n    metric: recall\n    tolerance: {absolute: 0.3}\n"
    "    min_labels: 30\n    require_labels_to_promote: true\n")).replace(
    "  interval_s: 0.5\n", "  interval_s: 0.5\n  probation: {duration_s: 8, min_labels: 30, max_s: 40}\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with labelled_world(tmp_path_factory.mktemp("probation-canary"), POLICY, 3) as w:
        yield w


def rollout(world, version: int, truth, events) -> tuple[int, list]:
    world["client"].truth = truth
    propose(world["repo"], world["registry"], version)
    code = main(["--root", str(world["repo"]), "rollout", "prod", "--events", str(events)])
    return code, RecordStore(world["repo"], "prod").records()


def routing(repo) -> dict[int, float]:
    """What the real router applies now, zero weights included (loaded, serving nothing)."""
    from promotion.traffic import backend_for

    return backend_for(Project(repo).environment("prod")).current().weights


def test_healthy_version_passes_probation_with_the_old_champion_loaded(world, tmp_path):
    v1, good = world["versions"][0], world["versions"][1]
    code, records = rollout(world, good, lambda v, label, seg: label, tmp_path / "events.jsonl")
    assert code == 0
    assert [(r.action, r.version) for r in records[-2:]] == [("promote", good), ("probation_passed", good)]
    passed = records[-1].predicate
    probation = passed["evidence"]["probation"]
    assert probation["promote_record"] == records[-2].name and probation["seconds"] >= 8
    assert probation["labelled_in_probation"] >= 30
    assert probation["labels"]["canary"] == 1.0 and probation["baseline"]["champion"] == 1.0
    assert passed["reason"].startswith(f"probation passed: v{good} served 100% for ")
    assert Git(world["repo"])("log", "-1", "--format=%s").startswith(f"probation passed prod: fraud-detector v{good}")
    # the old champion stayed loaded (weight 0) through the probation, and still is
    assert routing(world["repo"]) == {v1: 0.0, good: 100.0}
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e["event"].startswith("probation_")][:1] == ["probation_started"]
    assert any(e["event"] == "probation_observed" for e in events)


def test_labels_turning_bad_after_promotion_roll_back_in_probation(world, tmp_path):
    good, bad = world["versions"][1], world["versions"][2]
    promoted = world["repo"] / "environments" / "records" / "prod"

    def truth(v, label, seg):
        # as good as the champion through the canary; every call wrong once its promotion is recorded
        return 1 - label if v == bad and any(promoted.glob(f"*-promote-v{bad}.json")) else label

    code, records = rollout(world, bad, truth, tmp_path / "events.jsonl")
    assert code == 1
    assert [(r.action, r.version) for r in records[-2:]] == [("promote", bad), ("rollback", good)]
    rb = records[-1].predicate
    assert rb["replaced_version"] == bad and rb["rollback_target"] == good
    assert rb["reason"].startswith(f"probation of v{bad} failed after "), rb["reason"]
    assert "label recall regressed: canary 0." in rb["reason"] and "vs champion 1.000" in rb["reason"]
    probation = rb["evidence"]["probation"]
    assert probation["promote_record"] == records[-2].name and probation["baseline"]["canary"] == 1.0
    assert rb["evidence"]["labels"]["rejected"]
    # traffic, alias and file back on the previous version; the audit accepts the history
    assert routing(world["repo"]) == {good: 100.0}
    assert world["registry"].alias("fraud-detector", "prod") == good
    assert Project(world["repo"]).environment("prod").model.version == good
    assert Git(world["repo"])("log", "-1", "--format=%s").startswith(
        f"rollback prod: fraud-detector v{bad} -> v{good}: probation of v{bad} failed")
    assert main(["--root", str(world["repo"]), "audit", "prod"]) == 0
