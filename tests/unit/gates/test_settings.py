"""Each gate owns its settings: schema fragment, defaults and typed settings, composed from the registry."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from _gate_helpers import write_policy
from promotion.cli import main
from promotion.config import Project, schema, schema_validator
from promotion.gates import GATES, gate_class, run_gates


def _validate(repo, capsys) -> tuple[int, list[str]]:
    code = main(["--root", str(repo), "validate"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_every_registered_gate_carries_a_schema_defaults_and_typed_settings():
    for name in GATES:
        cls = gate_class(name)
        assert cls.name == name
        settings = cls.with_defaults({})
        assert schema_validator(cls.schema).is_valid(settings), name
        assert cls.Settings.from_mapping(settings) is not None
    assert set(schema("policy")["properties"]["gates"]["properties"]) == set(GATES)


@pytest.mark.parametrize("body, line", [
    ("  drift:\n    psi_max: 0.2\n    psi_maxx: 0.2\n", "policies/prod.yaml:6 gates.drift: unknown field(s): psi_maxx"),
    ("  metrics: {}\n  vibes: {}\n", "policies/prod.yaml:5 gates: unknown field(s): vibes"),
    ("  drift:\n    ks_p_min: 2\n", "policies/prod.yaml:5 gates.drift.ks_p_min: must be <= 1"),
    ("  cost:\n    budget: {cpu_ms: 3}\n", "policies/prod.yaml:5 gates.cost.budget: unknown field(s): cpu_ms"),
    ("  artifact:\n    allow_code: maybe\n", "policies/prod.yaml:5 gates.artifact.allow_code: must be true or false"),
    ("  metrics:\n    absolute:\n      rmse: {maximum: 3}\n",
     "policies/prod.yaml:6 gates.metrics.absolute.rmse: unknown field(s): maximum"),
])
def test_an_unknown_gate_or_setting_is_one_line_with_file_and_line(repo, capsys, body, line):
    write_policy(repo, body)
    code, err = _validate(repo, capsys)
    assert code == 2 and err == [line]


def test_the_shipped_policies_keep_every_field_after_the_move(repo):
    project = Project(repo)
    assert project.validate_all() == []
    policy = project.policy_for(project.environment("prod"))
    assert policy.gates["approvals"]["changes_requested_blocks"] is True
    assert policy.gates["promotion_path"] == {"min_soak_s": 0}
    assert policy.governance["required"] == 2
    text = (repo / "policies" / "prod.yaml").read_text()
    (repo / "policies" / "prod.yaml").write_text(text.replace("  promotion_path: {}", "  promotion_path: {min_soak_s: 60}")
                                                 .replace("    codeowners: true", "    codeowners: true\n    changes_requested_blocks: false"))
    policy = project.policy_for(project.environment("prod"))
    assert policy.gates["promotion_path"]["min_soak_s"] == 60 and policy.gates["approvals"]["changes_requested_blocks"] is False


ACME = textwrap.dedent('''
    from dataclasses import dataclass
    from promotion.gates.base import Check, GateSpec


    @dataclass(frozen=True)
    class AcmeSettings:
        auc_min: float

        @classmethod
        def from_mapping(cls, m):
            return cls(float(m["auc_min"]))


    class AcmeGate(GateSpec):
        name = "acme"
        schema = {"type": "object", "additionalProperties": False,
                  "properties": {"auc_min": {"type": "number", "minimum": 0, "maximum": 1}}}
        defaults = {"auc_min": 0.9}
        Settings = AcmeSettings

        def evaluate(self, ctx, settings):
            s = self.Settings.from_mapping(settings)
            return [Check.judge("acme.auc", 0.93, f">= {s.auc_min}", 0.93 >= s.auc_min, "a fixed AUC")]
''')


def test_a_new_gate_is_one_file_and_one_registry_line(repo, tmp_path, monkeypatch, capsys):
    (tmp_path / "acme_gate.py").write_text(ACME)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(GATES, "acme", "acme_gate:AcmeGate")
    schema.cache_clear()
    try:
        write_policy(repo, "  acme: {}\n")
        project = Project(repo)
        assert project.validate_all() == []
        (check,) = run_gates(project, "prod").checks
        assert check.name == "acme.auc" and check.threshold == ">= 0.9" and check.passed
        write_policy(repo, "  acme: {auc_min: 1.5}\n")
        capsys.readouterr()
        assert _validate(repo, capsys) == (2, ["policies/prod.yaml:4 gates.acme.auc_min: must be <= 1"])
    finally:
        monkeypatch.delitem(GATES, "acme")
        schema.cache_clear()


def test_loading_a_policy_imports_no_heavy_library(repo):
    probe = textwrap.dedent(f'''
        import sys
        from pathlib import Path
        from promotion.config import Project
        project = Project(Path({str(repo)!r}))
        assert project.validate_all() == []
        project.policy_for(project.environment("prod"))
        import promotion.gates.artifact, promotion.gates.cost, promotion.gates.drift
        print(sorted(m for m in ("numpy", "pandas", "mlflow", "scipy", "picklescan", "sklearn", "jsonschema_rs")
                     if m in sys.modules))
    ''')
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
