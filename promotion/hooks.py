"""Lifecycle hooks of a rollout: an HTTP call (2xx passes) or a command (exit 0 passes).

The policy names them by stage (``hooks.pre_rollout``, ``hooks.during_step``,
``hooks.post_promotion``), each with its own timeout::

    hooks:
      pre_rollout:
        - name: smoke
          timeout_s: 30
          http: {path: /predict, canary: true, method: POST, requests: 20,
                 body: {features: {amount: 12.5}}}
      during_step:
        - {name: load, timeout_s: 120, command: ["./scripts/load.sh"], env: [PROMOTION_HOOK_LOAD_KEY]}

A hook that cannot decide (timeout, unreachable, killed) fails; a result is what the
record keeps: verdict, status or exit code, a digest and size of the output, duration.

What a hook may reach is bounded, because a policy is a file in the repository:

- a ``canary: true`` HTTP hook goes to the environment's own endpoint (``path`` only),
  pinned to the canary with the router's admin token, so the token never leaves for a
  host the policy names; a ``url`` hook gets only static headers and ``headers_env``
  values from ``PROMOTION_HOOK_*`` variables; redirects are not followed;
- a command runs without a shell, from the repository root, in a new process group (the
  whole group is killed at its timeout), with a minimal environment: ``PATH``, ``LANG``,
  a fresh ``HOME``, its context (``PROMOTION_HOOK_ENVIRONMENT``, ``..._VERSION``, ...)
  and only the ``PROMOTION_HOOK_*`` variables the policy lists in ``env``;
- output is read up to :data:`OUTPUT_MAX` bytes (the rest is counted and hashed, not kept).

Usage::

    from promotion.hooks import run_hook
    result = run_hook(hook, HookContext(env="prod", endpoint=..., version=7, ...))
    result.passed, result.to_dict()
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from promotion.errors import ConfigError

STAGES = ("pre_rollout", "during_step", "post_promotion")
OUTPUT_MAX = 64 * 1024  # bytes of a hook's output kept to show; all of it is hashed
SHOWN_MAX = 300  # characters of output quoted in a failure's message
_BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Hook:
    """One hook of the policy, validated."""

    stage: str
    name: str
    timeout_s: float
    http: dict | None = field(default=None, hash=False)
    command: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    line: int = 0

    @property
    def kind(self) -> str:
        return "http" if self.http is not None else "command"


@dataclass(frozen=True)
class HookContext:
    """What a hook is told about the rollout it belongs to."""

    env: str
    model: str
    version: int
    champion: int | None
    endpoint: str
    root: Path
    admin_token: str | None = None
    step: int | None = None
    weight: float | None = None


@dataclass
class HookResult:
    """What one run of a hook found; ``to_dict`` is the record's form."""

    stage: str
    name: str
    kind: str
    verdict: str  # "pass" or "fail"
    seconds: float
    message: str
    output_sha256: str
    output_bytes: int
    status: int | None = None  # HTTP status (of the first request that failed, or the last)
    exit_code: int | None = None
    requests: int | None = None
    step: int | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def hooks_of(doc) -> dict[str, tuple[Hook, ...]]:
    """The ``hooks:`` section of a loaded policy document, typed; ConfigError for what the
    schema cannot say (exactly one of http/command, path xor url, canary needs path)."""
    from promotion.config import url_problem

    out: dict[str, tuple[Hook, ...]] = {}
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for stage in STAGES:
        items = []
        for i, item in enumerate((doc.data.get("hooks") or {}).get(stage) or ()):
            at = ("hooks", stage, i)
            http, command = item.get("http"), item.get("command")
            if (http is None) == (command is None):
                problems.append(f"{doc.where(at)}: needs exactly one of http, command")
                continue
            if (stage, item["name"]) in seen:
                problems.append(f"{doc.where(at + ('name',))}: {item['name']!r} is used twice in {stage}")
            seen.add((stage, item["name"]))
            if http is not None:
                if ("path" in http) == ("url" in http):
                    problems.append(f"{doc.where(at + ('http',))}: needs exactly one of path (the environment's "
                                    "endpoint), url")
                    continue
                if http.get("canary") and "url" in http:
                    problems.append(f"{doc.where(at + ('http', 'canary'))}: a canary-pinned call carries the admin "
                                    "token, so it goes to the environment's endpoint only: use path")
                if "url" in http and url_problem(http["url"]):
                    problems.append(f"{doc.where(at + ('http', 'url'))}: {url_problem(http['url'])}")
                if item.get("env"):
                    problems.append(f"{doc.where(at + ('env',))}: only a command takes env; an HTTP hook names its "
                                    "secrets in http.headers_env")
            items.append(Hook(stage=stage, name=item["name"], timeout_s=float(item["timeout_s"]),
                              http=dict(http) if http is not None else None,
                              command=tuple(command) if command is not None else None,
                              env=tuple(item.get("env") or ()), line=doc.line_of(at)))
        if items:
            out[stage] = tuple(items)
    if problems:
        raise ConfigError(problems)
    return out


