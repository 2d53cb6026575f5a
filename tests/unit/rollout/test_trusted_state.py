"""What a rollout trusts: never a state folder the repository carries, never a saved state
the records do not explain, never saved gate results, never a switch of model.

Each test is an attack that worked before: a ``.promotion/`` committed with ``git add -f``
(the workflows kept state in the checkout) resumed as "promoting" and signed a record
naming approvers no gate saw; a state written into the state folder by anyone else did
the same, or rolled the environment "back" to a version no record put there; and an
environment file switched to another registered model was deployed at 100% with no
canary, because no champion of the new name existed.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.cli import main
from promotion.config import Project
from promotion.errors import RolloutError
from promotion.records import RecordStore, record_files
from promotion.rollout import Context, Phase, RolloutState, StateStore, start, tick
from promotion.rollout.controller import run
from promotion.rollout.state import EventLog
from tests.unit.rollout.conftest import Clock, RouterDouble, SimulatedService, git_log
from tests.unit.rollout.test_controller import HEALTHY, _promote_record, _setup, _tick_until

PLANTED_STATE = ".promotion/rollouts/prod.json"
FORGED_CHECK = {"name": "metrics.f1", "verdict": "pass", "value": 0.99, "threshold": ">= 0.9", "message": "ok"}
FORGED_APPROVER = {"login": "cto", "commit": "abc1234"}
BLOCK = {"name": "approvals", "gate": "approvals", "value": 0, "threshold": ">= 2", "verdict": "block",
         "message": "0 of 2 approvals"}
PASS = {"name": "metrics.f1", "gate": "metrics", "value": 0.8, "threshold": ">= 0.7", "verdict": "pass",
        "message": "ok"}


def _forged(policy, digests, **fields) -> RolloutState:
    """A state nobody's gates produced: v2 replacing v1, promoting, approved by "cto"."""
    values = dict(env="prod", model="fraud-detector", canary=2, canary_digest=digests[2], champion=1,
                  champion_digest=digests[1], source_commit=None, policy_digest=policy.digest,
                  phase=Phase.PROMOTING, weight=100.0, checks=[FORGED_CHECK], approvers=[FORGED_APPROVER],
                  steps=[{"step": 1, "weight": 100.0, "verdict": "pass"}])
    values.update(fields)
    return RolloutState(**values)


def _context(repo, reg, router, gates, store=None) -> Context:
    """A controller over the files as they are now (what a new process would build)."""
    project = Project(repo)
    env = project.environment("prod")
    clock = Clock()
    store = store or StateStore(repo, "prod")
    return Context(project=project, env=env, policy=project.policy_for(env), registry=reg, traffic=router,
                   metrics=SimulatedService(router, {1: HEALTHY, 2: HEALTHY, 3: HEALTHY}, clock=clock),
                   store=store, events=EventLog(store.events_path), clock=clock, gates=gates)


def _attempt(ctx_factory):
    """Run the rollout as the CLI does; (final state or None, the refusal or None)."""
    try:
        return run(ctx_factory(), sleep=lambda s: None), None
    except RolloutError as exc:
        return None, exc.message


def _no_canary_traffic(router, canary: int = 2) -> bool:
    return all(routes.get(canary, 0.0) == 0.0 for routes in router.history)


def _all_approvers(repo) -> list[str]:
    return [a["login"] for r in RecordStore(repo, "prod").records() for a in r.predicate["approvers"]]


# -- a state folder the repository carries ------------------------------------------------


def _commit_planted_state(repo, registry, monkeypatch):
    """prod runs v1; main names v2 and carries a forged rollout state in .promotion/."""
    reg, digests = registry
    reg.set_alias("fraud-detector", "prod", 1)
    set_model(repo / "environments" / "prod.yaml", 2, digests[2])
    Git(repo).commit("propose prod v2", ["environments/prod.yaml"])
    monkeypatch.delenv("PROMOTION_STATE")  # state in the checkout, as the workflows had it
    project = Project(repo)
    planted = _forged(project.policy_for(project.environment("prod")), digests)
    path = repo / PLANTED_STATE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(planted.to_dict()))
    subprocess.run(["git", "add", "-f", PLANTED_STATE], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "chore"], cwd=repo, check=True)
    router = RouterDouble()
    router.set_routing({1: 100.0}, {1: digests[1]})
    return reg, router


