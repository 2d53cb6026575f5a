"""The whole promotion cycle on embedded defaults, in a scratch workspace.

It trains three versions of the example fraud model, puts v1 in staging and prod, then
takes v2 through pull-request gates (first blocked for missing approvals), a staged
canary in staging and prod, and a signed promotion; then v3, which passes every offline
gate but is far slower per request, and is rolled back automatically by the prod canary.
It ends with the audit trail read back from git, every record verified.

Everything is real: an MLflow sqlite registry, two ``bentoml serve`` services with two
workers each, git commits and ed25519-signed in-toto records. Only GitHub is absent:
pull requests are branches merged locally, and approvals come from a local source that
says it is not for production.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "services.fraud"  # the example model the story trains (a module path, not an import)
DEMO_OVERRIDES = {
    # the demo's traffic is a few hundred requests a second; holds are shortened to match
    "staging": {"steps": "    - {weight: 100, hold_s: 3, min_requests: 100, max_s: 60}\n"},
    "prod": {"steps": "    - {weight: 5, hold_s: 3, min_requests: 60, max_s: 60}\n"
                      "    - {weight: 25, hold_s: 3, min_requests: 150, max_s: 60}\n"
                      "    - {weight: 100, hold_s: 2, min_requests: 100, max_s: 60}\n"},
}


class Story:
    """Prints the demo's story: numbered chapters and indented detail."""

    def __init__(self, out=sys.stdout) -> None:
        self.out, self.t0, self.n = out, time.monotonic(), 0

    def chapter(self, title: str) -> None:
        self.n += 1
        print(f"\n[{time.monotonic() - self.t0:6.1f}s] {self.n}. {title}", file=self.out, flush=True)

    def say(self, text: str) -> None:
        for line in text.rstrip().splitlines():
            print(f"           {line}", file=self.out, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(ws: Path, *args: str) -> str:
    from promotion._internal.git import Git

    return Git(ws)(*args)


def _cli(*argv: str) -> int:
    from promotion.cli import main

    return main(list(argv))


def prepare_workspace(ws: Path, ports: dict[str, int], window: Path,
                      blocks: dict[str, dict] | None = None,
                      analysis: dict[str, dict[str, str]] | None = None) -> None:
    """Copy the repository's config into ``ws``, point it at local ports, init git.

    ``blocks`` replaces top-level blocks of an environment file (``{"prod": {"serving":
    {...}, "metrics": {...}}}``): the scale-out topology serves prod through Envoy.
    ``analysis`` replaces settings of a policy's ``analysis:`` block, each line with its
    comment (``{"prod": {"latency_min_added_ms": "10  # why"}}``).
    """
    import yaml

    (ws / "environments").mkdir(parents=True)
    (ws / "policies").mkdir()
    for env in ("dev", "staging", "prod"):
        text = (REPO_ROOT / "environments" / f"{env}.yaml").read_text()
        if env in ports:
            text = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{ports[env]}", text)
        if blocks and env in blocks:
            doc = {**yaml.safe_load(text), **blocks[env]}
            text = f"# Desired state of the {env} environment (scale-out demo).\n" + yaml.safe_dump(doc, sort_keys=False)
        text += f"\ndrift:\n  production_window: {window}\n"
        (ws / "environments" / f"{env}.yaml").write_text(text)
    for env in ("dev", "staging", "prod"):
        text = (REPO_ROOT / "policies" / f"{env}.yaml").read_text()
        override = DEMO_OVERRIDES.get(env)
        if override:
            head, rest = text.split("  steps:\n", 1)
            tail = rest[rest.index("  interval_s"):] if "  interval_s" in rest else ""
            text = head + "  steps:\n" + override["steps"] + tail
        for key, value in ((analysis or {}).get(env) or {}).items():
            text, n = re.subn(rf"(?m)^  {re.escape(key)}: .*$", lambda _: f"  {key}: {value}", text)
            if n != 1:
                raise ValueError(f"policies/{env}.yaml: analysis.{key} is on {n} lines, not one")
        if env == "staging":
            # the demo has no dev service: staging takes versions straight from the registry
            text = text.replace("  requires_record_from: dev", "  requires_record_from: null").replace(
                "promotion_path:\n  requires_record_from: null", "promotion_path: {}")
        (ws / "policies" / f"{env}.yaml").write_text(text)
    gh = REPO_ROOT / ".github" / "CODEOWNERS"
    if gh.is_file():
        (ws / ".github").mkdir()
        shutil.copy(gh, ws / ".github" / "CODEOWNERS")
    (ws / ".gitignore").write_text(".promotion/\ndata/\n")
    _git(ws, "init", "-q", "-b", "main")
    _git(ws, "config", "user.name", "Promotion Demo")
    _git(ws, "config", "user.email", "demo@promotion.invalid")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-q", "-m", "Start a promotion repository")


def run_demo(workspace: str | None = None, keep: bool = True, topology: str = "local") -> int:
    """Run the demo; returns 0 when the story ended as it should.

    ``topology``: ``local`` (two BentoML routers, the embedded sqlite registry) or
    ``envoy`` (:mod:`promotion.demo_envoy`: prod behind Envoy with two replicas per
    version, MLflow on PostgreSQL with S3 artifacts, Prometheus).
    """
    story = Story()
    ws = Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="promotion-demo-"))
    ws = ws.resolve()
    if (ws / "environments").exists():
        print(f"error: {ws} already holds a promotion repository; pick an empty folder", file=sys.stderr)
        return 2
    ws.mkdir(parents=True, exist_ok=True)
    os.environ.update({
        "PROMOTION_ROOT": str(ws), "PROMOTION_STATE": str(ws / ".promotion"),
        "PROMOTION_ADMIN_TOKEN": secrets.token_hex(16), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "GIT_AUTHOR_NAME": "Promotion Demo", "GIT_COMMITTER_NAME": "Promotion Demo",
        "GIT_AUTHOR_EMAIL": "demo@promotion.invalid", "GIT_COMMITTER_EMAIL": "demo@promotion.invalid",
    })
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # embedded defaults, whatever the shell says
    os.environ.pop("GITHUB_ACTIONS", None)
    _quiet_logs()
    story.chapter(f"Workspace {ws} (a scratch git repository; your checkout is not touched)")
    services, load = [], []  # everything started, stopped in reverse order whatever happens
    if topology == "envoy":
        from promotion.demo_envoy import scale_out_story as run_story
    else:
        run_story = _story
    try:
        return run_story(story, ws, services, load)
    finally:
        _stop_everything(story, services, load)
        story.say(f"\nworkspace kept at {ws}: `git -C {ws} log --stat` shows the audit trail")


