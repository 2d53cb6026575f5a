"""The Prometheus HTTP API as a metrics source.

Each snapshot runs instant queries (``GET /api/v1/query``) at one evaluation time (the
server's own ``time()``, so the controller's clock never has to agree with Prometheus's),
so all series of a snapshot describe the same instant. Prometheus answers with what it
last scraped, up to one scrape interval old: the snapshot's ``taken_at`` is therefore the
oldest last scrape (``targets_scraped_at``) of the replicas that counted requests (or of
the ``scraped_at`` query's series, where the source has no per-target times), not the
query time, so that the rollout controller can wait for counts scraped after a weight
change before it measures the new weight (:meth:`PrometheusProvider.now`). Replicas
scraped later than that instant (each target has its own scrape phase) have their
counters interpolated back to it between their two scrapes around it, so that a window
counts every replica over the same span and no later snapshot counts a replica lower.
A scrape Prometheus stores while a snapshot is being read (it files a scrape under the
time it began, once the target has answered) would mix two scrapes of one replica: such
a replica is read again. The queries are PromQL templates in which ``$selector``
stands for the environment's extra label matchers (``metrics.selector`` in
``environments/<env>.yaml``, e.g. ``job="fraud"``); the defaults read the service's
metric contract and sum over every label but ``version``::

    from promotion.metrics.prometheus import PrometheusProvider
    provider = PrometheusProvider("http://prometheus:9090", selector='job="fraud"')
    snap = provider.snapshot()

    # a different naming scheme: override any template
    PrometheusProvider(url, queries={"requests": 'sum by (version) (http_requests_total{$selector})'})

Many replicas: the counters are read per replica and version (``sum by (version, job,
instance)``; ``$replica`` stands for those labels) and summed over replicas here, not in
PromQL, because a restarted replica's counters begin again at 0 and only per replica
can :func:`~promotion.metrics.base.window` tell a restart from traffic: the window then
counts what that replica served since its restart (exact counts, unlike ``increase()``,
which extrapolates to the range's edges). Which replicas must be counted is what
Prometheus scrapes (``up{$selector}``, its service discovery), not a list in the
environment file that autoscaling would make wrong: a target that is down makes the
snapshot fail (MetricsError), and a replica counted at a window's start that is no
longer scraped makes the window fail; the controller treats both as undecided.

Templates must keep the result labels: ``version`` on every query, plus ``le`` on
``latency_buckets``, ``label_delay_buckets`` and ``score_buckets``, ``kind`` on ``errors``,
``segment`` (and ``outcome`` on ``labels``) on the label queries, and ``agree`` on ``shadow_agreement``
(and ``$replica``, or one replica is assumed and a restart of any of them resets the
version's window to what the others' counters hold); ``scraped_at`` must return sample
timestamps (``timestamp()``) of the counted series; ``targets`` the ``up`` series.
Any HTTP error, timeout, or payload that is not a Prometheus vector raises
:class:`~promotion.errors.MetricsError`: the caller fails closed.
"""

from __future__ import annotations

import math
from string import Template

from promotion.contract import metrics as _contract
from promotion.errors import MetricsError
from promotion.metrics import base
from promotion.metrics.base import Snapshot, counters_from_samples