def run_hook(hook: Hook, ctx: HookContext) -> HookResult:
    """Run ``hook`` once, within its timeout; never raises for anything the hook does."""
    start = time.monotonic()
    try:
        result = _http(hook, ctx, start) if hook.http is not None else _command(hook, ctx, start)
    except Exception as exc:  # noqa: BLE001 - a hook that cannot decide fails, in one line
        result = _result(hook, ctx, start, "fail", f"cannot run: {type(exc).__name__}: {exc}", b"", 0)
    return result


def _result(hook: Hook, ctx: HookContext, start: float, verdict: str, message: str, digest_of, size: int,
            **extra) -> HookResult:
    digest = digest_of if isinstance(digest_of, str) else hashlib.sha256(digest_of).hexdigest()
    return HookResult(stage=hook.stage, name=hook.name, kind=hook.kind, verdict=verdict,
                      seconds=round(time.monotonic() - start, 3), message=_clip(message),
                      output_sha256="sha256:" + digest, output_bytes=size, step=ctx.step, **extra)


def _clip(text: str, limit: int = SHOWN_MAX) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- HTTP ---------------------------------------------------------------------------------------


def _http(hook: Hook, ctx: HookContext, start: float) -> HookResult:
    import requests

    from promotion.contract.routing import PIN_HEADER

    spec = hook.http
    url = ctx.endpoint.rstrip("/") + spec["path"] if "path" in spec else spec["url"]
    headers = {"User-Agent": "promotion-hook", **(spec.get("headers") or {})}
    for header, var in (spec.get("headers_env") or {}).items():
        value = os.environ.get(var)
        if not value:
            return _result(hook, ctx, start, "fail", f"{var} (for header {header}) is not set", b"", 0)
        headers[header] = value
    if spec.get("canary"):
        if not ctx.admin_token:
            return _result(hook, ctx, start, "fail", "a canary-pinned call needs the environment's admin token, "
                           "which is not set", b"", 0)
        headers[PIN_HEADER] = str(ctx.version)
        headers["Authorization"] = f"Bearer {ctx.admin_token}"
    method = spec.get("method", "POST" if "body" in spec else "GET")
    count = int(spec.get("requests", 1))
    deadline = start + hook.timeout_s
    hasher, size, status, shown = hashlib.sha256(), 0, None, ""
    session = requests.Session()
    session.trust_env = False  # no proxy or .netrc credentials from the runner
    for i in range(count):
        left = deadline - time.monotonic()
        if left <= 0:
            return _result(hook, ctx, start, "fail", f"timed out after {hook.timeout_s:g}s ({i} of {count} "
                           "requests answered)", hasher.hexdigest(), size, status=status, requests=i)
        try:
            with session.request(method, url, json=spec.get("body"), headers=headers, timeout=min(left, 30.0),
                                 allow_redirects=False, stream=True) as r:
                status = r.status_code
                body = r.raw.read(OUTPUT_MAX, decode_content=True) or b""
        except requests.RequestException as exc:
            return _result(hook, ctx, start, "fail", f"{method} {_shown_url(url)}: {type(exc).__name__} "
                           f"(request {i + 1} of {count})", hasher.hexdigest(), size, status=status, requests=i)
        hasher.update(body)
        size += len(body)
        if not 200 <= status < 300:
            shown = body[:SHOWN_MAX].decode("utf-8", "replace")
            return _result(hook, ctx, start, "fail", f"{method} {_shown_url(url)} answered {status} on request "
                           f"{i + 1} of {count}: {shown}", hasher.hexdigest(), size, status=status, requests=i + 1)
    return _result(hook, ctx, start, "pass", f"{count} {method} request(s) to {_shown_url(url)} answered 2xx",
                   hasher.hexdigest(), size, status=status, requests=count)