def _stop_everything(story: Story, services: list, load: list) -> None:
    """Stop the load, then every server, last started first. A second Ctrl-C while this runs
    is ignored: leaving servers behind would be worse than the few seconds it takes."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        for l in load:
            l.stop()
        for s in reversed(services):
            try:
                s.stop()
            except Exception as exc:  # stop the others all the same
                story.say(f"could not stop {type(s).__name__}: {exc}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quiet_logs() -> None:
    """MLflow logs every table migration and registration at INFO; the story says it better."""
    import logging
    import warnings

    import mlflow  # noqa: F401 - it configures its loggers on import; quieten them after

    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "urllib3", "bentoml"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _story(story: Story, ws: Path, services: list, load: list) -> int:
    from promotion.contract.launch import start_service
    from promotion.registry import Registry

    # The demo tells the example model's story, so it loads the example by name from the
    # checkout; the package itself never imports services/ (see promotion/contract).
    data = importlib.import_module(EXAMPLE + ".data")

    ports = {"staging": _free_port(), "prod": _free_port()}
    window_path = ws / "data" / "production-window.parquet"
    production = production_window(window_path)
    prepare_workspace(ws, ports, window_path)
    story.say(f"environments/ and policies/ copied; staging serves on :{ports['staging']}, prod on :{ports['prod']}")

    story.chapter("Train three versions and register them in MLflow (sqlite, aliases)")
    registry = Registry.for_root(ws)
    versions = train_versions(story, registry)
    story.say(f"registry: {registry.uri}")

    story.chapter("Start the BentoML router for staging and prod (2 workers each)")
    for env in ("staging", "prod"):
        services.append(start_service(
            port=ports[env], state_dir=ws / ".promotion" / "service" / env, tracking_uri=registry.uri,
            token=os.environ["PROMOTION_ADMIN_TOKEN"], workers=2, wait=False))
    for svc in services:
        svc.wait_up(timeout_s=120, ready=False)
    story.say("both services up; no model is routed yet")

    rows = production[list(data.FEATURES)].head(4000).to_dict("records")
    if tell_story(story, ws, versions, rows, load, {env: f"http://127.0.0.1:{p}" for env, p in ports.items()}) != 0:
        return 1
    story.chapter("The audit trail, replayed from git with every signature and chain link verified")
    rc = _cli("audit", "prod")
    return 0 if rc == 0 else 1


def production_window(path: Path):
    """Write the production window the drift gate reads (features only) to ``path``; returns
    the frame, labels included."""
    data = importlib.import_module(EXAMPLE + ".data")
    path.parent.mkdir(parents=True, exist_ok=True)
    production = data.generate(20_000, seed=2024)
    production.drop(columns=[data.LABEL]).to_parquet(path, index=False)
    return production


def train_versions(story: Story, registry) -> dict:
    """Train v1, v2 and v3 of the example model and register them; ``{"v1": ModelVersion, ...}``."""
    train = importlib.import_module(EXAMPLE + ".train")
    versions = {}
    for key in ("v1", "v2", "v3"):
        t = time.monotonic()
        # MLflow's "Successfully registered ..." lines, and its "View run at" links to a tracking server
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            mv = train.register(registry, train.SPECS[key])
        versions[key] = mv
        m = mv.metrics
        story.say(f"v{mv.version} ({train.SPECS[key].description}): recall {m['recall']:.3f}  FPR {m['fpr']:.4f}  "
                  f"F1 {m['f1']:.4f}  AUC {m['auc']:.4f}  p95 {m['latency_p95_ms']:.2f} ms  "
                  f"[{time.monotonic() - t:.1f}s]")
    return versions


def tell_story(story: Story, ws: Path, versions: dict, rows: list[dict], load: list,
               endpoints: dict[str, str], rates: tuple[int, int] = (250, 80)) -> int:
    """v1 into staging and prod, then v2 promoted and v3 rolled back, under live traffic sent
    to ``endpoints`` (``{"staging": url, "prod": url}``, ``rates`` req/s to prod and
    staging); 0 when it ended as it should."""
    from promotion._internal.envfile import set_model
    from promotion._internal.loadgen import Load

    story.chapter("Bootstrap: v1 into staging, then prod")
    v1 = versions["v1"]
    for env in ("staging", "prod"):
        set_model(ws / "environments" / f"{env}.yaml", v1.version, v1.digest)
    _git(ws, "commit", "-qam", f"Deploy {v1.name} v{v1.version} to staging and prod")
    for env in ("staging", "prod"):
        _approve(env, ["alice", "bob"])
        if _cli("rollout", env) != 0:
            story.say(f"bootstrap of {env} failed")
            return 1
    load.append(Load(endpoints["prod"], rows, rate=rates[0], threads=4).start())
    load.append(Load(endpoints["staging"], rows, rate=rates[1], threads=2).start())
    story.say(f"traffic: {rates[0]} req/s to prod, {rates[1]} req/s to staging "
              "(production-like rows, a customer id per request)")

    for key, expect in (("v2", "promoted"), ("v3", "rolled_back")):
        mv = versions[key]
        for env in ("staging", "prod"):
            story.chapter(f"Promote v{mv.version} to {env}: pull request, gates, merge, canary")
            outcome = _promote(story, ws, env, mv.version, show_block=(key == "v2" and env == "prod"))
            want = "promoted" if env == "staging" else expect
            if outcome != want:
                story.say(f"unexpected: {env} rollout of v{mv.version} ended {outcome}, expected {want}")
                return 1

    story.chapter("Traffic totals as clients saw them")
    for l, env in zip(load, ("prod", "staging")):
        l.stop()
        t = l.totals()
        why = f" ({', '.join(f'{k} x{n}' for k, n in sorted(t['failures'].items()))})" if t["failed"] else ""
        story.say(f"{env}: served by version {t['served']}, failed {t['failed']}{why}")
    load.clear()
    return 0


def _approve(env: str, reviewers: list[str]) -> None:
    """Local approvals of the version the environment file proposes (not for production)."""
    for who in reviewers:
        _cli("approve", env, "--by", who)


def _promote(story: Story, ws: Path, env: str, version: int, show_block: bool) -> str:
    """PR -> gates -> merge -> rollout; returns the rollout's final phase."""
    import json

    from promotion.rollout.state import StateStore

    _cli("propose", env, "--version", str(version))
    branch = _git(ws, "rev-parse", "--abbrev-ref", "HEAD").strip()
    if show_block:
        story.say("gates before any review:")
        rc = _cli("gate", env)
        story.say(f"-> exit {rc}: blocked, as it must be without approvals")
    _approve(env, ["alice", "bob"] if env == "prod" else ["alice"])
    rc = _cli("gate", env)
    if rc != 0:
        story.say(f"gates blocked v{version} for {env} (exit {rc})")
        return "blocked"
    _git(ws, "checkout", "-q", "main")
    _git(ws, "merge", "-q", "--no-ff", branch, "-m", f"Merge {branch}: promote {env} to v{version}")
    story.say(f"merged {branch} into main")
    _cli("rollout", env)
    state = StateStore(ws, env).load()
    return state.phase.value if state else "up_to_date"


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C, so that everything started is
    stopped by the ``finally`` of :func:`run_demo` rather than left running."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def main(workspace: str | None = None, topology: str = "local") -> int:
    """``promotion demo``: 0 when the story ended as it should, 130 when interrupted."""
    _interrupt_on_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        return run_demo(workspace, topology=topology)
    _ignore_late_signals()
    return 130


def _ignore_late_signals() -> None:
    """Interrupted, and everything it started already stopped: a signal that arrives now
    (a second Ctrl-C, a child's SIGINT to the process group as it is torn down) must not
    turn the exit code 130 into death by signal."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
