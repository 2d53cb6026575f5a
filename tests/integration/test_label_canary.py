"""Canaries judged on labels: a real ``bentoml serve`` (2 workers), real MLflow, real git.

A client sends predictions, reads each response's request id, version and label, and
posts ground truth to ``POST /feedback`` (the feedback token) a moment later. The truth
is the champion's answer for the champion's requests (recall 1.0); for the canary under
test it makes recall drop: everywhere (rolled back, exit 1, the record names the label
signal), nowhere (promoted), or only in the segment ``pos`` (rolled back naming it).
Errors and latency are the same for every version (all are the same ``tiny`` model).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time

import pytest
import requests

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.cli import main
from promotion.records import RecordStore
from tests.conftest import make_repo
from tests.support.policies import steps_policy

pytestmark = pytest.mark.integration
TOKEN = "label-canary-admin"
FEEDBACK_TOKEN = "label-canary-feedback"
# 5 % briefly, then long enough at 50 % for labels to come in; 100 % waits for min_labels
POLICY = steps_policy(weights=(5, 50, 100), hold_s=(1, 15, 1), min_requests=20, max_s=60, analysis=(
    "  alpha: 0.2\n  labels:\n    metric: recall\n    tolerance: {absolute: 0.3}\n"
    "    min_labels: 30\n    require_labels_to_promote: true\n    segments: {method: e-bh}\n"))


# Segment ``pos`` takes 20 % of the requests, and 30 % of its rows are ones the model flags
# (half elsewhere). A canary whose every ``pos`` row is truly positive then has recall 0.3
# there, 0.4 below the tolerated 0.7, while its overall recall stays 0.77, above it.
POS_SHARE, FLAGGED = 0.2, {"pos": 0.3, "online": 0.5}


class Client:
    """Predictions (rows the model flags, and rows it does not) and their labels, both continuous."""

    def __init__(self, url: str, positive: list[dict], negative: list[dict]) -> None:
        self.url, self.positive, self.negative = url, positive, negative
        self.truth = lambda version, label, segment: label
        self.pending: list[tuple[str, int, int, str]] = []
        self.posted = 0
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._predict, args=(i,), daemon=True) for i in range(3)]
        self._threads.append(threading.Thread(target=self._feedback, daemon=True))

    def start(self) -> "Client":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _predict(self, i: int) -> None:
        rng = random.Random(i)
        while not self._stop.is_set():
            segment = "pos" if rng.random() < POS_SHARE else "online"
            flagged = rng.random() < FLAGGED[segment]
            row = {**rng.choice(self.positive if flagged else self.negative), "segment": segment}
            try:
                r = requests.post(self.url + "/predict", json={"features": row}, timeout=10)
                body = r.json()
                with self._lock:
                    self.pending.append((body["request_id"], int(body["version"]), int(body["label"]), segment))
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.01)

    def _feedback(self) -> None:
        while not self._stop.wait(0.3):
            with self._lock:
                batch, self.pending = self.pending[:500], self.pending[500:]
            if not batch:
                continue
            items = [{"request_id": rid, "label": int(self.truth(v, label, seg))} for rid, v, label, seg in batch]
            r = requests.post(self.url + "/feedback", data=json.dumps(items), timeout=10,
                              headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}",
                                       "Content-Type": "application/json"})
            if r.status_code == 200:
                self.posted += r.json().get("accepted", 0)


@contextlib.contextmanager
def labelled_world(root, policy: str, n_versions: int):
    """The real router (2 workers, ``/feedback`` on, segments from ``segment``) serving v1 of
    ``n_versions`` registered versions in prod under ``policy``, and a client that feeds back
    each answer's true label (``client.truth``)."""
    from promotion.registry import Registry
    from services.fraud import data
    from services.router.process import free_port, start_service
    from tests.support.fraud_versions import register_tiny
    from tests.support.world import isolated_env

    mp = isolated_env(root, TOKEN)
    repo = make_repo(root / "repo")
    registry = Registry(root=repo)
    versions = [register_tiny(registry).version for _ in range(n_versions)]
    port = free_port()
    service = start_service(port, root / "state" / "service", registry.uri, TOKEN, workers=2, ready=False,
                            feedback_token=FEEDBACK_TOKEN, segment_column="segment")
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("127.0.0.1:3000", f"127.0.0.1:{port}"))
    (repo / "policies" / "prod.yaml").write_text(policy)
    Git(repo)("add", "environments/prod.yaml", "policies/prod.yaml")
    Git(repo)("commit", "-q", "--amend", "--no-edit")
    client = None
    try:
        propose(repo, registry, versions[0])
        assert main(["--root", str(repo), "rollout", "prod"]) == 0  # initial deployment
        rows = data.generate(1500, seed=5)[list(data.FEATURES)].to_dict("records")
        served = requests.post(service.url + "/predict", json={"dataframe_records": rows}, timeout=60).json()
        labels = [int(y) for y in served["predictions"]]  # the served label of each row
        positive = [r for r, y in zip(rows, labels) if y == 1]
        negative = [r for r, y in zip(rows, labels) if y == 0]
        assert len(positive) >= 5 and negative, (len(positive), len(negative))
        client = Client(service.url, positive, negative).start()
        yield {"repo": repo, "registry": registry, "versions": versions, "client": client, "root": root}
    finally:
        if client:
            client.stop()
        service.stop()
        mp.undo()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with labelled_world(tmp_path_factory.mktemp("label-canary"), POLICY, 4) as w:
        yield w