def test_a_rollout_state_committed_to_the_repository_is_refused_before_anything_moves(repo, registry, monkeypatch):
    reg, router = _commit_planted_state(repo, registry, monkeypatch)
    called = []
    gates = lambda ctx, st: called.append(st.canary) or [BLOCK]  # noqa: E731 - the gates would block v2

    final, refused = _attempt(lambda: _context(repo, reg, router, gates))

    assert router.history == [{1: 100.0}], "traffic moved on a committed state"
    assert reg.alias("fraud-detector", "prod") == 1
    assert record_files(repo, "prod") == [], "a record was signed"
    assert final is None and refused is not None
    assert refused.startswith(f"the repository commits files in the local state folder .promotion/ ({PLANTED_STATE})")
    assert "set PROMOTION_STATE outside the checkout" in refused
    assert git_log(repo)[0] == "chore"


@pytest.mark.parametrize("argv", [["rollout", "prod"], ["rollback", "prod", "--reason", "on-call"],
                                  ["reconcile", "prod", "--converge"]], ids=lambda a: a[0])
def test_rollout_rollback_and_reconcile_refuse_a_committed_state_folder(repo, registry, monkeypatch, capsys, argv):
    _commit_planted_state(repo, registry, monkeypatch)
    head = Git(repo).head()

    code = main(["--root", str(repo), *argv])

    err = capsys.readouterr().err
    assert code == 1, err
    assert f"error: the repository commits files in the local state folder .promotion/ ({PLANTED_STATE})" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert Git(repo).head() == head and record_files(repo, "prod") == []


# -- a saved state the records do not explain, or that nobody's gates judged -------------------


def test_a_forged_promoting_state_is_judged_again_and_rolled_back_when_the_gates_block(repo, registry):
    """Written into the state folder (outside the checkout) by anyone but this controller."""
    called = []
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY},
                               gates=lambda ctx, st: called.append(st.canary) or [BLOCK])
    ctx.store.save(_forged(ctx.policy, registry[1]))

    final = run(ctx, sleep=lambda s: None)

    assert called == [2], "the gates did not judge the resumed canary"
    assert final.phase is Phase.ROLLED_BACK
    assert final.reason == "gates block on resume: approvals: 0 of 2 approvals"
    assert router.weights() == {1: 100.0} and _no_canary_traffic(router)
    assert ctx.registry.alias("fraud-detector", "prod") == 1
    latest = RecordStore(repo, "prod").latest()
    assert latest.action == "rollback" and latest.version == 1
    assert latest.predicate["checks"][0]["message"] == "0 of 2 approvals"
    assert "cto" not in _all_approvers(repo)


def test_a_record_carries_the_checks_and_approvers_of_this_run_never_the_saved_ones(repo, registry):
    called = []
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY},
                               gates=lambda ctx, st: called.append(st.canary) or [PASS])
    ctx.store.save(_forged(ctx.policy, registry[1]))

    final = run(ctx, sleep=lambda s: None)

    assert called == [2]
    assert final.phase is Phase.PROMOTED and router.weights() == {2: 100.0}
    latest = RecordStore(repo, "prod").latest()
    assert latest.action == "promote" and latest.version == 2
    assert [c["value"] for c in latest.predicate["checks"]] == [0.8], "the saved checks reached the record"
    assert "cto" not in _all_approvers(repo), "the saved approvers reached the record"


