"""Models of every flavour through ``promotion gate`` -> ``promotion rollout`` (canary 5 ->
50 -> 100 %) -> promoted, against the real router (``bentoml serve``, 2 workers), the real
MLflow sqlite store, real git and signed records, while clients send MLflow's scoring
formats (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``).

``prod`` serves the classifier ``byom``: a weak baseline is deployed first, then XGBoost,
a custom ``PythonModel``, a scikit-learn pipeline with a string column and LightGBM each
replace the champion (better AUC on the same holdout each time). A custom model that
fails half its rows passes the gates (its holdout metrics are fine) and is rolled back by
the canary. ``staging`` serves the regression ``byom-spend`` on a second router: a Ridge
on the merchant too replaces one on the numeric columns, judged on RMSE and MAE against
its champion.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter

import pytest

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.cli import main
from promotion.config import Project
from promotion.records import RecordStore
from promotion.traffic import backend_for
from tests.conftest import make_repo
from tests.support.flavours import (BROKEN_MODEL, COLUMNS, NAME, flavour_registry, frame, holdout_metrics, payloads,
                                    ready_for_gates, register_baseline, register_custom, register_regression)

pytestmark = pytest.mark.integration
TOKEN = "flavours-rollout-token"
SPEND = "byom-spend"
ROLLOUT = """rollout:
  strategy: steps
  steps:
    - {weight: 5, hold_s: 1, min_requests: 20, max_s: 60}
    - {weight: 50, hold_s: 1, min_requests: 20, max_s: 60}
    - {weight: 100, hold_s: 1, min_requests: 20, max_s: 60}
  interval_s: 0.5
slo:
  error_rate_max: 0.05
  latency_p95_ms_max: 500
  min_requests: 20
# flavours differ in speed by a few ms; this file judges errors, not latency
analysis:
  latency_ratio: 3
  latency_min_added_ms: 50
"""
CLASSIFIER_POLICY = """apiVersion: promotion/v1
environment: prod
gates:
  lineage: {}
  artifact: {}
  metrics:
    absolute:
      auc: {min: 0.55}
    relative:
      auc: {max_drop: 0.005}
""" + ROLLOUT
REGRESSION_POLICY = """apiVersion: promotion/v1
environment: staging
gates:
  lineage: {}
  artifact: {}
  metrics:
    absolute:
      rmse: {max: 3.0}
    relative:
      rmse: {max_ratio: 1.0}
      mae: {max_ratio: 1.02}
""" + ROLLOUT


class ScoringClients:
    """``threads`` clients sending ``rate`` requests/s in total, each request one to three
    rows in one of MLflow's scoring formats (in turn); counts what a client notices."""

    def __init__(self, url: str, rows, rate: float = 200.0, threads: int = 4) -> None:
        sizes = itertools.cycle((1, 2, 1, 3))
        chunks, i = [], 0
        while i < len(rows):
            n = next(sizes)
            chunks.append(rows.iloc[i:i + n])
            i += n
        formats = itertools.cycle(("dataframe_split", "dataframe_records", "instances", "inputs"))
        self.bodies = [(fmt, payloads(chunk, COLUMNS)[fmt], len(chunk)) for chunk, fmt in zip(chunks, formats)]
        self.url, self.rate, self.threads = url + "/predict", rate, threads
        self.served: Counter = Counter()       # (format, version) -> answered requests
        self.failures: Counter = Counter()     # status code -> failed requests
        self._lock, self._stop, self._workers = threading.Lock(), threading.Event(), []

    def start(self) -> "ScoringClients":
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, i: int) -> None:
        import requests

        session = requests.Session()
        for n, (fmt, body, rows) in enumerate(itertools.cycle(self.bodies[i::self.threads])):
            if self._stop.wait(self.threads / self.rate):
                return
            try:
                r = session.post(self.url, json=body, headers={"X-Routing-Key": f"client-{i}-{n % 997}"}, timeout=10)
                answer = r.json() if r.status_code == 200 else None
                ok = answer is not None and len(answer["predictions"]) == rows
            except Exception as exc:  # a client notices any failure the same way
                with self._lock:
                    self.failures[type(exc).__name__] += 1
                continue
            with self._lock:
                if ok:
                    self.served[(fmt, answer["version"])] += 1
                else:
                    self.failures[str(r.status_code)] += 1

    def totals(self) -> tuple[Counter, int]:
        with self._lock:
            return Counter(self.served), sum(self.failures.values())

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=15)


