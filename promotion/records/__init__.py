"""Signed promotion records: in-toto statements in DSSE envelopes, chained per environment.

Every promotion, rollback or rejection of a model in an environment leaves one record in
``environments/records/<env>/<seq:06d>-<action>-v<version>.json``: an in-toto Statement
v1 whose subject is the model artifact digest and whose predicate
(``https://promotion.dev/promotion-record/v1``, see ``predicate.schema.json``) holds the
checks, approvers, rollout steps, lineage and the digest of the previous record. It is
signed with a local ed25519 key (a DSSE envelope) or keylessly with Sigstore in GitHub
Actions (a Sigstore bundle); ``environments/trust.yaml`` says which signers count, and
git history says when: a record verifies only if its signer was valid in the trust file as
of the commit that added it (:mod:`promotion.records.validity`), never by a time it states.

Usage::

    from pathlib import Path
    from promotion.records import RecordStore, record_related_paths, verify_record, write_record

    root = Path(".")
    path = write_record(
        root, "prod", action="promote", model="fraud-detector", version=7,
        digest="sha256:" + "ab" * 32, from_env="staging", to_env="prod",
        checks=[{"name": "recall", "value": 0.97, "threshold": ">= 0.95", "verdict": "pass"}],
        approvers=[{"login": "alice", "commit": "3f2c1a9"}],
        steps=[{"weight": 5, "metrics": {"error_rate": 0.001}}],
        rollback_target=6, data_snapshot="sha256:...", code_commit="9b1e...",
        policy_digest="sha256:...", source_commit="e4d2...",
    )
    # the caller commits: git add <path> + record_related_paths(root, "prod")
    record = verify_record(path, root)
    print(record.signer, record.predicate["model"]["version"])

    store = RecordStore(root, "prod")
    store.records()                         # all verified, chain checked, in order
    store.last_known_good("fraud-detector") # -> 7
    store.has_promotion("fraud-detector", 7)

``promotion.records.audit.audit(root, env)`` replays git history (``promotion audit``).
"""

from __future__ import annotations

from promotion.records.chain import RECORDS_DIR, parse_name, record_name, records_dir
from promotion.records.statement import ACTIONS, PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE
from promotion.records.store import RecordStore, record_files, record_related_paths, write_record
from promotion.records.trust import KEYS_DIR, TRUST_FILE, Trust
from promotion.records.verify import VerifiedRecord, verify_bytes, verify_record

__all__ = [
    "ACTIONS", "KEYS_DIR", "PAYLOAD_TYPE", "PREDICATE_TYPE", "RECORDS_DIR", "STATEMENT_TYPE", "TRUST_FILE",
    "RecordStore", "Trust", "VerifiedRecord", "parse_name", "record_files", "record_name",
    "record_related_paths", "records_dir", "verify_bytes", "verify_record", "write_record",
]