def _shown_url(url: str) -> str:
    """The URL without its query (which may carry a key)."""
    return url.split("?", 1)[0]


# -- commands -----------------------------------------------------------------------------------


def hook_environment(hook: Hook, ctx: HookContext, home: str) -> dict[str, str]:
    """The whole environment of a command hook: nothing of the runner's but ``PATH``, and
    the ``PROMOTION_HOOK_*`` variables the policy names."""
    env = {"PATH": os.environ.get("PATH") or _BASE_PATH, "LANG": "C.UTF-8", "HOME": home,
           "PROMOTION_HOOK_STAGE": hook.stage, "PROMOTION_HOOK_NAME": hook.name,
           "PROMOTION_HOOK_ENVIRONMENT": ctx.env, "PROMOTION_HOOK_MODEL": ctx.model,
           "PROMOTION_HOOK_VERSION": str(ctx.version),
           "PROMOTION_HOOK_CHAMPION": "" if ctx.champion is None else str(ctx.champion),
           "PROMOTION_HOOK_ENDPOINT": ctx.endpoint}
    if ctx.step is not None:
        env["PROMOTION_HOOK_STEP"] = str(ctx.step + 1)
        env["PROMOTION_HOOK_WEIGHT"] = f"{ctx.weight:g}" if ctx.weight is not None else ""
    for name in hook.env:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _command(hook: Hook, ctx: HookContext, start: float) -> HookResult:
    argv = list(hook.command)
    with tempfile.TemporaryDirectory(prefix="promotion-hook-") as home:
        try:
            proc = subprocess.Popen(argv, cwd=ctx.root, env=hook_environment(hook, ctx, home), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            return _result(hook, ctx, start, "fail", f"cannot start {argv[0]!r}: {exc.strerror or exc}", b"", 0)
        reader = _Reader(proc.stdout)
        timed_out = False
        try:
            proc.wait(timeout=hook.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # the whole group: a child it left behind must not outlive its hook
            _kill_group(proc.pid)
            proc.wait()
            reader.join(2.0)
        out = reader.kept.decode("utf-8", "replace")
        tail = out[-SHOWN_MAX:]
        if timed_out:
            return _result(hook, ctx, start, "fail", f"timed out after {hook.timeout_s:g}s (killed): {tail}",
                           reader.hasher.hexdigest(), reader.size)
        code = proc.returncode
        verdict = "pass" if code == 0 else "fail"
        how = "exited 0" if code == 0 else (f"killed by signal {-code}" if code < 0 else f"exited {code}")
        return _result(hook, ctx, start, verdict, f"{how}: {tail}" if tail.strip() else how,
                       reader.hasher.hexdigest(), reader.size, exit_code=code)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Reader(threading.Thread):
    """Drains a pipe: hashes everything, keeps the first :data:`OUTPUT_MAX` bytes."""

    def __init__(self, pipe) -> None:
        super().__init__(daemon=True)
        self.pipe, self.hasher, self.size, self.kept = pipe, hashlib.sha256(), 0, b""
        self.start()

    def run(self) -> None:
        try:
            while chunk := self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536):
                self.hasher.update(chunk)
                self.size += len(chunk)
                if len(self.kept) < OUTPUT_MAX:
                    self.kept += chunk[:OUTPUT_MAX - len(self.kept)]
        except (OSError, ValueError):
            pass
        finally:
            try:
                self.pipe.close()
            except OSError:
                pass
