"""Traffic backend ``gateway-api``: the split as a Gateway API HTTPRoute committed to git.

The weights are the desired state in git: ``set_weights`` renders an ``HTTPRoute``
(``spec.rules[].backendRefs[].weight``, one backendRef per version's Service, a rule
sending ``X-Canary: always`` to the canary, a ``RequestMirror`` filter for shadow) and,
with ``istio: true``, an Istio ``VirtualService``, into ``serving.manifests_dir``, and
commits them. Argo CD or Flux applies them; nothing here talks to the cluster, so the
controller and the GitOps agent never fight over the route. ``verify`` trusts neither the
commit nor the agent: it waits until the traffic each version serves, as Prometheus
scrapes it (``metrics.source: prometheus``), fits the new split by the sample-ratio test
(:mod:`promotion.traffic.observed_split`). ``current`` reads the committed route, and
says whether the observed traffic of the last ``verify.lookback_s`` fits it::

    serving:
      kind: gateway-api
      endpoint: https://fraud.example.com      # the Gateway's listener, for clients
      manifests_dir: deploy/prod                # relative to the repository root
      route_name: fraud
      namespace: ml
      parent_ref: ml-gateway                    # the Gateway
      service_pattern: fraud-v{version}         # each version's Service
      port: 3000
      push: {remote: origin, branch: main}      # optional: push every weight commit

With ``push``, every weight commit is pushed at once (the agent watches the remote): a
rejected push is fetched and rebased and pushed again; a rebase that conflicts (someone
else changed the route) is aborted and reported, the local commit kept; nothing is
ever force-pushed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from promotion._internal.atomic import atomic_write
from promotion._internal.git import Git
from promotion.errors import ConfigError, GitError, MetricsError, ServiceError
from promotion.traffic import k8s_render as k8s
from promotion.traffic import observed_split as osplit
from promotion.traffic.base import Applied, Current, Mirror, check_mirror, check_weights

if TYPE_CHECKING:  # pragma: no cover
    from promotion.metrics.base import MetricsProvider

# first path segments a manifests_dir may not use: the files the promotion itself trusts
RESERVED_DIRS = ("environments", "policies", "records", "keys", "promotion", "services", "tests")
DEFAULT_VERIFY = {"min_requests": 100, "alpha": 0.001, "stray_share": 0.02, "lookback_s": 60, "poll_s": 0.5,
                  "timeout_s": 300}
PUSH_ATTEMPTS = 4


class GatewayApiBackend:
    """:class:`~promotion.traffic.base.TrafficBackend` writing HTTPRoutes into git."""

    kind = "gateway-api"

    def __init__(self, root: str | Path, spec: k8s.RouteSpec, manifests_dir: str, metrics: "MetricsProvider", *,
                 push: dict | None = None, verify: dict | None = None, where: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.spec = spec
        self.manifests_dir = manifests_dir.strip("/")
        self.metrics = metrics
        self.push = dict(push) if push else None
        self.settings = {**DEFAULT_VERIFY, **(verify or {})}
        self.apply_timeout_s = float(self.settings["timeout_s"])
        self.where = where or f"environment {spec.env}"
        self.git = Git(self.root)
        self._prepared: dict[int, str] = {}
        self._pending: dict[int, tuple[float | None, k8s.Split | None]] = {}
        check_manifests_dir(self.root, self.manifests_dir, self.where)

    @classmethod
    def from_environment(cls, env) -> "GatewayApiBackend":
        """The backend of ``env``'s ``serving`` block (``kind: gateway-api``)."""
        from promotion.metrics import provider_for

        s = env.serving
        if env.metrics_source != "prometheus":
            line = env.line_of("metrics", "source")
            raise ConfigError(f"{env.display}:{line} metrics.source: serving.kind gateway-api verifies the split "
                              "from the traffic Prometheus observes; set metrics.source: prometheus")
        services = {int(k): str(v) for k, v in (s.get("services") or {}).items()}
        spec = k8s.RouteSpec(
            env=env.name, route_name=s.get("route_name"), namespace=s.get("namespace"),
            parent_ref=s.get("parent_ref"), parent_namespace=s.get("parent_namespace"),
            service_pattern=s.get("service_pattern", "{route}-v{version}"), services=services,
            port=int(s.get("port", 3000)), hostnames=tuple(s.get("hostnames") or ()),
            canary_header=s.get("canary_header", "X-Canary"), istio=bool(s.get("istio", False)))
        root = env.path.resolve().parent.parent  # environments/<name>.yaml
        return cls(root, spec, s.get("manifests_dir"), provider_for(env), push=s.get("push"),
                   verify=s.get("verify"), where=f"{env.display} serving")

    # -- files -------------------------------------------------------------------------

    @property
    def route_path(self) -> str:
        """The HTTPRoute's path relative to the repository root."""
        return f"{self.manifests_dir}/{self.spec.route_name}.httproute.yaml"

    @property
    def virtualservice_path(self) -> str:
        return f"{self.manifests_dir}/{self.spec.route_name}.virtualservice.yaml"

    def render(self, split: k8s.Split) -> dict[str, str]:
        """{relative path: YAML text} of every manifest of ``split``."""
        header = (f"Traffic split of environment {self.spec.env}, written by `promotion rollout`.\n"
                  f"Desired state for the GitOps agent; change it through a rollout or rollback, not by hand.")
        out = {self.route_path: k8s.dump(k8s.render_httproute(self.spec, split), header)}
        if self.spec.istio:
            out[self.virtualservice_path] = k8s.dump(k8s.render_virtualservice(self.spec, split), header)
        return out

    def committed(self) -> k8s.Split | None:
        """The split in the committed HTTPRoute (HEAD), None if none is committed yet."""
        if not self._ok("cat-file", "-e", f"HEAD:{self.route_path}"):
            return None
        try:
            text = self.git("show", f"HEAD:{self.route_path}")
        except GitError as exc:
            raise ServiceError(f"{self.where}: cannot read {self.route_path} from git: {exc.message}") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ServiceError(f"{self.route_path}: committed HTTPRoute is not YAML ({exc.__class__.__name__})") from None
        return k8s.parse_httproute(self.spec, doc, f"{self.route_path} (HEAD)")

    # -- the contract --------------------------------------------------------------------

    def prepare(self, version: int, digest: str) -> None:
        """Record ``digest`` for ``version`` (written as an annotation of the route) after
        checking its Service name; the Service's replicas verify the artifact they load."""
        if not (isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 71):
            raise ServiceError(f"{self.where}: v{version}: {digest!r} is not a sha256 digest; traffic not changed")
        self.spec.service(version)
        self._prepared[version] = digest

    def set_weights(self, weights: dict[int, float], mirror: Mirror | None = None, *,
                    canary: int | None = None, based_on: int | None = None) -> Applied:
        """Render the split, commit it (only the manifests), push it when configured."""
        weights = check_weights(weights, self.where)
        mirror = check_mirror(mirror, self.where)
        missing = sorted(v for v in [*weights, *([mirror.version] if mirror else [])] if v not in self._prepared)
        if missing:
            raise ServiceError(f"{self.where}: {', '.join(f'v{v}' for v in missing)} not prepared; traffic not changed")
        before = self.committed()
        generation = before.generation if before else 0
        if based_on is not None and based_on != generation:
            raise ServiceError(f"{self.where}: the route is at generation {generation}, not {based_on}: someone "
                               "changed it meanwhile; traffic not changed")
        routed = {v for v in weights} | ({mirror.version} if mirror else set())
        split = k8s.Split(generation + 1, weights, mirror, canary, {v: self._prepared[v] for v in sorted(routed)})
        if split.same_traffic(before) and before.digests == split.digests:
            split = before  # nothing to change: no empty commit, the same generation
        else:
            self._commit(split)
        try:
            mark = self.metrics.now()
        except MetricsError:
            mark = None  # verify takes its own mark then
        self._pending = {split.generation: (mark, before if before is not split else None)}
        self._push()
        return Applied(split.generation, dict(weights), mirror, split.header_canary)

    def verify(self, applied: Applied, timeout_s: float) -> float:
        """Seconds until Prometheus shows traffic that fits ``applied`` (and, if it changed,
        rules out the previous split); ServiceError on timeout: the step stays undecided."""
        from promotion.metrics.base import window

        start = time.monotonic()
        mark, before = self._pending.get(applied.generation, (None, None))
        expected = osplit.expected_shares(applied.weights, applied.mirror)
        previous = osplit.expected_shares(before.weights, before.mirror) if before else None
        cfg = self.settings
        baseline = None
        last = f"no scrape after the change (generation {applied.generation})"
        while True:
            try:
                if mark is None:
                    mark = self.metrics.now()
                snap = self.metrics.snapshot()
                if snap.taken_at >= mark:
                    if baseline is None:
                        baseline = snap
                    else:
                        w = window(baseline, snap)
                        counts = {v: c.requests for v, c in w.versions.items()}
                        verdict = osplit.judge_split(counts, expected, previous=previous, alpha=cfg["alpha"],
                                                     min_requests=int(cfg["min_requests"]), stray=cfg["stray_share"])
                        last = f"{verdict.reason} ({osplit.describe(verdict.observed)})"
                        if verdict.state == osplit.MATCHES:
                            return time.monotonic() - start
                        if verdict.state == osplit.CONTRADICTS:
                            baseline = snap  # traffic at other weights: judge only what comes after
            except MetricsError as exc:
                last = f"metrics: {exc.message}"
                baseline = None
            if time.monotonic() - start >= timeout_s:
                want = ", ".join(f"v{v}={w:g}%" for v, w in sorted(applied.weights.items()))
                raise ServiceError(f"{self.where}: {want} (generation {applied.generation}) committed but not "
                                   f"observed in served traffic within {timeout_s:g}s: {last}")
            time.sleep(float(cfg["poll_s"]))

    def current(self) -> Current:
        """The committed split; ``applied`` when the traffic of the last ``lookback_s`` fits it."""
        split = self.committed()
        if split is None:
            raise ServiceError(f"{self.where}: no HTTPRoute committed at {self.route_path} yet")
        return Current(split.generation, dict(split.weights), split.mirror, dict(split.digests),
                       applied=self.observed_fits(split))

    def observed_fits(self, split: k8s.Split) -> bool:
        """Whether the requests of the last ``verify.lookback_s`` fit ``split``; False when
        Prometheus cannot tell (unreachable, too few requests)."""
        query = getattr(self.metrics, "query", None)
        if query is None:
            return False
        selector = getattr(self.metrics, "selector", "")
        promql = (f"sum by (version) (increase(promotion_requests_total{{{selector}}}"
                  f"[{int(self.settings['lookback_s'])}s]))")
        try:
            counts = {int(labels["version"]): value for labels, value in query(promql, self.metrics.now())}
        except (MetricsError, KeyError, ValueError):
            return False
        verdict = osplit.judge_split(counts, osplit.expected_shares(split.weights, split.mirror),
                                     alpha=self.settings["alpha"], min_requests=int(self.settings["min_requests"]),
                                     stray=self.settings["stray_share"])
        return verdict.state == osplit.MATCHES

    def is_online(self) -> bool:
        try:
            return self.git.is_repo() and self.metrics.is_online()
        except GitError:
            return False

    # -- git -----------------------------------------------------------------------------

    def _identity(self) -> list[str]:
        if os.environ.get("GIT_COMMITTER_EMAIL") or self.git("config", "user.email", check=False).strip():
            return []
        return ["-c", "user.name=promotion", "-c", "user.email=promotion@localhost"]

    def _commit(self, split: k8s.Split) -> None:
        files = self.render(split)
        check_manifests_dir(self.root, self.manifests_dir, self.where)
        for rel, text in files.items():
            atomic_write(self.root / rel, text)
        weights = ", ".join(f"v{v}={w:g}%" for v, w in sorted(split.weights.items()))
        shadow = f", mirror v{split.mirror.version} {split.mirror.percent:g}%" if split.mirror else ""
        message = f"traffic {self.spec.env}: {weights}{shadow} (generation {split.generation})"
        try:
            self.git("add", "--", *files)
            # only the manifests: whatever else is staged stays out of this commit
            self.git(*self._identity(), "commit", "-q", "-m", message, "--", *files)
        except GitError as exc:
            raise ServiceError(f"{self.where}: cannot commit {self.route_path}: {exc.message}; "
                               "traffic not changed") from None

    def _ok(self, *args: str) -> bool:
        """Whether ``git args`` succeeds (for the commands whose exit code is the answer)."""
        import subprocess

        return subprocess.run(["git", *args], cwd=self.root, capture_output=True).returncode == 0

    def _push(self) -> None:
        """Push HEAD to ``push.branch``; on a rejection fetch, rebase, push again."""
        if not self.push:
            return
        remote, branch = self.push["remote"], self.push["branch"]
        for _attempt in range(PUSH_ATTEMPTS):
            try:
                self.git("fetch", "-q", remote, f"refs/heads/{branch}")
                if self._ok("merge-base", "--is-ancestor", "HEAD", "FETCH_HEAD"):
                    return  # the remote has every local commit already
                if not self._ok("merge-base", "--is-ancestor", "FETCH_HEAD", "HEAD"):
                    self._rebase(branch)
                # a plain push: a branch that moved meanwhile rejects it, and we go round again
                if self._ok("push", "-q", remote, f"HEAD:refs/heads/{branch}"):
                    return
            except GitError as exc:
                raise ServiceError(f"{self.where}: weights committed locally ({self.git.head()[:12]}) but not "
                                   f"pushed to {remote}/{branch}: {exc.message}") from None
        raise ServiceError(f"{self.where}: {remote}/{branch} kept moving; weights committed locally "
                           f"({self.git.head()[:12]}) but not pushed after {PUSH_ATTEMPTS} attempts")

    def _rebase(self, branch: str) -> None:
        if self._ok("-c", "rebase.autoStash=false", *self._identity(), "rebase", "-q", "FETCH_HEAD"):
            return
        self._ok("rebase", "--abort")
        raise ServiceError(f"{self.where}: local commits conflict with newer commits on {branch} (the route or "
                           f"another file was changed there): weights committed locally ({self.git.head()[:12]}), "
                           "nothing pushed, nothing force-pushed; resolve by hand")


def check_manifests_dir(root: Path, manifests_dir: str | None, where: str) -> Path:
    """``root/manifests_dir`` if it is a plain folder inside the repository that holds no
    file the promotion trusts; ServiceError otherwise (nothing is written)."""
    parts = (manifests_dir or "").split("/")
    if not manifests_dir or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ServiceError(f"{where}: manifests_dir {manifests_dir!r} must be a relative folder without '.' segments")
    if parts[0] in RESERVED_DIRS:
        raise ServiceError(f"{where}: manifests_dir {manifests_dir!r} is inside {parts[0]}/, which the promotion "
                           "itself trusts; name a folder of its own")
    path = root
    for p in parts:
        path = path / p
        if path.is_symlink():
            raise ServiceError(f"{where}: manifests_dir {manifests_dir!r}: {p} is a symbolic link; refused")
    return path