class World:
    def __init__(self, root, repo, registry, versions, services):
        self.root, self.repo, self.registry = root, repo, registry
        self.versions, self.services = versions, services
        self.clients: dict[str, ScoringClients] = {}

    def model(self, env: str) -> str:
        return NAME if env == "prod" else SPEND

    def propose(self, env: str, version: int) -> None:
        """What a merged pull request does: the environment file names ``version``."""
        set_model(self.repo / "environments" / f"{env}.yaml", version, self.registry.version(self.model(env), version).digest)

    def merge(self, env: str, version: int) -> None:
        Git(self.repo).commit(f"Merge pull request: promote {env} to v{version}", [f"environments/{env}.yaml"])

    def gate(self, env: str, capsys) -> tuple[int, dict]:
        capsys.readouterr()
        code = main(["--root", str(self.repo), "gate", env, "--json"])
        return code, json.loads(capsys.readouterr().out)

    def rollout(self, env: str) -> int:
        return main(["--root", str(self.repo), "rollout", env])

    def routes(self, env: str) -> dict[int, float]:
        backend = backend_for(Project(self.repo).environment(env))
        return {v: w for v, w in backend.routing().routes.items() if w > 0}

    def log(self) -> list[str]:
        return Git(self.repo)("log", "--format=%s").splitlines()