def propose(repo, registry, version: int) -> None:
    mv = registry.version("fraud-detector", version)
    set_model(repo / "environments" / "prod.yaml", version, mv.digest)
    Git(repo).commit(f"Merge pull request: promote prod to v{version}", ["environments/prod.yaml"])


def rollout(world, version: int, truth) -> tuple[int, object]:
    world["client"].truth = truth
    propose(world["repo"], world["registry"], version)
    code = main(["--root", str(world["repo"]), "rollout", "prod"])
    return code, RecordStore(world["repo"], "prod").latest()


def test_canary_worse_on_labels_only_is_rolled_back_with_the_label_evidence(world):
    v1, bad = world["versions"][0], world["versions"][1]
    code, record = rollout(world, bad, lambda v, label, seg: 1 if v == bad else label)
    assert code == 1
    assert record.action == "rollback" and record.version == v1 and record.predicate["replaced_version"] == bad
    reason = record.predicate["reason"]
    assert reason.startswith("label recall regressed: canary 0.") and "vs champion 1.000" in reason, reason
    ev = record.predicate["evidence"]
    assert "error rate regressed" not in reason and "latency" not in reason
    labels = ev["labels"]
    assert labels["signal"] == "labels" and labels["rejected"] and labels["e_value"] >= labels["threshold"]
    assert labels["canary"] < 0.7 and labels["champion"] == 1.0
    assert labels["canary_labelled"] >= 30 and 0 < labels["coverage"]["canary"] <= 1
    # counters come from separate scrapes: a label can be counted a window before its request
    assert labels["served"]["canary"] >= 0.9 * labels["labelled"]["canary"] > 0
    assert Git(world["repo"])("log", "-1", "--format=%s").startswith(f"rollback prod: fraud-detector v{bad} -> v{v1}")


def test_healthy_canary_with_labels_is_promoted(world):
    good = world["versions"][2]
    code, record = rollout(world, good, lambda v, label, seg: label)
    assert code == 0
    assert record.action == "promote" and record.version == good
    last = record.predicate["steps"][-1]
    assert last["weight"] == 100.0 and last["labels"]["labelled"]["canary"] >= 30
    assert last["evidence"]["labels"]["canary"] == 1.0 and not last["evidence"]["labels"]["rejected"]


def test_canary_worse_in_one_segment_is_rolled_back_naming_it(world):
    good, seg_bad = world["versions"][2], world["versions"][3]
    code, record = rollout(world, seg_bad, lambda v, label, seg: 1 if v == seg_bad and seg == "pos" else label)
    assert code == 1
    assert record.action == "rollback" and record.version == good
    reason = record.predicate["reason"]
    assert reason.startswith("label recall regressed in segment pos:"), reason
    segments = record.predicate["evidence"]["labels"]["segments"]
    assert segments["triggered"] == ["pos"] and segments["method"] == "e-bh"
    assert segments["by_segment"]["online"]["canary"] == 1.0 > 0.7 > segments["by_segment"]["pos"]["canary"]
