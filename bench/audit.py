"""Benchmark: verify a 10,000-record chain; audit a git history with 1,000 promotions.

Builds both fixtures in a temporary directory (records signed with a throwaway ed25519
key; the git history written with ``git fast-import``), then times
``RecordStore(root, env).records()`` and ``audit(root, env)``. Targets: <= 5 s and <= 10 s.
Ends with exactly one line: ``RESULT verify_10k_seconds=<s> audit_1k_seconds=<s>``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promotion.records import RecordStore, record_name  # noqa: E402
from promotion.records.audit import audit  # noqa: E402
from promotion.records.keys import load_signing_key, register  # noqa: E402
from promotion.records.signers.local import LocalSigner  # noqa: E402
from promotion.records.statement import PAYLOAD_TYPE, build_statement, encode, format_time  # noqa: E402
from promotion.records.store import dumps  # noqa: E402
from promotion._internal.digest import bytes_digest  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
MODEL = "fraud-detector"


def digest(version: int) -> str:
    return f"sha256:{version:064x}"


class Chain:
    """Signs records of one environment in memory, linking each to the previous."""

    def __init__(self, signer: LocalSigner, env: str) -> None:
        self.signer, self.env, self.previous, self.sequence = signer, env, None, 0

    def next(self, action: str, version: int, when: datetime, source: str | None, replaced=None) -> tuple[str, bytes]:
        self.sequence += 1
        statement = build_statement(
            sequence=self.sequence, action=action, model=MODEL, version=version, digest=digest(version),
            from_env="staging", to_env=self.env,
            checks=[{"name": "recall", "value": 0.97, "threshold": 0.95, "verdict": "pass"},
                    {"name": "psi", "value": 0.03, "threshold": 0.2, "verdict": "pass"}],
            approvers=[{"login": "alice", "commit": "0" * 40}],
            steps=[{"weight": w, "metrics": {"error_rate": 0.001, "latency_p95_ms": 40}} for w in (5, 25, 100)],
            rollback_target=version - 1, replaced_version=replaced, data_snapshot=digest(1), code_commit="a" * 40,
            policy_digest=digest(2), source_commit=source, reason=None, evidence=None, previous=self.previous,
            recorded_at=format_time(when), producer_info={"kind": "host", "host": "bench", "user": "bench"},
        )
        data = dumps(self.signer.sign(encode(statement), PAYLOAD_TYPE))
        name = record_name(self.sequence, action, version)
        self.previous = {"name": name, "digest": bytes_digest(data)}
        return name, data


def env_yaml(version: int) -> bytes:
    return (f"apiVersion: promotion/v1\nenvironment: prod\nmodel:\n  name: {MODEL}\n"
            f"  version: {version}\n  digest: {digest(version)}\n").encode()


def build_chain(root: Path, signer: LocalSigner, n: int) -> None:
    chain = Chain(signer, "prod")
    directory = root / "environments/records/prod"
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name, data = chain.next("promote", i + 2, START + timedelta(minutes=i), None)
        (directory / name).write_bytes(data)


def build_history(root: Path, signer: LocalSigner, promotions: int) -> None:
    """A first-parent history: per promotion, a commit changing the env file and a later
    commit adding its record (source_commit = the first); every 100th is rolled back."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--done"], cwd=root, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    mark = 0
    clock = int(START.timestamp())
    chain = Chain(signer, "prod")

    def commit(files: dict[str, bytes], message: str) -> str:
        nonlocal mark, clock
        mark += 1
        clock += 60
        out = [f"commit refs/heads/main\nmark :{mark}\ncommitter ci <ci@example.com> {clock} +0000\n"
               f"data {len(message)}\n{message}\n".encode()]
        for path, data in files.items():
            out.append(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")
        out.append(f"get-mark :{mark}\n".encode())
        proc.stdin.write(b"".join(out))
        proc.stdin.flush()
        return proc.stdout.readline().decode().strip()

    trust_files = {str(p.relative_to(root)): p.read_bytes() for p in (root / "environments").rglob("*") if p.is_file()}
    commit({**trust_files, "environments/prod.yaml": env_yaml(1)}, "initial")
    version = 1
    for i in range(promotions):
        previous, version = version, version + 1
        when = START + timedelta(minutes=2 * i + 1)
        merge = commit({"environments/prod.yaml": env_yaml(version)}, f"Merge: promote v{version}")
        name, data = chain.next("promote", version, when, merge)
        commit({f"environments/records/prod/{name}": data}, f"record: promote v{version}")
        if i % 100 == 99:
            name, data = chain.next("rollback", previous, when + timedelta(seconds=30), None, replaced=version)
            commit({"environments/prod.yaml": env_yaml(previous), f"environments/records/prod/{name}": data},
                   f"rollback to v{previous}")
            version = previous
    proc.stdin.write(b"done\n")
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=root, check=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="promotion-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["PROMOTION_STATE"] = str(tmp / "state")
        os.environ.pop("PROMOTION_SIGNING_KEY", None)
        chain_root = tmp / "chain"
        (chain_root / "environments").mkdir(parents=True)
        key, _, _ = load_signing_key(chain_root, create=True)
        register(chain_root, key, valid_from=START - timedelta(days=1))
        signer = LocalSigner(key)
        build_chain(chain_root, signer, 10_000)
        t0 = time.perf_counter()
        records = RecordStore(chain_root, "prod").records()
        verify_s = time.perf_counter() - t0
        assert len(records) == 10_000
        print(f"verified a chain of {len(records)} records in {verify_s:.2f} s", file=sys.stderr)

        hist_root = tmp / "history"
        (hist_root / "environments").mkdir(parents=True)
        register(hist_root, key, valid_from=START - timedelta(days=1))
        build_history(hist_root, signer, 1_000)
        t0 = time.perf_counter()
        report = audit(hist_root, "prod")
        audit_s = time.perf_counter() - t0
        if not report.ok:
            raise SystemExit("bench history failed its audit: " + report.violations[0].text())
        print(f"audited {report.records} records over {len(report.timeline)} timeline entries in {audit_s:.2f} s",
              file=sys.stderr)
    print(f"RESULT verify_10k_seconds={verify_s:.3f} audit_1k_seconds={audit_s:.3f}")


if __name__ == "__main__":
    main()