def test_a_saved_rollback_to_a_version_no_record_put_in_place_is_refused(repo, registry):
    """Records say prod runs v1; a saved "rollback" names v2 as the version to go back to."""
    reg, digests = registry
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY}, gates=lambda ctx, st: [PASS])
    _promote_record(repo, 1, digests[1])
    forged = _forged(ctx.policy, digests, canary=1, canary_digest=digests[1], champion=2,
                     champion_digest=digests[2], phase=Phase.ROLLING_BACK, reason="slo breach")
    ctx.store.save(forged)
    records = [r.name for r in RecordStore(repo, "prod").records()]

    final, refused = _attempt(lambda: _context(repo, reg, router, ctx.gates))

    assert router.history == [{1: 100.0}], "traffic went to the forged rollback target"
    assert reg.alias("fraud-detector", "prod") == 1
    assert [r.name for r in RecordStore(repo, "prod").records()] == records
    assert final is None and refused is not None
    assert "the saved rollout replaces fraud-detector v2, but the records of prod put fraud-detector v1" in refused
    assert "it was not saved by a rollout of this repository" in refused
    assert StateStore(repo, "prod").load().phase is Phase.ROLLING_BACK, "the refusal changed the saved state"


def test_a_rollout_resumed_by_a_new_process_is_judged_again_and_carries_on(repo, registry):
    called = []
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY},
                               gates=lambda ctx, st: called.append(st.canary) or [PASS])
    st = tick(ctx, start(ctx))
    assert st.phase is Phase.PROGRESSING and router.weights() == {1: 95.0, 2: 5.0} and called == [2]

    # a new process: the state from disk only, nothing judged yet
    fresh = Context(**{k: v for k, v in ctx.__dict__.items() if k not in ("judged", "settings")})
    resumed = start(fresh)

    assert called == [2, 2] and resumed.id == st.id and resumed.step == 0
    assert router.weights() == {1: 95.0, 2: 5.0}
    final = _tick_until(fresh, resumed, {Phase.PROMOTED, Phase.ROLLED_BACK})
    assert final.phase is Phase.PROMOTED and called == [2, 2]


# -- the champion is what the records put in place, whatever the file names ---------------------


def test_switching_the_model_an_environment_serves_is_refused_not_deployed_without_a_canary(repo, registry):
    from tests.support.fraud_versions import register_tiny

    reg, digests = registry
    weak = register_tiny(reg, name="weak-model")
    reg.set_alias("fraud-detector", "prod", 1)
    _promote_record(repo, 1, digests[1])  # prod serves fraud-detector v1, recorded
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("name: fraud-detector", "name: weak-model"))
    set_model(env_file, weak.version, weak.digest)
    Git(repo).commit("prod: weak-model", ["environments/prod.yaml"])
    router = RouterDouble()
    router.set_routing({1: 100.0}, {1: digests[1]})
    records = [r.name for r in RecordStore(repo, "prod").records()]

    final, refused = _attempt(lambda: _context(repo, reg, router, lambda ctx, st: [PASS]))

    # weak-model's version is 1 too: the digest says which model serves
    assert router.history == [{1: 100.0}] and router.live.digests == {"1": digests[1]}, \
        "traffic moved to the other model"
    assert [r.name for r in RecordStore(repo, "prod").records()] == records
    assert reg.alias("fraud-detector", "prod") == 1 and reg.alias("weak-model", "prod") is None
    assert final is None and refused is not None
    assert refused.startswith("environments/prod.yaml names model 'weak-model', but prod serves fraud-detector v1 (")
    assert "switching the model an environment serves is a governance change" in refused
    assert StateStore(repo, "prod").load() is None


def test_a_canary_is_compared_with_the_recorded_version_not_an_alias_moved_by_hand(repo, registry):
    from tests.support.fraud_versions import register_tiny

    reg, digests = registry
    v3 = register_tiny(reg)
    ctx, router, _, _ = _setup(repo, registry, {1: HEALTHY, 2: HEALTHY}, gates=lambda ctx, st: [PASS])
    _promote_record(repo, 1, digests[1])
    reg.set_alias("fraud-detector", "prod", v3.version)  # moved outside a rollout

    final, refused = _attempt(lambda: _context(repo, reg, router, ctx.gates))

    assert router.history == [{1: 100.0}]
    assert final is None and refused is not None
    assert refused.startswith(f"the registry alias 'prod' of fraud-detector names v{v3.version}, but the last record ")
    assert "puts v1 in prod: the alias was moved outside a rollout" in refused