DEFAULT_QUERIES: dict[str, str] = {
    "requests": "sum by (version, $replica) (promotion_requests_total{$selector})",
    "errors": "sum by (version, kind, $replica) (promotion_request_errors_total{$selector})",
    "latency_buckets": "sum by (version, le, $replica) (promotion_request_latency_seconds_bucket{$selector})",
    "latency_sum": "sum by (version, $replica) (promotion_request_latency_seconds_sum{$selector})",
    "shadow_requests": "sum by (version, $replica) (promotion_shadow_requests_total{$selector})",
    "shadow_agreement": "sum by (version, agree, $replica) (promotion_shadow_agreement_total{$selector})",
    # model quality (labels joined by POST /feedback, scores of served rows)
    "labels": "sum by (version, segment, outcome, $replica) (promotion_labels_total{$selector})",
    "label_values": "sum by (version, segment, $replica) (promotion_label_values_total{$selector})",
    "label_abs_error": "sum by (version, segment, $replica) (promotion_label_abs_error_total{$selector})",
    "label_squared_error": "sum by (version, segment, $replica) (promotion_label_squared_error_total{$selector})",
    "label_delay_buckets": "sum by (version, le, $replica) (promotion_label_delay_seconds_bucket{$selector})",
    "label_delay_sum": "sum by (version, $replica) (promotion_label_delay_seconds_sum{$selector})",
    "score_buckets": "sum by (version, le, $replica) (promotion_score_bucket{$selector})",
    "score_sum": "sum by (version, $replica) (promotion_score_sum{$selector})",
    # when the counts above were scraped: the oldest target's last scrape
    "scraped_at": "min(timestamp(promotion_requests_total{$selector}))",
    # the replicas Prometheus scrapes (its service discovery), and whether each answered
    "targets": "up{$selector}",
    # when each replica was last scraped (its samples share the scrape's timestamp)
    "targets_scraped_at": "timestamp(up{$selector})",
    # every scrape of each replica over the last $range (a range vector: their times)
    "targets_scrapes": "up{$selector}[$range]",
}

# Reads of one snapshot, at most: a replica whose scrape landed during a read is read again.
CONSISTENT_READS = 4

# The labels that tell one scraped replica from another: Prometheus sets both on every
# series it scrapes (the scrape job and the target's address).
REPLICA_LABELS = ("job", "instance")

# Which contract sample each query's result stands for.
_SAMPLE_NAME = {
    "requests": base.REQUESTS,
    "errors": base.ERRORS,
    "latency_buckets": base.LATENCY + "_bucket",
    "latency_sum": base.LATENCY + "_sum",
    "shadow_requests": base.SHADOW_REQUESTS,
    "shadow_agreement": base.SHADOW_AGREEMENT,
    "labels": _contract.LABELS,
    "label_values": _contract.LABEL_VALUES,
    "label_abs_error": _contract.LABEL_ABS_ERROR,
    "label_squared_error": _contract.LABEL_SQUARED_ERROR,
    "label_delay_buckets": _contract.LABEL_DELAY + "_bucket",
    "label_delay_sum": _contract.LABEL_DELAY + "_sum",
    "score_buckets": _contract.SCORE + "_bucket",
    "score_sum": _contract.SCORE + "_sum",
}


