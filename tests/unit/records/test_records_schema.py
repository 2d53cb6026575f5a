from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

from promotion.records._fastschema import compile_schema
from promotion.records.statement import build_statement, predicate_schema, statement_problem


def _predicate():
    return build_statement(
        sequence=1, action="promote", model="m", version=3, digest="sha256:" + "a" * 64, from_env="staging",
        to_env="prod", checks=[{"name": "recall", "value": 0.97, "threshold": 0.95, "verdict": "pass"}],
        approvers=[{"login": "alice", "commit": "abc1234"}], steps=[{"weight": 5, "metrics": {}}],
        rollback_target=2, replaced_version=None, data_snapshot=None, code_commit=None, policy_digest=None,
        source_commit="abcdef1", reason=None, evidence=None, previous=None,
    )["predicate"]


MUTATIONS = [
    lambda p: p.update(sequence=0),
    lambda p: p.update(sequence="1"),
    lambda p: p.update(action="deploy"),
    lambda p: p["model"].update(digest="sha256:XYZ"),
    lambda p: p["model"].update(version=True),
    lambda p: p["model"].update(extra=1),
    lambda p: p.pop("previous_record"),
    lambda p: p.update(previous_record={"name": "x", "digest": "sha1:abc"}),
    lambda p: p.update(source_commit="not-a-sha"),
    lambda p: p["steps"].append({"weight": 150}),
    lambda p: p["checks"].append({"name": "", "verdict": "pass"}),
    lambda p: p["approvers"].append({"commit": "abc"}),
    lambda p: p.update(recorded_at="yesterday"),
    lambda p: p.update(producer={"kind": "laptop"}),
    lambda p: p.update(unknown_field=1),
    lambda p: p.update(to_environment="../etc"),
    lambda p: p.update(evidence=[]),
]


@pytest.mark.parametrize("mutate", MUTATIONS)
def test_compiled_checker_agrees_with_jsonschema(mutate):
    schema = predicate_schema()
    fast, slow = compile_schema(schema), Draft202012Validator(schema)
    predicate = _predicate()
    assert fast(predicate) and slow.is_valid(predicate)
    bad = copy.deepcopy(predicate)
    mutate(bad)
    assert fast(bad) is False
    assert slow.is_valid(bad) is False


def test_unsupported_keyword_refuses_to_compile():
    with pytest.raises(ValueError, match="unsupported JSON Schema keyword 'format'"):
        compile_schema({"type": "string", "format": "date-time"})


def test_statement_problem_names_the_field():
    statement = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://promotion.dev/promotion-record/v1",
                 "subject": [], "predicate": {**_predicate(), "sequence": 0}}
    assert statement_problem(statement) == "predicate.sequence: 0 is less than the minimum of 1"
