"""A rollout killed between writing its record and saving its state, then run again:
one decision, one record, and the audit agrees. Real controller, registry, git, records."""

from __future__ import annotations

import pytest

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.cli import main
from promotion.config import Project
from promotion.rollout import Context, Phase, StateStore, start, tick
from promotion.rollout.state import EventLog
from tests.conftest import make_repo
from tests.unit.rollout.conftest import Clock, RouterDouble, SimulatedService

HEALTHY = (0.01, 2.0)


class Killed(BaseException):
    """The job's process dying (not an error any handler in the controller may catch)."""


@pytest.fixture
def world(tmp_path, monkeypatch):
    from promotion.registry import Registry

    for name in ("PROMOTION_SIGNING_KEY", "PROMOTION_SIGNER", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMOTION_STATE", str(tmp_path / "state"))
    repo = make_repo(tmp_path / "repo")
    reg = Registry.for_root(repo)
    reg.client.create_registered_model("fraud-detector")
    digests = {}
    for v in (1, 2):
        reg.client.create_model_version("fraud-detector", source=(tmp_path / "artifact").as_uri())
        digests[v] = f"sha256:{v:064x}"
        reg.set_tag("fraud-detector", v, "artifact_digest", digests[v])
    reg.set_alias("fraud-detector", "prod", 1)
    set_model(repo / "environments" / "prod.yaml", 2, digests[2])
    Git(repo).commit("propose prod v2", ["environments/prod.yaml"])
    return repo, reg, digests


def _context(repo, reg, digests, router=None, clock=None):
    project = Project(repo)
    env = project.environment("prod")
    clock = clock or Clock()
    if router is None:
        router = RouterDouble()
        router.set_routing({1: 100.0}, {1: digests[1]})
    store = StateStore(repo, "prod")
    gates = lambda ctx, st: [{"name": "metrics.f1", "gate": "metrics", "value": 0.8, "threshold": ">= 0.7",  # noqa: E731
                              "verdict": "pass", "message": "ok"}]
    return Context(project=project, env=env, policy=project.policy_for(env), registry=reg, traffic=router,
                   metrics=SimulatedService(router, {1: HEALTHY, 2: HEALTHY}, clock=clock), store=store,
                   events=EventLog(store.events_path), clock=clock, gates=gates), router, clock


def test_crash_after_record_written_before_state_saved_leaves_one_record(world, monkeypatch, capsys):
    repo, reg, digests = world
    ctx, router, clock = _context(repo, reg, digests)
    real_save = StateStore.save

    def save(self, st):
        if st.record_path and not getattr(save, "killed", False):
            save.killed = True
            raise Killed()  # the record file is on disk; the state that names it is not
        real_save(self, st)

    monkeypatch.setattr(StateStore, "save", save)
    st = start(ctx)
    with pytest.raises(Killed):
        for _ in range(300):
            st = tick(ctx, st)
    records = sorted((repo / "environments/records/prod").glob("*.json"))
    assert [p.name for p in records] == ["000001-promote-v2.json"]

    # the job runs again: a new process, state only from disk
    ctx2, _, _ = _context(repo, reg, digests, router=router, clock=clock)
    st = start(ctx2)
    for _ in range(300):
        if st.phase.completed:
            break
        st = tick(ctx2, st)
    assert st.phase is Phase.PROMOTED
    assert [p.name for p in sorted((repo / "environments/records/prod").glob("*.json"))] == ["000001-promote-v2.json"]
    committed = Git(repo)("ls-tree", "--name-only", "HEAD", "environments/records/prod/").split()
    assert committed == ["environments/records/prod/000001-promote-v2.json"]
    code = main(["--root", str(repo), "audit", "prod"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "audit prod: 1 record(s)" in out.out and "registry: ok (alias prod -> v2" in out.out