class PrometheusProvider:
    """Queries a Prometheus server at ``url`` (its base address, e.g. ``http://host:9090``)."""

    def __init__(self, url: str, *, selector: str = "", queries: dict[str, str] | None = None,
                 timeout_s: float = 5.0, session=None, replica_labels: tuple[str, ...] = REPLICA_LABELS) -> None:
        import requests

        unknown = sorted(set(queries or {}) - set(DEFAULT_QUERIES))
        if unknown:
            raise MetricsError(f"prometheus: unknown query name(s) {', '.join(unknown)} (known: {', '.join(DEFAULT_QUERIES)})")
        self.url = url.rstrip("/")
        self.selector = selector.strip()
        self.timeout_s = timeout_s
        self.templates = {**DEFAULT_QUERIES, **(queries or {})}
        self.replica_labels = tuple(replica_labels)
        self._session = session or requests.Session()

    @classmethod
    def from_environment(cls, env, *, timeout_s: float = 5.0) -> "PrometheusProvider":
        """The provider of an environment file's ``metrics`` block (``url``, ``selector``)."""
        return cls(env.metrics_url, selector=env.metrics_selector, timeout_s=timeout_s)

    def query_for(self, name: str, **fields: str) -> str:
        """The PromQL sent for query ``name``, with the selector (and ``fields``) filled in."""
        try:
            return Template(self.templates[name]).substitute(selector=self.selector,
                                                             replica=", ".join(self.replica_labels), **fields)
        except (KeyError, ValueError) as exc:
            raise MetricsError(f"prometheus: query template {name!r} is invalid ({exc})") from None

    def _get(self, path: str, params: dict) -> dict:
        import requests

        where = f"prometheus {self.url}"
        try:
            response = self._session.get(self.url + path, params=params, timeout=self.timeout_s)
        except requests.Timeout:
            raise MetricsError(f"{where}: no answer within {self.timeout_s:g} s") from None
        except requests.RequestException as exc:
            raise MetricsError(f"{where}: {type(exc).__name__}: {_first_line(exc)}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise MetricsError(f"{where}: HTTP {response.status_code}, answer is not JSON")
        if response.status_code != 200 or payload.get("status") != "success":
            detail = payload.get("error") or payload.get("status") or "no error given"
            raise MetricsError(f"{where}: HTTP {response.status_code}: {_first_line(detail)}")
        data = payload.get("data")
        if not isinstance(data, dict):
            raise MetricsError(f"{where}: answer has no data")
        return data

    def _result(self, promql: str, at: float, kind: str, what: str) -> list:
        """The ``result`` list of one instant query at ``at``, which must be of ``kind``."""
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        if data.get("resultType") != kind or not isinstance(data.get("result"), list):
            raise MetricsError(f"prometheus {self.url}: {promql!r} did not return {what}")
        return data["result"]

    def query(self, promql: str, at: float) -> list[tuple[dict, float]]:
        """One instant query: ``[(labels, value)]``. Only an instant vector is accepted."""
        out = []
        for item in self._result(promql, at, "vector", "an instant vector"):
            try:
                labels, value = dict(item["metric"]), float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                raise MetricsError(f"prometheus {self.url}: {promql!r} returned a malformed sample") from None
            if math.isnan(value):
                continue  # a stale or empty series carries no count
            out.append((labels, value))
        return out

    def query_times(self, promql: str, at: float) -> list[tuple[dict, list[tuple[float, float]]]]:
        """One instant query of a range vector: ``[(labels, [(timestamp, value)])]``."""
        out = []
        for item in self._result(promql, at, "matrix", "a range vector"):
            try:
                out.append((dict(item["metric"]), sorted((float(ts), float(v)) for ts, v in item["values"])))
            except (KeyError, TypeError, ValueError):
                raise MetricsError(f"prometheus {self.url}: {promql!r} returned a malformed series") from None
        return out

    def now(self) -> float:
        """Prometheus's current time (``time()``): a snapshot whose ``taken_at`` is at or
        after it counts only what was scraped after this call."""
        data = self._get("/api/v1/query", {"query": "time()"})
        try:
            if data["resultType"] != "scalar":
                raise TypeError
            return float(data["result"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise MetricsError(f"prometheus {self.url}: 'time()' did not return a scalar") from None

    def snapshot(self) -> Snapshot:
        """Every counter per replica and version, at one evaluation instant.

        The per-replica sums come from PromQL (``sum by (version, job, instance)``); the
        sum over replicas is added here, after :func:`~promotion.metrics.base.window`
        has taken each replica's restart into account (a sum over replicas would hide
        which one began again). MetricsError when a replica that Prometheus scrapes is
        down (``up == 0``): its counts are missing, and a window without them decides
        nothing.

        The queries of one snapshot run one after another, and Prometheus stores a
        scrape under the time it began only once the target has answered: a scrape
        stored between two of them would give one replica's counters from one scrape
        and its scrape time (or a failed scrape's missing series) from the next. So each
        replica's counts are kept only from a read during which its scrape time did not
        change, and the reads are repeated (same instant) for the replicas whose did.
        """
        at = self.now()
        where = f"prometheus {self.url}"
        times: dict[str, float] = {}
        up: dict[str, float] = {}
        samples: dict[str, list] = {}
        for _ in range(CONSISTENT_READS):
            before = self._scrape_times(at)
            targets = self.query(self.query_for("targets"), at)
            read = self._samples(at, [labels for labels, _ in targets])
            after = self._scrape_times(at)
            values = {self._replica(labels): value for labels, value in targets}
            for replica in (set(read) | set(values) | set(after)) - set(samples):
                if before.get(replica) == after.get(replica):
                    samples[replica] = read.get(replica, [])
                    if replica in values:
                        up[replica] = values[replica]
                    if replica in after:
                        times[replica] = after[replica]
            pending = (set(read) | set(values) | set(after)) - set(samples)
            if not pending:
                break
        else:
            raise MetricsError(f"{where}: scrapes of {len(pending)} replica(s) kept landing while they were read "
                               f"({'; '.join(sorted(pending))}); nothing is measured from this read")
        down = sorted(r for r, value in up.items() if value < 1)
        if down:
            raise MetricsError(f"{where}: {len(down)} of {len(up)} scraped replica(s) down (up == 0: "
                               f"{'; '.join(down)}); their counts are missing, so nothing is measured until "
                               "they are scraped again")
        counted = [times[r] for r, s in samples.items() if r in times and any(n == base.REQUESTS for n, _, _ in s)]
        if times:
            # the oldest scrape of a replica that counted requests: what a later scrape
            # could still add to the past ends there
            taken_at = min(counted) if counted else at
        else:  # no per-target scrape times (a source without up{}): the counted series' own
            scraped = [value for _, value in self.query(self.query_for("scraped_at"), at)]
            # no counted series yet: nothing was served that a later scrape could add to the past
            taken_at = min(scraped) if scraped else at
        later = {r for r, t in times.items() if t > taken_at + 1e-6 and r in samples}
        if later:
            samples = self._at_one_instant(samples, later, times, taken_at, at)
        replicas = {r: counters_from_samples(s, f"{where} {r}") for r, s in samples.items()}
        return Snapshot.of_replicas(taken_at, replicas, where)

    def _samples(self, at: float, targets: list[dict] = ()) -> dict[str, list]:
        """Every contract sample per replica, as Prometheus holds it at ``at``."""
        samples: dict[str, list] = {self._replica(labels): [] for labels in targets}
        for name, sample_name in _SAMPLE_NAME.items():
            for labels, value in self.query(self.query_for(name), at):
                samples.setdefault(self._replica(labels), []).append((sample_name, labels, value))
        return samples

    def _scrape_times(self, at: float) -> dict[str, float]:
        return {self._replica(labels): value for labels, value in self.query(self.query_for("targets_scraped_at"), at)}

    def _at_one_instant(self, samples: dict[str, list], later: set[str], scraped_at: dict[str, float],
                        instant: float, at: float) -> dict[str, list]:
        """Each replica's counters estimated at ``instant``, not at its own last scrape.

        Prometheus scrapes every target at its own phase, so at one evaluation time the
        replicas' samples are up to a scrape interval apart: a window between two such
        snapshots would count each replica over a different span (with one scrape
        interval of 1 s and a window of a few seconds, a canary replica whose scrape
        has not come round yet looks as though it served nothing, a false sample-ratio
        mismatch). A replica scraped after ``instant`` gets its counters interpolated
        between the two scrapes around it: its last one at or before ``instant`` (an
        instant query at ``instant`` returns it) and its first one after. Only these two
        make the estimate the same in every snapshot that asks about that span, so that
        a later snapshot never counts a replica lower than an earlier one did (which
        :func:`~promotion.metrics.base.window` would take for a restart, counting all it
        ever served). When the replica's last scrape is not its first after ``instant``
        (a scrape that answered late, an irregular interval), the first one is read
        (an instant query at its time, before the scrape that follows it). A series the
        replica had not exposed by then (labelled counters appear on first use) counts
        from 0, and so does a replica not scraped at all by then (it had not started).
        A replica whose counters went down between the two scrapes (a restart) is taken
        at the second: whatever it held at the instant, it counts upwards from there.
        When either of the two scrapes failed, the replica's series were stale then, and
        what it held is unknown: MetricsError (undecided), never a count of 0, which the
        next window would take for a restart and count everything the replica ever served.

        Its scrapes up to ``at`` were all stored before its last one (a target's scrapes
        follow each other), so these reads need no repeating.
        """
        where = f"prometheus {self.url}"
        before_at = self._scrape_times(instant)
        up_at = {self._replica(labels): value for labels, value in self.query(self.query_for("targets"), instant)}
        earlier = self._samples(instant)
        span = f"{max(1, math.ceil((at - instant) * 1000) + 1)}ms"
        scrapes: dict[str, list[tuple[float, float]]] = {}  # (time, up) of each scrape after the instant
        for labels, points in self.query_times(self.query_for("targets_scrapes", range=span), at):
            scrapes.setdefault(self._replica(labels), []).extend((t, v) for t, v in points if t > instant + 1e-6)
        first_after: dict[str, float] = {}
        nxt: dict[str, list] = {}
        pending = []
        for replica in later:
            points = sorted(scrapes.get(replica, ()))
            # a failed scrape marks the replica's series stale: what it held then is unknown,
            # and taking it for 0 would count the replica backwards (a false restart)
            failed = before_at.get(replica) if up_at.get(replica, 1.0) < 1 else None
            if failed is None and points and points[0][1] < 1:
                failed = points[0][0]
            if failed is not None:
                raise MetricsError(f"{where}: the scrape of {replica} at {failed:.3f} failed, so what it held at "
                                   f"{instant:.3f} is unknown; nothing is measured from this read")
            stamps = [t for t, _ in points] or [scraped_at[replica]]
            first_after[replica] = stamps[0]
            if stamps[0] >= scraped_at[replica] - 1e-6 or len(stamps) < 2:
                nxt[replica] = samples[replica]  # its last scrape is the first after the instant
            else:
                pending.append((stamps[0], stamps[1], replica))
        # one read at time T gives each replica's first scrape after the instant as long as
        # T is before the scrape that follows it: replicas are read together where they can be
        pending.sort()
        while pending:
            group, until = [], math.inf
            for first, second, replica in pending:
                if first >= until - 1e-6:
                    break
                group.append((first, replica))
                until = min(until, second)
            read = self._samples(max(first for first, _ in group))
            for _, replica in group:
                nxt[replica] = read.get(replica, [])
            pending = pending[len(group):]
        out = dict(samples)
        for replica in later:
            t0, t1 = before_at.get(replica), first_after[replica]
            if t0 is not None and not t0 < t1:
                continue  # its last scrape is at or before the instant after all
            fraction = 0.0 if t0 is None else min(max((instant - t0) / (t1 - t0), 0.0), 1.0)
            old = {} if t0 is None else {(name, tuple(sorted(labels.items()))): value
                                         for name, labels, value in earlier.get(replica, ())}
            pairs = [(name, labels, old.get((name, tuple(sorted(labels.items()))), 0.0), value)
                     for name, labels, value in nxt[replica]]
            if any(v1 < v0 for _, _, v0, v1 in pairs):
                out[replica] = nxt[replica]  # began again in between: it counts upwards from there
                continue
            out[replica] = [(name, labels, v1 if fraction >= 1.0 else v0 + fraction * (v1 - v0))
                            for name, labels, v0, v1 in pairs]
        return out

    def kpi_counts(self, kpis, versions: dict[str, int]) -> dict[str, dict | str]:
        """Each KPI's cumulative ``(numerator, denominator)`` per role, at one evaluation time.

        ``kpis``: :class:`~promotion.analysis.kpi_signal.KpiSettings` (their templates get
        ``{version}`` and ``{selector}`` filled in); ``versions``: role -> model version. A
        KPI whose query fails or returns no series maps to the reason (a string): it
        decides nothing. The values of a vector's series are summed.
        """
        at = self.now()
        out: dict[str, dict | str] = {}
        for k in kpis:
            got: dict[str, tuple[float, float]] = {}
            for role, version in versions.items():
                pair = []
                for which in ("numerator", "denominator"):
                    promql = k.query(which, version, self.selector)
                    try:
                        rows = self.query(promql, at)
                    except MetricsError as exc:
                        out[k.name] = f"{which} query for v{version} failed: {exc.message}"
                        break
                    if not rows:
                        out[k.name] = (f"{which} query for v{version} returned no series ({promql}); "
                                       "write `or vector(0)` if none means 0")
                        break
                    pair.append(sum(value for _, value in rows))
                if k.name in out:
                    break
                got[role] = (pair[0], pair[1])
            if k.name not in out:
                out[k.name] = got
        return out

    def _replica(self, labels: dict) -> str:
        """A replica's name, from its target labels (``{job="fraud", instance="h:3000"}``)."""
        return "{" + ", ".join(f'{k}="{labels.get(k, "")}"' for k in self.replica_labels) + "}"

    def is_online(self) -> bool:
        try:
            data = self._get("/api/v1/query", {"query": "vector(1)"})
        except MetricsError:
            return False
        return data.get("resultType") == "vector"


def _first_line(value) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else "no detail"
