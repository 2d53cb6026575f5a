"""The harness itself, on a tiny workflow: if it lies, every workflow test lies."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.support.workflow_runner import (
    WorkflowRunner, evaluate, install_venv_shim, pull_request_payload, push_payload,
    workflow_dispatch_payload)
from tests.unit.workflows.conftest import edit, git

TINY = textwrap.dedent("""\
    name: tiny
    on:
      push:
      workflow_dispatch:
        inputs:
          who: {type: string, required: true}
          where: {type: choice, options: [dev, prod], default: dev}
    permissions: {}
    env:
      LEVEL: workflow
      SHARED: from-workflow
    jobs:
      first:
        runs-on: ubuntu-latest
        env:
          SHARED: from-job
          WHO: ${{ inputs.who }}
          SECRET: ${{ secrets.API_KEY }}
          COLOUR: ${{ vars.COLOUR || 'grey' }}
        outputs:
          list: ${{ steps.emit.outputs.list }}
        steps:
          - uses: actions/checkout@0000000000000000000000000000000000000000 # v0
            with:
              path: src
              persist-credentials: false
          - uses: actions/setup-python@0000000000000000000000000000000000000000 # v0
            with: {python-version: "3.11"}
          - name: contract
            env:
              SHARED: from-step
            run: |
              echo "event=$GITHUB_EVENT_NAME who=$WHO shared=$SHARED level=$LEVEL colour=$COLOUR secret=$SECRET"
              python3 -c 'import json,os; print("sender", json.load(open(os.environ["GITHUB_EVENT_PATH"]))["sender"]["login"])'
              test -f src/marker
              test "$GITHUB_SHA" = "$(git -C src rev-parse HEAD)"
              echo "REMEMBERED=yes" >> "$GITHUB_ENV"
              echo "## hello from $WHO" >> "$GITHUB_STEP_SUMMARY"
          - id: emit
            run: |
              test "$REMEMBERED" = yes
              echo 'list=["dev", "prod"]' >> "$GITHUB_OUTPUT"
              {
                echo "multi<<EOF"
                echo "line one"
                echo "line two"
                echo "EOF"
              } >> "$GITHUB_OUTPUT"
          - name: echo output
            env:
              MULTI: ${{ steps.emit.outputs.multi }}
            run: echo "multi=[$MULTI]"
      fan:
        name: fan (${{ matrix.env }})
        needs: first
        runs-on: ubuntu-latest
        strategy:
          matrix:
            env: ${{ fromJSON(needs.first.outputs.list) }}
        env:
          TARGET: ${{ matrix.env }}
        steps:
          - run: |
              echo "target=$TARGET"
              test "$TARGET" != prod
          - name: after failure
            run: echo never
          - name: cleanup
            if: ${{ !cancelled() }}
            run: echo cleanup ran
      verdict:
        needs: [first, fan]
        if: always()
        runs-on: ubuntu-latest
        steps:
          - env:
              FAN: ${{ needs.fan.result }}
            run: |
              echo "fan=$FAN"
              test "$FAN" = success
    """)


@pytest.fixture
def tiny(tmp_path: Path, repo: Path) -> tuple[WorkflowRunner, str]:
    (repo / "marker").write_text("x")
    git(repo, "add", "marker")
    git(repo, "commit", "-q", "-m", "marker")
    wf = tmp_path / "tiny.yml"
    wf.write_text(TINY)
    runner = WorkflowRunner(wf, repo=repo, workdir=tmp_path / "runs", secrets={"API_KEY": "s3cret"},
                            vars={})
    return runner, git(repo, "rev-parse", "HEAD")


def test_runs_steps_with_the_runner_contract_and_env_precedence(tiny):
    runner, sha = tiny
    payload = workflow_dispatch_payload(repository="acme/models", inputs={"who": "mallory"}, sender="bob")
    run = runner.run("workflow_dispatch", payload, sha=sha, ref="refs/heads/main", inputs={"who": "mallory"})
    first = run.jobs["first"]
    assert first.conclusion == "success", first.output
    out = first.step("contract").stdout
    assert "event=workflow_dispatch who=mallory shared=from-step level=workflow colour=grey secret=s3cret" in out
    assert "sender bob" in out
    assert "## hello from mallory" in first.summary
    assert first.outputs == {"list": '["dev", "prod"]'}
    assert "multi=[line one\nline two]" in first.step("echo output").stdout


def test_force_env_wins_over_the_workflows_env_and_base_env_does_not(tiny):
    runner, sha = tiny
    runner.base_env = {"SHARED": "from-runner", "LEVEL": "from-runner"}
    runner.force_env = {"LEVEL": "forced"}
    payload = workflow_dispatch_payload(repository="acme/models", inputs={"who": "x"})
    run = runner.run("workflow_dispatch", payload, sha=sha, ref="refs/heads/main", inputs={"who": "x"})
    assert "shared=from-step level=forced" in run.jobs["first"].step("contract").stdout


def test_matrix_from_outputs_failure_stops_steps_and_always_runs(tiny):
    runner, sha = tiny
    payload = workflow_dispatch_payload(repository="acme/models", inputs={"who": "x"})
    run = runner.run("workflow_dispatch", payload, sha=sha, ref="refs/heads/main", inputs={"who": "x"})
    assert run.jobs["first"].conclusion == "success", run.jobs["first"].output
    dev, prod = run.jobs["fan (dev)"], run.jobs["fan (prod)"]
    assert dev.conclusion == "success" and "target=dev" in dev.output
    assert prod.conclusion == "failure"
    assert prod.step("after failure").outcome == "skipped"
    assert prod.step("cleanup").stdout == "cleanup ran\n"
    verdict = run.jobs["verdict"]
    assert verdict.conclusion == "failure" and "fan=failure" in verdict.output


def test_dispatch_inputs_are_checked_like_github():
    wf_inputs = {"who": "x", "where": "staging"}
    runner = WorkflowRunner.__new__(WorkflowRunner)
    import yaml
    runner.workflow = yaml.safe_load(TINY)
    runner.on = runner.workflow[True]
    with pytest.raises(ValueError, match="not one of"):
        runner._dispatch_inputs(wf_inputs)
    with pytest.raises(ValueError, match="required"):
        runner._dispatch_inputs({})
    assert runner._dispatch_inputs({"who": "x"}) == {"who": "x", "where": "dev"}


def test_rejects_events_the_workflow_does_not_take(tiny):
    runner, sha = tiny
    with pytest.raises(ValueError, match="not triggered"):
        runner.run("pull_request_target", {}, sha=sha, ref="refs/heads/main")


def test_unknown_actions_are_not_silently_skipped(tmp_path, repo):
    wf = tmp_path / "w.yml"
    wf.write_text("on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - uses: evil/action@v1\n")
    runner = WorkflowRunner(wf, repo=repo, workdir=tmp_path / "runs")
    with pytest.raises(NotImplementedError, match="evil/action"):
        runner.run("push", {}, sha=git(repo, "rev-parse", "HEAD"), ref="refs/heads/main")


def test_expressions():
    ctx = {"github": {"event": {"pull_request": {"number": 7}}, "ref": "refs/heads/main"},
           "vars": {}, "needs": {"a": {"result": "skipped"}}}
    assert evaluate("github.event.pull_request.number", ctx) == 7
    assert evaluate("vars.NAME || 'bot'", ctx) == "bot"
    assert evaluate("needs.a.result == 'SKIPPED'", ctx) is True
    assert evaluate("format('refs/heads/{0}', 'main') == github.ref", ctx) is True
    assert evaluate("fromJSON('[1, 2]')", ctx) == [1, 2]
    assert evaluate("!cancelled()", ctx, "failure") is True


def test_venv_shim_makes_make_install_a_noop_and_runs_the_checkouts_code(tmp_path, repo):
    import subprocess

    install_venv_shim(repo)
    proc = subprocess.run(["make", "-n", "install"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0 and "pip install" not in proc.stdout, proc.stdout
    assert "skew" not in proc.stderr and "future" not in proc.stderr, proc.stderr
    proc = subprocess.run([str(repo / ".venv/bin/promotion"), "validate"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "environment file(s)" in proc.stdout


def test_payloads_carry_the_documented_fields():
    pr = pull_request_payload(repository="acme/models", number=3, base_sha="a" * 40, head_sha="b" * 40)
    assert pr["pull_request"]["base"]["sha"] == "a" * 40 and pr["number"] == 3
    assert pr["repository"]["default_branch"] == "main"
    push = push_payload(repository="acme/models", before="c" * 40, after="d" * 40)
    assert push["ref"] == "refs/heads/main" and push["created"] is False
    json.dumps([pr, push])
