"""Config files: schema errors name file, line and field; the CLI exits 2 and changes nothing."""

from __future__ import annotations

import pytest

from promotion._internal import yamlio
from promotion.cli import main
from promotion.config import Project
from promotion.errors import ConfigError


def _replace(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_shipped_files_are_valid_and_reproduce_reference_criteria(repo):
    proj = Project(repo)
    assert proj.validate_all() == []
    policy = proj.policy_for(proj.environment("prod"))
    m = policy.gates["metrics"]
    assert m["absolute"]["recall"] == {"min": 0.95}
    assert m["absolute"]["fpr"] == {"max": 0.02}
    assert m["absolute"]["latency_p95_ms"] == {"max": 100}
    assert m["relative"]["f1"] == {"min_ratio": 1.01}
    assert policy.gates["drift"]["psi_max"] == 0.2 and policy.gates["drift"]["ks_p_min"] == 0.01
    assert policy.gates["fairness"]["tpr_gap_max"] == 0.03
    assert policy.slo.error_rate_max == 0.05 and policy.slo.latency_p95_ms_max == 100
    assert [s.weight for s in policy.steps] == [5, 25, 100]
    assert policy.analysis["alpha"] == 0.05


def test_latency_floor_reaches_the_analysis_and_a_negative_one_is_refused(repo, capsys):
    from promotion.analysis import AnalysisSettings

    proj = Project(repo)
    assert AnalysisSettings.from_policy(proj.policy_for(proj.environment("prod"))).latency_min_added_ms == 3
    _replace(repo / "policies" / "prod.yaml", "latency_min_added_ms: 3", "latency_min_added_ms: -1")
    assert main(["--root", str(repo), "validate"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("policies/prod.yaml:")
    assert "analysis.latency_min_added_ms: must be >= 0" in lines[0]


def test_version_must_be_integer_names_file_line_and_path(repo, capsys):
    env = repo / "environments" / "prod.yaml"
    before = env.read_text()
    _replace(env, "  version: 1", "  version: seven")
    assert main(["--root", str(repo), "validate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["environments/prod.yaml:9 model.version: must be an integer"]
    assert env.read_text() == before.replace("  version: 1", "  version: seven", 1)  # untouched by validate


def test_every_problem_gets_its_own_line(repo, capsys):
    _replace(repo / "policies" / "prod.yaml", "psi_max: 0.2", "psi_max: high")
    _replace(repo / "policies" / "prod.yaml", "alpha: 0.05", "alpha: 0.9")
    _replace(repo / "environments" / "staging.yaml", "  source: scrape", "  source: graphite")
    assert main(["--root", str(repo), "validate"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert any(l.startswith("policies/prod.yaml:") and "gates.drift.psi_max: must be a number" in l for l in lines)
    assert any("analysis.alpha: must be < 0.5" in l for l in lines)
    assert any(l.startswith("environments/staging.yaml:") and "metrics.source: must be one of" in l for l in lines)
    assert all("Traceback" not in l for l in lines)


def test_unknown_field_is_named(repo):
    _replace(repo / "policies" / "prod.yaml", "  fairness:\n", "  fairnes:\n")
    with pytest.raises(ConfigError) as exc:
        Project(repo).policy_for(Project(repo).environment("prod"))
    assert "gates: unknown field(s): fairnes" in exc.value.diagnostics()
    assert exc.value.diagnostics().startswith("policies/prod.yaml:")


@pytest.mark.parametrize("text, needle", [
    ("model: !!python/object/apply:os.system ['true']\n", "YAML tag"),
    ("a: &x 1\nb: *x\n", "anchors and aliases"),
    ("model:\n  version: 1\n  version: 2\n", "duplicate key"),
    ("model: [\n", "invalid YAML"),
    ("--- 1\n--- 2\n", "one YAML document"),
])
def test_hostile_yaml_is_refused_with_a_line(text, needle):
    with pytest.raises(ConfigError) as exc:
        yamlio.loads(text, "environments/prod.yaml")
    msg = exc.value.diagnostics()
    assert msg.startswith("environments/prod.yaml:") and needle in msg


def test_huge_file_is_refused_before_parsing(tmp_path):
    big = tmp_path / "prod.yaml"
    big.write_text("a: " + "x" * (yamlio.MAX_BYTES + 10))
    with pytest.raises(ConfigError, match="limit is"):
        yamlio.load(big)


def test_policy_weights_must_end_at_100(repo):
    _replace(repo / "policies" / "prod.yaml", "    - {weight: 100}", "    - {weight: 50}")
    with pytest.raises(ConfigError, match=r"rollout.steps\[2\].weight: the last step must be 100"):
        Project(repo).policy_for(Project(repo).environment("prod"))


def test_environment_name_must_match_file(repo):
    _replace(repo / "environments" / "dev.yaml", "environment: dev", "environment: prod")
    problems = Project(repo).validate_all()
    assert any(p.startswith("environments/dev.yaml:4 environment: must be 'dev'") for p in problems)


def test_bad_cli_arguments_exit_2_with_one_line(capsys):
    assert main(["rollout"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "required" in err[0]
    assert main(["no-such-command"]) == 2


def test_unknown_environment_is_bad_input(repo, capsys):
    assert main(["--root", str(repo), "rollout", "qa"]) == 2
    assert "environments/qa.yaml:1 (document): no such environment (known: dev, prod, staging)" in capsys.readouterr().err
