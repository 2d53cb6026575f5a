"""The jobs that act on an environment keep their local state outside the checkout.

Without ``PROMOTION_STATE`` the state folder is the checkout's ``.promotion/``, and a
commit on main that force-adds a rollout state there (``git add -f``) was resumed by the
rollout job: promoted, with a signed record, no gate run. The commands refuse a tracked
state folder themselves (tests/unit/rollout/test_trusted_state.py); the workflows put it
where no commit can reach: the runner's temporary directory, fresh for every job.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.unit.workflows.conftest import WORKFLOWS

STATE = "${{ runner.temp }}/promotion-state"
# the commands that read or write local state: rollout state, signing key, embedded registry
ACTS = re.compile(r"\bpromotion\s+(?:--root\s+\S+\s+)?(rollout|rollback|reconcile|gate)\b(?!.*--list)")
FILES = ["rollout.yml", "rollback.yml", "reconcile.yml", "gates.yml"]
ALL = sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def _load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


@pytest.mark.parametrize("name", FILES)
def test_every_step_that_acts_on_state_keeps_it_in_the_runners_temporary_directory(name):
    acting = []
    for job_id, job in _load(name)["jobs"].items():
        for step in job.get("steps") or []:
            match = ACTS.search(step.get("run", ""))
            if match:
                acting.append(match.group(1))
                env = step.get("env") or {}
                assert env.get("PROMOTION_STATE") == STATE, \
                    f"{name}: job {job_id}, step {step.get('name')!r} runs `promotion {match.group(1)}` with its " \
                    f"state in the checkout (set PROMOTION_STATE: {STATE})"
    assert acting, f"{name}: no step runs promotion rollout, rollback, reconcile or gate"


@pytest.mark.parametrize("name", ALL)
def test_no_job_env_names_the_runner_context(name):
    # GitHub evaluates a job's env before it has a runner: `runner.temp` there fails the run
    wf = _load(name)
    for job_id, job in wf["jobs"].items():
        for scope in (wf.get("env") or {}, job.get("env") or {}):
            for key, value in scope.items():
                assert "runner." not in str(value), f"{name}: job {job_id} env {key}: set it on the step"
