"""Hostile input: every command refuses it in one line naming the file, exit 2, and changes nothing.

A repository writer controls every file these commands read. Each case below writes one
hostile file into a copy of this project's repository, commits it, runs the CLI through
``promotion.cli.main`` and checks what an operator sees: the exit code, one line on
stderr naming the file, no traceback, and no change to the repository or local state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promotion._internal import yamlio
from promotion.cli import main
from promotion.errors import ConfigError, UsageError

ENV, POLICY, TRUST = "environments/prod.yaml", "policies/prod.yaml", "environments/trust.yaml"
RECORD = "environments/records/prod/000001-promote-v1.json"

BILLION_LAUGHS = b"".join(
    [b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [b"%c: &%c [%s]\n" % (c, c, b",".join([b"*%c" % (c - 1)] * 9)) for c in b"bcdefghi"])


def _edit(old: bytes, new: bytes):
    def make(current: bytes) -> bytes:
        assert old in current
        return current.replace(old, new, 1)
    return make


# (name, target, content): bytes, a function of the current bytes, "DIR" or "FIFO"
CONFIG_CASES = [
    ("nan-threshold", POLICY, _edit(b"alpha: 0.05", b"alpha: .nan")),
    ("inf-threshold", POLICY, _edit(b"psi_max: 0.2\n", b"psi_max: .inf\n")),
    ("overflowing-float", POLICY, _edit(b"latency_p95_ms_max: 100", b"latency_p95_ms_max: 1.0e+999")),
    ("5000-digit-version", ENV, _edit(b"version: 1\n", b"version: " + b"1" * 5000 + b"\n")),
    ("version-beyond-64-bits", ENV, _edit(b"version: 1\n", b"version: 99999999999999999999\n")),
    ("nested-brackets", ENV, b"[" * 1024),
    ("nested-mappings", POLICY, b"".join(b"  " * i + b"k:\n" for i in range(200))),
    ("billion-laughs", ENV, BILLION_LAUGHS),
    ("binary", ENV, bytes(range(256)) * 4),
    ("invalid-utf8", POLICY, b"apiVersion: promotion/v1\nenvironment: \xff\xfe\n"),
    ("nul-character", ENV, b"apiVersion: promotion/v1\x00\n"),
    ("over-1-MiB", ENV, b"apiVersion: promotion/v1\n#" + b"x" * (1 << 20) + b"\n"),
    ("directory", ENV, "DIR"),
    ("policy-directory", POLICY, "DIR"),
    ("fifo", ENV, "FIFO"),
    ("impossible-date", TRUST, b"keys:\n  - keyid: k\n    public_key: k.pub\n    valid_from: 2025-02-30\n"),
]
TRUST_CASES = [
    ("trust-nan", TRUST, b"keys: []\nidentities: []\nsigstore: {trusted_root: .nan}\n"),
    ("trust-nested", TRUST, b"keys: " + b"[" * 1024),
    ("trust-binary", TRUST, bytes(range(256)) * 4),
    ("trust-directory", TRUST, "DIR"),
    ("trust-billion-laughs", TRUST, BILLION_LAUGHS),
    ("trust-key-is-a-device", TRUST, b"keys:\n  - keyid: k\n    public_key: /dev/zero\n"
                                      b"    valid_from: 2025-01-01T00:00:00Z\n"),
]
RECORD_CASES = [
    ("record-nested", RECORD, b"[" * 1024),
    ("record-nested-objects", RECORD, b'{"a":' * 500 + b"1" + b"}" * 500),
    ("record-5000-digit-integer", RECORD, b'{"payload": ' + b"9" * 5000 + b"}"),
    ("record-integer-beyond-64-bits", RECORD, b'{"payload": 99999999999999999999}'),
    ("record-nan", RECORD, b'{"payload": NaN, "payloadType": "x", "signatures": []}'),
    ("record-infinity", RECORD, b'{"payload": 1e999, "payloadType": "x", "signatures": []}'),
    ("record-binary", RECORD, bytes(range(256)) * 4),
    ("record-directory", RECORD, "DIR"),
]


def _place(root: Path, target: str, content) -> None:
    path = root / target
    path.parent.mkdir(parents=True, exist_ok=True)
    current = path.read_bytes() if path.is_file() else b""
    if path.exists():
        path.unlink()
    if content == "DIR":
        path.mkdir()
        (path / "README").write_text("a directory where a file belongs\n")
    elif content != "FIFO":
        path.write_bytes(content(current) if callable(content) else content)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "hostile input", "--allow-empty")
    if content == "FIFO":
        os.mkfifo(path)  # git neither tracks nor shows it


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def _snapshot(root: Path, state: Path) -> tuple:
    files = sorted(str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()) if state.exists() else []
    return _git(root, "status", "--porcelain", "--ignored", "--untracked-files=all"), _git(root, "rev-parse", "HEAD"), files


def _refused(root: Path, capsys, argv: list[str], shows: str, code: int = 2) -> str:
    """Run ``argv``; assert exit ``code``, one line on stderr showing ``shows``, nothing changed."""
    state = Path(os.environ["PROMOTION_STATE"])
    before = _snapshot(root, state)
    assert main(["--root", str(root), *argv]) == code
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert "Traceback" not in out.out + out.err
    assert len(lines) == 1, lines
    assert shows in lines[0]
    assert _snapshot(root, state) == before
    assert not any(state.rglob("*.json")) and not any(state.rglob("mlflow.db"))
    return lines[0]


@pytest.fixture
def hostile_repo(repo):
    """This project's environments and policies with a trust file, committed."""
    (repo / TRUST).write_text("keys: []\nidentities: []\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "trust file")
    return repo


# -- validate, gate, rollout: environment, policy and trust files ---------------------

@pytest.mark.parametrize("command", [["validate"], ["gate", "prod", "--local-approvals"], ["rollout", "prod"]])
@pytest.mark.parametrize("name, target, content", CONFIG_CASES[:-1], ids=[c[0] for c in CONFIG_CASES[:-1]])
def test_config_commands_refuse_hostile_config_files(hostile_repo, capsys, command, name, target, content):
    _place(hostile_repo, target, content)
    line = _refused(hostile_repo, capsys, command, shows=target + ":")
    assert line.startswith(target + ":")


@pytest.mark.parametrize("name, target, content", [CONFIG_CASES[-1]] + TRUST_CASES,
                         ids=[c[0] for c in [CONFIG_CASES[-1]] + TRUST_CASES])
def test_validate_refuses_a_hostile_trust_file(hostile_repo, capsys, name, target, content):
    _place(hostile_repo, target, content)
    assert _refused(hostile_repo, capsys, ["validate"], shows=TRUST + ":").startswith(TRUST + ":")


def test_nan_and_inf_thresholds_are_each_named_by_validate(hostile_repo, capsys):
    policy = hostile_repo / POLICY
    text = policy.read_text()
    for old, new in [("alpha: 0.05", "alpha: .nan"), ("psi_max: 0.2\n", "psi_max: .inf\n"),
                     ("ks_p_min: 0.01", "ks_p_min: -.inf"), ("latency_p95_ms_max: 100", "latency_p95_ms_max: .NaN")]:
        assert old in text
        text = text.replace(old, new, 1)
    policy.write_text(text)
    assert main(["--root", str(hostile_repo), "validate"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "gates.drift.psi_max: must be a finite number (got .inf)",
        "gates.drift.ks_p_min: must be a finite number (got -.inf)",
        "slo.latency_p95_ms_max: must be a finite number (got .NaN)",
        "analysis.alpha: must be a finite number (got .nan)",
    ]
    assert all(line.startswith("policies/prod.yaml:") for line in lines)
    alpha_line = text.splitlines().index(next(l for l in text.splitlines() if "alpha: .nan" in l)) + 1
    assert lines[-1].startswith(f"policies/prod.yaml:{alpha_line} ")


@pytest.mark.parametrize("old, new, field", [
    (b"routing_key_header: X-Routing-Key", b'routing_key_header: "X-Routing-Key\\n"', "serving.routing_key_header"),
    (b"admin_token_env: PROMOTION_ADMIN_TOKEN", b'admin_token_env: "PROMOTION_ADMIN_TOKEN\\n"', "serving.admin_token_env"),
    (b"name: fraud-detector", b'name: "fraud-detector\\n"', "model.name"),
], ids=["header-name", "token-variable", "model-name"])
def test_a_final_line_break_does_not_satisfy_a_pattern(hostile_repo, capsys, old, new, field):
    # Python's `$` matches before a final newline; JSON Schema's does not
    _place(hostile_repo, ENV, _edit(old, new))
    line = _refused(hostile_repo, capsys, ["validate"], shows=f"{field}: ")
    assert line.startswith(ENV + ":") and "does not match" in line


def test_a_link_to_a_file_outside_the_repository_is_not_read(hostile_repo, capsys, tmp_path):
    secret = tmp_path / "runner-secret.yaml"
    secret.write_text("environment: hunter2-secret-value\n")
    (hostile_repo / ENV).unlink()
    (hostile_repo / ENV).symlink_to(secret)
    _git(hostile_repo, "add", "-A")
    _git(hostile_repo, "commit", "-qm", "link")
    for command in (["validate"], ["gate", "prod", "--local-approvals"], ["rollout", "prod"]):
        line = _refused(hostile_repo, capsys, command, shows=ENV + ":1 (document): is a link to outside the repository")
        assert "hunter2" not in line


# -- verify: records and the trust file -------------------------------------------------

@pytest.mark.parametrize("name, target, content", RECORD_CASES + TRUST_CASES, ids=[c[0] for c in RECORD_CASES + TRUST_CASES])
def test_verify_refuses_hostile_records_and_trust_files(hostile_repo, capsys, name, target, content):
    if target == TRUST:  # give verify a signed record to check against the trust file
        from promotion.records import write_record

        write_record(hostile_repo, "prod", action="promote", model="fraud-detector", version=1,
                     digest="sha256:" + "0" * 64, from_env=None, to_env="prod", checks=[], approvers=[], steps=[],
                     rollback_target=None, data_snapshot=None, code_commit=None, policy_digest=None,
                     source_commit=None, signer="local")
    _place(hostile_repo, target, content)
    _refused(hostile_repo, capsys, ["verify"], shows=target)


def test_verify_reports_a_wrongly_typed_record_in_one_line(hostile_repo, capsys):
    _place(hostile_repo, RECORD, b'{"payload": 1, "payloadType": [], "signatures": [{"keyid": 1, "sig": {}}]}')
    line = _refused(hostile_repo, capsys, ["verify"], shows=RECORD, code=1)
    assert "malformed" in line


# -- audit: history holding hostile files -------------------------------------------------

@pytest.mark.parametrize("name, target, content", [c for c in CONFIG_CASES if c[1] == ENV and c[2] != "FIFO"]
                         + RECORD_CASES[:-1], ids=[c[0] for c in CONFIG_CASES if c[1] == ENV and c[2] != "FIFO"]
                         + [c[0] for c in RECORD_CASES[:-1]])
def test_audit_names_a_hostile_file_in_history_without_a_traceback(hostile_repo, capsys, name, target, content):
    # a hostile file in history is a finding (exit 1, a violation naming it), not a crash
    _place(hostile_repo, target, content)
    state = Path(os.environ["PROMOTION_STATE"])
    before = _snapshot(hostile_repo, state)
    assert main(["--root", str(hostile_repo), "audit", "prod"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    violations = [line for line in out.err.splitlines() if line.startswith("violation: ")]
    assert violations and violations == out.err.strip().splitlines()
    assert any(f"violation: {target}:" in line for line in violations)
    assert _snapshot(hostile_repo, state) == before


# -- environment names ----------------------------------------------------------------------

BAD_NAMES = ["../../etc", "prod/../staging", "../policies/prod", "a\\b", "..", ".hidden", "-x", "a\x00b",
             "a" * 65, "Prod", "prod ", "prod\n"]
NAMED_COMMANDS = [
    lambda n: ["gate", "--local-approvals", "--", n], lambda n: ["rollout", "--", n],
    lambda n: ["audit", "--", n], lambda n: ["verify", f"--env={n}"], lambda n: ["status", "--", n],
    lambda n: ["rollback", "--reason", "r", "--", n], lambda n: ["approve", "--by", "x", "--", n],
    lambda n: ["reconcile", "--", n], lambda n: ["serve", "--dry-run", "--", n],
    lambda n: ["propose", "--version", "2", "--", n],
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_an_environment_name_that_could_name_a_path_is_refused_everywhere(hostile_repo, capsys, name):
    for command in NAMED_COMMANDS:
        argv = command(name)
        line = _refused(hostile_repo, capsys, argv, shows="not an environment name")
        assert line.startswith(f"error: promotion {argv[0]}: environment ")


def test_library_paths_refuse_a_path_like_environment_name(hostile_repo):
    from promotion.config import Project
    from promotion.records import RecordStore, records_dir

    project = Project(hostile_repo)
    for call in (lambda: project.environment("../policies/prod"), lambda: project.records_dir("../../x"),
                 lambda: records_dir(hostile_repo, "prod/../../x"), lambda: RecordStore(hostile_repo, "..").records()):
        with pytest.raises(UsageError, match="not an environment name"):
            call()


def test_schemas_use_the_one_environment_name_pattern():
    from promotion.config import ENV_NAME_PATTERN, schema

    assert schema("environment")["properties"]["environment"]["pattern"] == ENV_NAME_PATTERN
    policy = schema("policy")["properties"]
    assert policy["environment"]["pattern"] == ENV_NAME_PATTERN
    assert policy["promotion_path"]["properties"]["requires_record_from"]["pattern"] == ENV_NAME_PATTERN


# -- the GitHub event payload --------------------------------------------------------------

def test_a_hostile_event_payload_is_one_line(hostile_repo, capsys, tmp_path, monkeypatch):
    event = tmp_path / "event.json"
    event.write_bytes(b"[" * 1024)
    monkeypatch.setenv("GITHUB_EVENT_NAME", "pull_request")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    line = _refused(hostile_repo, capsys, ["github", "changed"], shows=str(event))
    assert "nested deeper than 64 levels" in line


# -- the bounds themselves -----------------------------------------------------------------

def test_json_bounds():
    from promotion._internal import safeload

    depth = safeload.MAX_DEPTH
    assert safeload.json_loads("[" * depth + "]" * depth) is not None
    assert safeload.json_loads(json.dumps({"v": safeload.INT_MAX, "w": safeload.INT_MIN, "x": 1e308}))
    for text, message in [("[" * (depth + 1) + "]" * (depth + 1), "nested deeper than 64"),
                          ("[" * 100_000, "nested deeper than 64"),
                          (str(safeload.INT_MAX + 1), "outside the 64-bit range"),
                          ("9" * 5000, "integer of 5000 digits is outside the 64-bit range"), ("NaN", "NaN"), ("[-Infinity]", "Infinity"),
                          ("1e999", "not finite")]:
        with pytest.raises(safeload.Refused, match=message):
            safeload.json_loads(text)
    with pytest.raises(ValueError):
        safeload.json_loads(b"\xff")


def test_yaml_bounds():
    from promotion._internal import safeload

    depth = yamlio.MAX_DEPTH
    assert yamlio.loads("a: " + "[" * (depth - 1) + "]" * (depth - 1)).data
    for text, message in [
        ("a: " + "[" * depth + "]" * depth, ":1 (document): nested deeper than 64 levels"),
        ("a: 1\nb:\n  c: &x [1]\n  d: *x\n", ":4 (document): YAML anchors and aliases are not allowed"),
        ("a: [" + "1," * yamlio.MAX_NODES + "1]\n", f"more than {yamlio.MAX_NODES} values"),
        (f"a: {safeload.INT_MAX + 1}\n", ":1 a: integer 9223372036854775808 is outside the 64-bit range"),
        ("a: " + "1:" * 50 + "1\n", ":1 a: integer of 101 digits is outside the 64-bit range"),
        ("a:\n  b: .inf\n  c: [1, .nan]\n", ":2 a.b: must be a finite number"),
    ]:
        with pytest.raises(ConfigError) as exc:
            yamlio.loads(text, "f.yaml")
        assert message in exc.value.diagnostics() and exc.value.diagnostics().startswith("f.yaml:")
    with pytest.raises(ConfigError) as exc:
        yamlio.loads("a:\n  b: .inf\n  c: [1, .nan]\n", "f.yaml")
    assert exc.value.problems == ["f.yaml:2 a.b: must be a finite number (got .inf)",
                                  "f.yaml:3 a.c[1]: must be a finite number (got .nan)"]


def test_every_schema_treats_non_finite_as_not_a_number():
    from promotion.config import schema, schema_validator
    from promotion.records._fastschema import compile_schema
    from promotion.records.statement import build_statement, statement_problem

    env = {"apiVersion": "promotion/v1", "environment": "prod", "serving": {"endpoint": "http://127.0.0.1:1"},
           "metrics": {"source": "scrape"}, "model": {"name": "m", "version": 1, "digest": "sha256:" + "0" * 64}}
    policy = {"apiVersion": "promotion/v1", "environment": "prod", "gates": {"drift": {"psi_max": 0.2}},
              "rollout": {"strategy": "blue_green"}, "slo": {}}
    statement = build_statement(
        sequence=1, action="promote", model="m", version=1, digest="sha256:" + "0" * 64, from_env=None,
        to_env="prod", checks=[], approvers=[], steps=[{"weight": 5}], rollback_target=None,
        replaced_version=None, data_snapshot=None, code_commit=None, policy_digest=None, source_commit=None,
        reason=None, evidence=None, previous=None)
    assert schema_validator(schema("environment")).is_valid(env)
    assert schema_validator(schema("policy")).is_valid(policy)
    assert statement_problem(statement) is None and statement_problem(statement, full=True) is None
    for value in (float("nan"), float("inf"), float("-inf")):
        assert not schema_validator({"type": "number", "minimum": 0}).is_valid(value)
        assert not schema_validator({"type": "integer"}).is_valid(value)
        assert not compile_schema({"type": "number"})(value)
        env["model"]["version"] = value
        assert not schema_validator(schema("environment")).is_valid(env)
        policy["gates"]["drift"]["psi_max"] = value
        assert not schema_validator(schema("policy")).is_valid(policy)
        statement["predicate"]["steps"][0]["weight"] = value
        assert statement_problem(statement) is not None and statement_problem(statement, full=True) is not None


@pytest.mark.skipif(sys.platform != "linux", reason="/dev/zero and FIFOs as Linux has them")
def test_special_files_are_refused_without_reading(tmp_path):
    from promotion._internal import safeload

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path, message in [(Path("/dev/zero"), "not a regular file"), (fifo, "not a regular file"),
                          (tmp_path, "is a directory")]:
        with pytest.raises(ConfigError, match=message):
            safeload.read_text(path, "x.yaml")
