"""The in-toto Statement v1 a promotion record signs, and its versioned predicate.

The statement's subject is the model artifact (``sha256`` of the artifact); the predicate
follows ``predicate.schema.json`` (type :data:`PREDICATE_TYPE`) and is validated when a
record is written and again when it is verified.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any

from promotion.errors import RecordError, VerificationError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://promotion.dev/promotion-record/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# probation_passed: a promoted version served 100% through its probation (promotion.rollout.probation)
ACTIONS = ("promote", "rollback", "reject", "probation_passed")


@lru_cache(maxsize=None)
def predicate_schema() -> dict:
    """The shipped JSON Schema of the v1 predicate."""
    text = resources.files("promotion.records").joinpath("predicate.schema.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=None)
def _validator():
    from promotion.config import schema_validator  # NaN and infinities are not numbers

    return schema_validator(predicate_schema())


@lru_cache(maxsize=None)
def _fast_check():
    from promotion.records._fastschema import compile_schema

    return compile_schema(predicate_schema())


def now_utc() -> str:
    """The current time as the records write it: ISO 8601, UTC, milliseconds, ``Z``."""
    return format_time(datetime.now(timezone.utc))


def format_time(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time; a time without a zone is taken as UTC. Raises ValueError."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def producer() -> dict[str, Any]:
    """Where this record is being made: the GitHub Actions run, or the host and user."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        repo = os.environ.get("GITHUB_REPOSITORY", "")
        run_id = os.environ.get("GITHUB_RUN_ID", "")
        return {
            "kind": "github-actions",
            "repository": repo,
            "workflow_ref": os.environ.get("GITHUB_WORKFLOW_REF"),
            "run_id": run_id,
            "run_attempt": os.environ.get("GITHUB_RUN_ATTEMPT"),
            "run_url": f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None,
            "sha": os.environ.get("GITHUB_SHA"),
            "actor": os.environ.get("GITHUB_ACTOR"),
        }
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = None
    return {"kind": "host", "host": socket.gethostname(), "user": user}


def build_statement(
    *,
    sequence: int,
    action: str,
    model: str,
    version: int,
    digest: str,
    from_env: str | None,
    to_env: str,
    checks: list[dict],
    approvers: list[dict],
    steps: list[dict],
    rollback_target: int | None,
    replaced_version: int | None,
    data_snapshot: str | None,
    code_commit: str | None,
    policy_digest: str | None,
    source_commit: str | None,
    reason: str | None,
    evidence: dict | None,
    previous: dict | None,
    recorded_at: str | None = None,
    producer_info: dict | None = None,
    hooks: list[dict] | None = None,
    interventions: list[dict] | None = None,
) -> dict:
    """A validated Statement dict; raises :class:`RecordError` naming the bad field."""
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise RecordError(f"model digest must be 'sha256:<hex>', got {digest!r}")
    predicate = {
        "sequence": sequence,
        "action": action,
        "model": {"name": model, "version": version, "digest": digest},
        "from_environment": from_env,
        "to_environment": to_env,
        "checks": list(checks or []),
        "approvers": list(approvers or []),
        "steps": list(steps or []),
        "rollback_target": rollback_target,
        "replaced_version": replaced_version,
        "data_snapshot": data_snapshot,
        "code_commit": code_commit,
        "policy_digest": policy_digest,
        "source_commit": source_commit,
        "reason": reason,
        "evidence": evidence,
        "producer": producer_info or producer(),
        "recorded_at": recorded_at or now_utc(),
        "previous_record": previous,
    }
    # optional: a record of a rollout without hooks or operators reads as before
    if hooks:
        predicate["hooks"] = list(hooks)
    if interventions:
        predicate["interventions"] = list(interventions)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{model}@v{version}", "digest": {"sha256": digest.split(":", 1)[1]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
    # round-trip through JSON so what is signed is exactly what a verifier will read
    try:
        statement = json.loads(encode(statement))
    except (TypeError, ValueError) as exc:
        raise RecordError(f"record for {model} v{version} holds a value that is not JSON: {exc}") from None
    problem = statement_problem(statement, full=True)
    if problem:
        raise RecordError(f"record for {model} v{version} is invalid: {problem}")
    return statement


def encode(statement: dict) -> bytes:
    """The signed payload: compact JSON with sorted keys."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def statement_problem(statement: Any, *, full: bool = False) -> str | None:
    """None if ``statement`` is a valid v1 promotion statement, else the first problem.

    Records are checked with ``jsonschema`` when written (``full``); reading uses the same
    schema compiled into a fast checker and asks ``jsonschema`` only to explain a failure.
    """
    if not isinstance(statement, dict):
        return "payload is not a JSON object"
    if statement.get("_type") != STATEMENT_TYPE:
        return f"_type is {statement.get('_type')!r}, expected {STATEMENT_TYPE}"
    if statement.get("predicateType") != PREDICATE_TYPE:
        return f"predicateType is {statement.get('predicateType')!r}, expected {PREDICATE_TYPE}"
    predicate = statement.get("predicate")
    if not (_validator().is_valid(predicate) if full else _fast_check()(predicate)):
        validator = _validator()
        errors = list(validator.iter_errors(predicate))
        if not errors:  # the compiled checker is stricter than jsonschema: trust jsonschema's "valid"
            return _model_problem(statement, predicate)
        error = min(errors, key=lambda e: len(e.absolute_path))
        where = ".".join(str(p) for p in error.absolute_path) or "(predicate)"
        return f"predicate.{where}: {error.message}" if error.absolute_path else f"predicate: {error.message}"
    return _model_problem(statement, predicate)


def _model_problem(statement: dict, predicate: dict) -> str | None:
    model = predicate["model"]
    subjects = statement.get("subject")
    want = model["digest"].split(":", 1)[1]
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        return "subject must be exactly one artifact"
    if (subjects[0].get("digest") or {}).get("sha256") != want:
        return "subject digest does not match predicate.model.digest"
    return None


def decode_payload(payload: bytes, display: str) -> dict:
    """Parse and validate a signed payload; raises :class:`VerificationError` naming ``display``."""
    from promotion.records._json import load_json

    statement = load_json(payload, display, "signed payload is not JSON")
    problem = statement_problem(statement)
    if problem:
        raise VerificationError(f"{display}: {problem}")
    return statement
