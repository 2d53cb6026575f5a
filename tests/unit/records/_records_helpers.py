"""Helpers shared by the records tests."""

from __future__ import annotations

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