def _checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for g in report["gates"] for c in g["checks"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from promotion.contract.launch import free_port, start_service
    from tests.support.world import isolated_env

    root = tmp_path_factory.mktemp("flavours-rollout")
    mp = isolated_env(root, TOKEN)
    services, w = [], None
    try:
        fr = flavour_registry(root / "registry")
        reg = fr.registry
        flavours = {k: fr.flavours[k] for k in ("xgboost", "custom", "sklearn", "lightgbm")}
        flavours["baseline"] = register_baseline(reg)
        flavours["broken"] = register_custom(reg, BROKEN_MODEL, root / "code", kind="broken")
        for kind, f in flavours.items():
            # the broken model's training job scored the rule, not the serving code that breaks
            ready_for_gates(reg, NAME, f.version, holdout_metrics(flavours["custom"] if kind == "broken" else f))
        spend = {"numeric": register_regression(reg, SPEND, merchant=False),
                 "merchant": register_regression(reg, SPEND, merchant=True)}
        for f in spend.values():
            ready_for_gates(reg, SPEND, f.version, holdout_metrics(f))
        ports = {"prod": free_port(), "staging": free_port()}
        for env, name in (("prod", NAME), ("staging", SPEND)):
            services.append(start_service(ports[env], root / f"service-{env}", reg.uri, TOKEN, workers=2,
                                          model_name=name, wait=False))
        for svc in services:
            svc.wait_up(120, ready=False)
        repo = make_repo(root / "repo")
        for env, default_port, name, policy in (("prod", 3000, NAME, CLASSIFIER_POLICY),
                                                ("staging", 3020, SPEND, REGRESSION_POLICY)):
            path = repo / "environments" / f"{env}.yaml"
            text = path.read_text().replace(f"127.0.0.1:{default_port}", f"127.0.0.1:{ports[env]}")
            text = text.replace("name: fraud-detector", f"name: {name}")
            path.write_text(text + f"\nregistry:\n  tracking_uri: {reg.uri}\n")
            (repo / "policies" / f"{env}.yaml").write_text(policy)
        # part of the repository's initial state (the audit's baseline), not a later hand edit of serving
        Git(repo)("add", "environments", "policies")
        Git(repo)("commit", "-q", "--amend", "--no-edit")
        versions = {k: f.version for k, f in flavours.items()} | {f"spend-{k}": f.version for k, f in spend.items()}
        w = World(root, repo, reg, versions, dict(zip(("prod", "staging"), services)))
        yield w
    finally:
        for clients in (w.clients.values() if w else ()):
            clients.stop()
        for svc in services:
            svc.stop()
        mp.undo()


def promote_through_canary(world, env: str, version: int, capsys) -> None:
    """Gate, merge, roll out: the new version is promoted and takes all traffic."""
    model = world.model(env)
    champion = world.registry.alias(model, env)
    served_before, failed_before = world.clients[env].totals()
    world.propose(env, version)
    code, report = world.gate(env, capsys)
    assert code == 0, [c["message"] for c in _checks(report).values() if c["verdict"] != "PASS"]
    assert report["champion"] == champion
    world.merge(env, version)
    assert world.rollout(env) == 0
    out = capsys.readouterr().out
    assert "5%" in out and "50%" in out and "promoted" in out
    assert world.routes(env) == {version: 100.0}
    assert world.registry.alias(model, env) == version and world.registry.previous(model, env) == champion
    record = RecordStore(world.repo, env).latest()
    assert record.action == "promote" and record.version == version
    assert [s["weight"] for s in record.predicate["steps"]] == [5.0, 50.0, 100.0]
    assert world.log()[0].startswith(f"promote {env}: {model} v{version}")
    served, failed = world.clients[env].totals()
    assert failed == failed_before, world.clients[env].failures
    for fmt in ("dataframe_split", "dataframe_records", "instances", "inputs"):
        assert served[(fmt, version)] > served_before[(fmt, version)], (fmt, served)


def test_first_deployment_serves_the_baseline(world, capsys):
    v = world.versions["baseline"]
    world.propose("prod", v)
    code, report = world.gate("prod", capsys)
    assert code == 0 and report["champion"] is None
    world.merge("prod", v)
    assert world.rollout("prod") == 0
    assert world.routes("prod") == {v: 100.0}
    assert world.registry.alias(NAME, "prod") == v
    assert RecordStore(world.repo, "prod").latest().action == "promote"
    world.clients["prod"] = ScoringClients(world.services["prod"].url, frame(4000, seed=21)).start()


@pytest.mark.parametrize("kind", ["xgboost", "custom"])
def test_a_better_flavour_replaces_the_champion_through_the_canary(world, kind, capsys):
    promote_through_canary(world, "prod", world.versions[kind], capsys)


def test_a_custom_model_failing_half_its_rows_is_rolled_back_to_the_champion(world, capsys):
    champion, broken = world.versions["custom"], world.versions["broken"]
    world.propose("prod", broken)
    code, report = world.gate("prod", capsys)
    assert code == 0, report  # offline, nothing is wrong with it
    assert "artifact.code" in _checks(report)
    world.merge("prod", broken)
    _, failed_before = world.clients["prod"].totals()
    assert world.rollout("prod") == 1
    assert world.routes("prod") == {champion: 100.0}
    assert Project(world.repo).environment("prod").model.version == champion
    assert world.log()[0].startswith(f"rollback prod: {NAME} v{broken} -> v{champion}")
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "rollback" and record.version == champion
    assert record.predicate["replaced_version"] == broken and "error" in record.predicate["reason"].lower()
    assert world.registry.alias(NAME, "prod") == champion
    served, failed = world.clients["prod"].totals()
    assert failed > failed_before  # the canary's 5 % of requests, half of them failing, is what was judged
    # (whether it also answered some rows depends on which few rows reached it before the rollback)
    assert sum(n for (_, v), n in served.items() if v == champion) > 0


@pytest.mark.parametrize("kind", ["sklearn", "lightgbm"])
def test_after_the_rollback_the_next_flavours_are_promoted(world, kind, capsys):
    promote_through_canary(world, "prod", world.versions[kind], capsys)


def test_a_weaker_flavour_is_blocked_and_every_change_is_explained(world, capsys):
    current = world.versions["lightgbm"]
    world.propose("prod", world.versions["xgboost"])
    code, report = world.gate("prod", capsys)
    Git(world.repo)("checkout", "--", "environments/prod.yaml")
    assert code == 1
    check = _checks(report)["metrics.auc vs champion"]
    assert check["verdict"] == "BLOCK" and f"v{current}" in check["message"]
    assert main(["--root", str(world.repo), "audit", "prod"]) == 0


def test_a_regression_judged_on_rmse_and_mae_is_promoted_over_its_champion(world, capsys):
    first, better = world.versions["spend-numeric"], world.versions["spend-merchant"]
    world.propose("staging", first)
    assert world.gate("staging", capsys)[0] == 0
    world.merge("staging", first)
    assert world.rollout("staging") == 0 and world.routes("staging") == {first: 100.0}
    world.clients["staging"] = ScoringClients(world.services["staging"].url, frame(4000, seed=22)).start()
    promote_through_canary(world, "staging", better, capsys)
    # and the weaker one back is blocked on both metrics against the champion
    world.propose("staging", first)
    code, report = world.gate("staging", capsys)
    Git(world.repo)("checkout", "--", "environments/staging.yaml")
    assert code == 1
    checks = _checks(report)
    assert checks["metrics.rmse vs champion"]["verdict"] == "BLOCK"
    assert checks["metrics.mae vs champion"]["verdict"] == "BLOCK"
