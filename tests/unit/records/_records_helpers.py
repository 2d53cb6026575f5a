"""Helpers shared by the records tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def record(root, version: int, action: str = "promote", env: str = "prod", **overrides):
    from promotion.records import write_record

    kwargs = dict(
        action=action, model="fraud-detector", version=version, digest="sha256:" + f"{version:064x}",
        from_env="staging", to_env=env,
        checks=[{"name": "recall", "value": 0.97, "threshold": 0.95, "verdict": "pass"}],
        approvers=[{"login": "alice", "commit": "0123abc"}],
        steps=[{"weight": 5, "metrics": {"error_rate": 0.001}}],
        rollback_target=None, data_snapshot="sha256:" + "cd" * 32, code_commit="deadbee",
        policy_digest="sha256:" + "ef" * 32, source_commit=None,
    )
    kwargs.update(overrides)
    return write_record(root, env, **kwargs)


def git(root, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def commit(root, message: str) -> str:
    """Commit everything in the work tree; returns the new commit's sha."""
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


def merged(root, message: str, branch: str = "change") -> str:
    """Commit the work tree on a branch and merge it with a merge commit, as a pull request
    lands on a protected branch; returns the merge commit's sha."""
    git(root, "checkout", "-q", "-b", branch)
    commit(root, message)
    git(root, "checkout", "-q", "main")
    git(root, "merge", "-q", "--no-ff", "-m", f"Merge pull request #1 from acme/{branch}", branch)
    git(root, "branch", "-q", "-D", branch)
    return git(root, "rev-parse", "HEAD").strip()


def set_env(root, version: int, env: str = "prod", extra: str = "") -> Path:
    path = Path(root) / f"environments/{env}.yaml"
    path.write_text(f"apiVersion: promotion/v1\nenvironment: {env}\nmodel:\n  name: fraud-detector\n"
                    f"  version: {version}\n  digest: sha256:{version:064x}\n" + extra)
    return path


def forge(root, private_pem: bytes | None, version: int, env: str = "prod", *, recorded_at: str,
          source_commit: str | None = None, action: str = "promote", digest: str | None = None,
          policy_digest: str | None = None, signer=None) -> Path:
    """Sign the next record of ``env`` with a copy of a private key (or ``signer``), as an
    attacker would: bypassing ``write_record`` and its checks, dated whenever the attacker likes."""
    from securesystemslib.signer import CryptoSigner
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from promotion.records.chain import parse_name, record_name, records_dir
    from promotion.records.signers.local import LocalSigner
    from promotion.records.statement import PAYLOAD_TYPE, build_statement, encode
    from promotion._internal.digest import bytes_digest
    from promotion.records.store import dumps

    directory = records_dir(root, env)
    files = sorted(p for p in directory.glob("*.json") if parse_name(p.name)) if directory.is_dir() else []
    previous = {"name": files[-1].name, "digest": bytes_digest(files[-1].read_bytes())} if files else None
    sequence = len(files) + 1
    statement = build_statement(
        sequence=sequence, action=action, model="fraud-detector", version=version,
        digest=digest or "sha256:" + f"{version:064x}", from_env="staging", to_env=env, checks=[], approvers=[],
        steps=[], rollback_target=None, replaced_version=None, data_snapshot=None, code_commit=None,
        policy_digest=policy_digest, source_commit=source_commit, reason=None, evidence=None, previous=previous,
        recorded_at=recorded_at)
    if signer is None:
        signer = LocalSigner(CryptoSigner(load_pem_private_key(private_pem, password=None)))
    path = directory / record_name(sequence, action, version)
    directory.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dumps(signer.sign(encode(statement), PAYLOAD_TYPE)))
    return path
